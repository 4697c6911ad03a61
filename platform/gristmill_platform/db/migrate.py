"""Run Alembic migrations programmatically: the only way the schema changes."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

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
