"""db/inserts.py: a new ORM object's row written with a Core INSERT holds what the
unit of work's flush would have written (the values given, the columns' defaults for
the others, JSON and dates as the types store them), and the object stays out of the
session."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import inspect, select

from gristmill_platform.db.engine import create_engine, create_session_factory
from gristmill_platform.db.inserts import column_values, insert_row
from gristmill_platform.db.models.auth import SdkToken, User
from gristmill_platform.db.models.executions import Execution


def test_only_the_given_values_are_taken() -> None:
    token = SdkToken(id="t-1", user_id="u-1", secret_hash="h")
    assert column_values(token) == {"id": "t-1", "user_id": "u-1", "secret_hash": "h"}


def test_an_inserted_row_is_the_flushed_one(own_database_url: str) -> None:
    at = datetime(2026, 12, 7, 8, 9, 10, 123456, tzinfo=UTC)

    async def scenario() -> None:
        engine = create_engine(own_database_url)
        factory = create_session_factory(engine)
        try:
            async with factory() as session, session.begin():
                session.add(User(id="u-ins", name="u", email="u-ins@example.com"))
            async with factory() as session, session.begin():
                inserted = SdkToken(id="t-ins", user_id="u-ins", secret_hash="h",
                                    execution_id="e-ins", created_at=at)
                await insert_row(session, inserted)
                execution = Execution(
                    id="e-ins", pipeline_name="p", step_name="s", execution_rule="run",
                    status="pending", inputs=[{"v": {"nested": [1, 2.5, None]}}],
                    outputs=[], created_by="u-ins", created_at=at)
                await insert_row(session, execution)
                assert inspect(inserted).transient and inspect(execution).transient
                assert not session.new
                flushed = SdkToken(id="t-flush", user_id="u-ins", secret_hash="h",
                                   execution_id="e-ins", created_at=at)
                session.add(flushed)
            async with factory() as session:
                tokens = {t.id: t for t in (await session.execute(
                    select(SdkToken).where(SdkToken.user_id == "u-ins"))).scalars()}
                row = await session.get(Execution, "e-ins")
            columns = [c.key for c in inspect(SdkToken).mapper.column_attrs if c.key != "id"]
            assert ({c: getattr(tokens["t-ins"], c) for c in columns}
                    == {c: getattr(tokens["t-flush"], c) for c in columns})
            assert tokens["t-ins"].scope == "user" and tokens["t-ins"].name == ""
            assert row is not None and row.inputs == [{"v": {"nested": [1, 2.5, None]}}]
            assert row.created_at == at
        finally:
            await engine.dispose()

    asyncio.run(scenario())
