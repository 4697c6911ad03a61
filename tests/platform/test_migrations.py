from __future__ import annotations

import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from gristmill_platform.db import migrate
from gristmill_platform.db.base import Base
from gristmill_platform.db.models import load_all_models
from gristmill_platform.db.urls import sync_url
from tests.conftest import _create_postgres_database, _drop_postgres_database, _postgres_admin_url


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / f'{uuid.uuid4().hex}.sqlite3'}"
        return
    admin = _postgres_admin_url()
    if admin is None:
        pytest.skip("PostgreSQL not reachable; PostgreSQL variant skipped")
    name, url = _create_postgres_database(admin)
    try:
        yield url
    finally:
        _drop_postgres_database(admin, name)


def test_upgrade_downgrade_upgrade(empty_database: str) -> None:
    migrate.upgrade(empty_database)
    engine = create_engine(sync_url(empty_database))
    assert {"users", "sdk_tokens", "environment_variables", "datastore_objects"} <= set(
        inspect(engine).get_table_names())
    migrate.downgrade(empty_database, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    migrate.upgrade(empty_database)
    migrate.upgrade(empty_database)  # idempotent
    engine.dispose()


def test_models_and_migrations_agree(empty_database: str) -> None:
    """A model change without its migration fails here."""
    load_all_models()
    migrate.upgrade(empty_database)
    engine = create_engine(sync_url(empty_database))
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert diff == []
