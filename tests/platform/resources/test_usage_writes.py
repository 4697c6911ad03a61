"""The workers' resource usage reaches their executions' rows in batches (UsageWrites):
one transaction for every worker that ended within the delay, each row its own usage,
nothing lost when a write fails or the service stops. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gristmill_platform.db.engine import create_engine, create_session_factory
from gristmill_platform.db.models.executions import Execution
from gristmill_platform.db.transactions import Transactions
from gristmill_platform.executions.repository import ExecutionRepository
from gristmill_platform.resources import usage as usage_module
from gristmill_platform.resources.usage import UsageWrites


@pytest.fixture
async def engine(own_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(own_database_url)
    yield engine
    await engine.dispose()


async def add_executions(transactions: Transactions, *ids: str) -> None:
    async with transactions() as session:
        session.add_all(Execution(id=i, pipeline_name="p", step_name="s") for i in ids)


async def usages(engine: AsyncEngine, *ids: str) -> dict[str, Any]:
    table = Execution.__table__
    async with engine.connect() as connection:
        rows = await connection.execute(select(table.c.id, table.c.resource_usage)
                                        .where(table.c.id.in_(ids)))
        return {row.id: row.resource_usage for row in rows}


def usage(cpu_s: float) -> dict[str, Any]:
    return {"cpu_time_s": cpu_s, "peak_memory_bytes": 1024, "gpu_memory_bytes": None}


async def wait_until_written(writes: UsageWrites) -> None:
    for _ in range(200):
        if writes.pending == 0:
            await asyncio.sleep(0.05)  # the write in flight commits
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{writes.pending} usage(s) still pending")


async def test_usages_of_workers_ending_together_are_one_transaction(
        engine: AsyncEngine) -> None:
    transactions = Transactions(create_session_factory(engine))
    ids = [f"e-batch-{n}" for n in range(5)]
    await add_executions(transactions, *ids)
    commits: list[object] = []

    def committed(connection: object) -> None:
        commits.append(connection)

    event.listen(engine.sync_engine, "commit", committed)
    writes = UsageWrites(transactions, delay_s=0.1)
    try:
        for n, execution_id in enumerate(ids):
            await writes.record(execution_id, usage(n + 0.5))
        # a deleted execution matches no row: the others are written all the same
        await writes.record("e-batch-deleted", usage(9.0))
        await wait_until_written(writes)
    finally:
        event.remove(engine.sync_engine, "commit", committed)
        await writes.close()
    assert len(commits) == 1
    assert await usages(engine, *ids) == {i: usage(n + 0.5) for n, i in enumerate(ids)}


async def test_a_failed_write_is_tried_again_with_nothing_lost(
        engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(usage_module, "RETRY_S", 0.05)
    transactions = Transactions(create_session_factory(engine))
    await add_executions(transactions, "e-retry-1", "e-retry-2")
    failures = [RuntimeError("database unavailable")]

    async def barrier() -> None:
        if failures:
            raise failures.pop()

    transactions.barrier = barrier
    writes = UsageWrites(transactions, delay_s=0.05)
    try:
        await writes.record("e-retry-1", usage(1.0))
        await writes.record("e-retry-2", usage(2.0))
        await wait_until_written(writes)
    finally:
        await writes.close()
    assert not failures
    assert "could not record the resource usage of 2 execution(s)" in caplog.text
    assert await usages(engine, "e-retry-1", "e-retry-2") == {
        "e-retry-1": usage(1.0), "e-retry-2": usage(2.0)}


async def test_closing_writes_what_is_pending(engine: AsyncEngine) -> None:
    transactions = Transactions(create_session_factory(engine))
    await add_executions(transactions, "e-close")
    writes = UsageWrites(transactions, delay_s=3600)
    await writes.record("e-close", usage(3.0))
    assert await usages(engine, "e-close") == {"e-close": None}
    await writes.close()
    assert writes.pending == 0
    assert await usages(engine, "e-close") == {"e-close": usage(3.0)}


async def test_a_later_usage_of_the_same_execution_replaces_the_pending_one(
        engine: AsyncEngine) -> None:
    transactions = Transactions(create_session_factory(engine))
    await add_executions(transactions, "e-twice")
    writes = UsageWrites(transactions, delay_s=3600)
    await writes.record("e-twice", usage(1.0))
    await writes.record("e-twice", usage(2.0))
    assert writes.pending == 1
    await writes.close()
    assert await usages(engine, "e-twice") == {"e-twice": usage(2.0)}


async def test_column_writes_refuse_what_is_not_a_column(engine: AsyncEngine) -> None:
    """The UPDATE takes its SET clause from its parameters' names, and would ignore one
    that names no column: refused instead."""
    factory = create_session_factory(engine)
    async with factory() as session, session.begin():
        repository = ExecutionRepository(session)
        with pytest.raises(ValueError, match="not columns of executions"):
            await repository.set_columns("e-x", wroker="local-1")
        with pytest.raises(ValueError, match="not columns of executions"):
            await repository.set_columns("e-x")
        with pytest.raises(ValueError, match="the same columns"):
            await repository.set_many({"e-x": {"worker": "a"}, "e-y": {"handle": {}}})
        with pytest.raises(ValueError, match="the same columns"):
            await repository.set_many({"e-x": {"wroker": "a"}})
        with pytest.raises(ValueError, match="the same columns"):
            await repository.set_many({"e-x": {}})


async def test_a_write_stopped_midway_by_close_is_written_by_close(engine: AsyncEngine) -> None:
    transactions = Transactions(create_session_factory(engine))
    await add_executions(transactions, "e-midway")
    entered, release = asyncio.Event(), asyncio.Event()

    async def barrier() -> None:
        if not release.is_set():  # the batch's transaction waits here until closed
            entered.set()
            await asyncio.sleep(3600)

    transactions.barrier = barrier
    writes = UsageWrites(transactions, delay_s=0.01)
    await writes.record("e-midway", usage(4.0))
    await asyncio.wait_for(entered.wait(), 10)
    assert writes.pending == 0  # taken by the write in flight
    release.set()
    await writes.close()
    assert await usages(engine, "e-midway") == {"e-midway": usage(4.0)}
