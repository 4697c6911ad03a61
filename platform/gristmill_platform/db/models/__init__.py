"""ORM tables, one module per domain."""

from __future__ import annotations


def load_all_models() -> None:
    """Import every model module so Base.metadata knows all tables (for Alembic)."""
    from gristmill_platform.db.models import (  # noqa: F401
        auth,
        console,
        datastore,
        deployments,
        env_vars,
        executions,
        resources,
        steps,
    )
