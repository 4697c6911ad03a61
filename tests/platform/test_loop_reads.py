"""Transactions.read on SQLite runs its query on the calling thread, on a read-only
connection of its own (db/loop_reads.py), never waiting there: a lock held elsewhere, a
query past its budget, or any error gives the query back to the async engine, which
does it as before (and raises the real error). A query past the budget is remembered."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from gristmill_platform.db.engine import create_engine, create_session_factory
from gristmill_platform.db.loop_reads import GIVEN_BACK, LoopReads, loop_reads
from gristmill_platform.db.transactions import Transactions

T = TypeVar("T")


def value_of(connection: Connection, key: str) -> str | None:
    return connection.execute(text("SELECT v FROM t WHERE k = :k"), {"k": key}).scalar()


def slow_count(connection: Connection, key: str) -> int:
    """A read that runs for milliseconds (a million-row recursive count)."""
    return int(connection.execute(text(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000)"
        " SELECT count(*) FROM n")).scalar_one())


def missing_table(connection: Connection, key: str) -> Any:
    return connection.execute(text("SELECT * FROM no_such_table")).first()


@contextmanager
def counted(engine: Engine) -> Iterator[list[str]]:
    statements: list[str] = []

    def keep(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", keep)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", keep)


def run(tmp_path: Path,
        scenario: Callable[[Transactions, AsyncEngine, LoopReads], Awaitable[T]]) -> T:
    url = f"sqlite:///{tmp_path / 'reads.sqlite3'}"

    async def go() -> T:
        engine = create_engine(url)
        reads = loop_reads(url)
        assert reads is not None
        transactions = Transactions(create_session_factory(engine), loop_reads=reads)
        try:
            async with engine.begin() as connection:
                await connection.execute(text("CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)"))
                await connection.execute(text("INSERT INTO t VALUES ('a', 'one')"))
            return await scenario(transactions, engine, reads)
        finally:
            await engine.dispose()
            transactions.close()

    return asyncio.run(go())


def test_a_read_runs_on_the_loop_and_sees_the_last_commit(tmp_path: Path) -> None:
    async def scenario(transactions: Transactions, engine: AsyncEngine,
                       reads: LoopReads) -> None:
        with counted(engine.sync_engine) as on_engine, counted(reads.engine) as on_loop:
            # the first read of a new connection too (it loads the schema)
            assert await transactions.read(value_of, "a") == "one"
            async with engine.begin() as connection:
                await connection.execute(text("UPDATE t SET v = 'two' WHERE k = 'a'"))
            assert await transactions.read(value_of, "a") == "two"
            assert await transactions.read(value_of, "b") is None
        assert len(on_loop) == 3
        assert not any("FROM t WHERE" in statement for statement in on_engine)
        assert reads.slow == set()

    run(tmp_path, scenario)


def test_a_read_past_its_budget_is_given_back_and_remembered(tmp_path: Path) -> None:
    async def scenario(transactions: Transactions, engine: AsyncEngine,
                       reads: LoopReads) -> None:
        with counted(engine.sync_engine) as on_engine, counted(reads.engine) as on_loop:
            assert await transactions.read(slow_count, "") == 1_000_000
            assert reads.slow == {slow_count}
            assert await transactions.read(slow_count, "") == 1_000_000
            assert await transactions.read(value_of, "a") == "one"  # others still here
        assert len(on_loop) == 2  # the interrupted try and the key lookup
        assert sum("RECURSIVE" in statement for statement in on_engine) == 2

    run(tmp_path, scenario)


def test_an_error_is_the_async_engines_own(tmp_path: Path) -> None:
    async def scenario(transactions: Transactions, engine: AsyncEngine,
                       reads: LoopReads) -> None:
        with counted(engine.sync_engine) as on_engine, pytest.raises(
                OperationalError, match="no such table"):
            await transactions.read(missing_table, "")
        assert any("no_such_table" in statement for statement in on_engine)
        assert reads.slow == set()  # not slow: tried here again next time
        assert reads.run(missing_table, "") is GIVEN_BACK

    run(tmp_path, scenario)


def test_a_lock_held_elsewhere_is_waited_for_off_the_loop(tmp_path: Path) -> None:
    """A connection holding the database in exclusive locking mode keeps every reader
    out: the loop's read does not wait for it, the async engine's does (on its thread)
    while the loop goes on, and reads on the loop again once it is released."""
    path = tmp_path / "reads.sqlite3"

    async def scenario(transactions: Transactions, engine: AsyncEngine,
                       reads: LoopReads) -> None:
        # the holder's exclusive mode needs the file to itself when it starts
        await engine.dispose()
        reads.dispose()
        holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("UPDATE t SET v = 'three' WHERE k = 'a'")
        holder.execute("COMMIT")  # the lock stays, in exclusive locking mode
        assert reads.run(value_of, "a") is GIVEN_BACK
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticking = asyncio.create_task(tick())
        released = threading.Timer(0.3, lambda: (holder.execute("PRAGMA locking_mode=NORMAL"),
                                                 holder.execute("SELECT 1").fetchall(),
                                                 holder.close()))
        released.start()
        try:
            assert await transactions.read(value_of, "a") == "three"
        finally:
            released.join()
            ticking.cancel()
        assert ticks >= 10  # the loop ran while the read waited
        assert reads.slow == set()
        assert reads.run(value_of, "a") == "three"

    run(tmp_path, scenario)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:",
                                 "postgresql://localhost/test"])
def test_only_a_sqlite_file_has_loop_reads(url: str) -> None:
    assert loop_reads(url) is None


def test_a_service_connection_is_read_only(tmp_path: Path) -> None:
    def write(connection: Connection, key: str) -> None:
        connection.execute(text("UPDATE t SET v = 'x'"))

    async def scenario(transactions: Transactions, engine: AsyncEngine,
                       reads: LoopReads) -> None:
        assert reads.run(write, "") is GIVEN_BACK
        assert reads.run(value_of, "a") == "one"

    run(tmp_path, scenario)
