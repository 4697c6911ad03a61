"""Alembic environment: sync engine from the configured URL, models' metadata as target."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

from gristmill_platform.db.base import Base
from gristmill_platform.db.models import load_all_models

load_all_models()
config = context.config
target_metadata = Base.metadata


def run_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        # batch mode lets ALTER-style migrations work on SQLite too
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # two control service replicas starting together must not both migrate
                connection.execute(text("SELECT pg_advisory_xact_lock(7274551)"))
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
