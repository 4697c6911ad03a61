"""Run Alembic migrations programmatically: the only way the schema changes."""

from __future__ import annotations

from dataclasses import dataclass

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from gristmill_platform.db.urls import sync_url


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", "gristmill_platform.db:migrations")
    # ConfigParser interpolation would choke on a '%' in a password.
    rendered = sync_url(database_url).render_as_string(hide_password=False)
    cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


@dataclass(frozen=True)
class PendingMigration:
    revision: str
    description: str


def current_revision(database_url: str) -> str | None:
    engine = create_engine(sync_url(database_url))
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def pending(database_url: str) -> list[PendingMigration]:
    """The migrations `upgrade` would apply, oldest first; nothing is written."""
    script = ScriptDirectory.from_config(alembic_config(database_url))
    current = current_revision(database_url)
    steps = list(script.iterate_revisions("heads", current))
    steps.reverse()
    return [PendingMigration(s.revision, (s.doc or "").strip()) for s in steps
            if s.revision != current]
