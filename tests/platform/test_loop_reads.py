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
from sqlalchemy import (
    Engine,
    String,
    bindparam,
    column,
    event,
    literal_column,
    select,
    table,
    text,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from gristmill_platform.db.engine import create_engine, create_session_factory
from gristmill_platform.db.loop_reads import GIVEN_BACK, LoopReads, Read, loop_reads
from gristmill_platform.db.transactions import Transactions

T = TypeVar("T")


_T = table("t", column("k", String), column("v", String))
VALUE = Read(select(_T.c.v).where(_T.c.k == bindparam("k")),
             lambda row: None if row is None else row[0], key="k")
# a read that runs for milliseconds (a million-row recursive count)
SLOW = Read(select(literal_column("(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 "
                                  "FROM n WHERE i < 1000000) SELECT count(*) FROM n)")),
            lambda row: int(row[0]), key=None)
MISSING = Read(select(column("x")).select_from(table("no_such_table")),
               lambda row: row, key=None)


@contextmanager
def traced(reads: LoopReads) -> Iterator[list[str]]:
    """The statements this thread's loop connection runs while the block runs."""
    statements: list[str] = []
    connection = reads.connection()
    connection.set_trace_callback(statements.append)
    try:
        yield statements
    finally:
        connection.set_trace_callback(None)


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
        with counted(engine.sync_engine) as on_engine, traced(reads) as on_loop:
            # the first read of a new connection too (it loads the schema)
            assert await transactions.read(VALUE, "a") == "one"
            async with engine.begin() as connection:
                await connection.execute(text("UPDATE t SET v = 'two' WHERE k = 'a'"))
            assert await transactions.read(VALUE, "a") == "two"
            assert await transactions.read(VALUE, "b") is None
        assert len(on_loop) == 3
        assert not any("FROM t WHERE" in statement for statement in on_engine)
        assert reads.slow == set()

    run(tmp_path, scenario)


def test_a_read_past_its_budget_is_given_back_and_remembered(tmp_path: Path) -> None:
    async def scenario(transactions: Transactions, engine: AsyncEngine,
                       reads: LoopReads) -> None:
        with counted(engine.sync_engine) as on_engine, traced(reads) as on_loop:
            assert await transactions.read(SLOW, "") == 1_000_000
            assert reads.slow == {SLOW}
            assert await transactions.read(SLOW, "") == 1_000_000
            assert await transactions.read(VALUE, "a") == "one"  # others still here
        assert len(on_loop) == 2  # the interrupted try and the key lookup
        assert sum("RECURSIVE" in statement for statement in on_engine) == 2

    run(tmp_path, scenario)


def test_an_error_is_the_async_engines_own(tmp_path: Path) -> None:
    async def scenario(transactions: Transactions, engine: AsyncEngine,
                       reads: LoopReads) -> None:
        with counted(engine.sync_engine) as on_engine, pytest.raises(
                OperationalError, match="no such table"):
            await transactions.read(MISSING, "")
        assert any("no_such_table" in statement for statement in on_engine)
        assert reads.slow == set()  # not slow: tried here again next time
        assert reads.run(MISSING, "") is GIVEN_BACK

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
        assert reads.run(VALUE, "a") is GIVEN_BACK
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
            assert await transactions.read(VALUE, "a") == "three"
        finally:
            released.join()
            ticking.cancel()
        assert ticks >= 10  # the loop ran while the read waited
        assert reads.slow == set()
        assert reads.run(VALUE, "a") == "three"

    run(tmp_path, scenario)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:",
                                 "postgresql://localhost/test"])
def test_only_a_sqlite_file_has_loop_reads(url: str) -> None:
    assert loop_reads(url) is None


def test_a_loop_connection_is_read_only(tmp_path: Path) -> None:
    async def scenario(transactions: Transactions, engine: AsyncEngine,
                       reads: LoopReads) -> None:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reads.connection().execute("UPDATE t SET v = 'x'")
        assert reads.run(VALUE, "a") == "one"

    run(tmp_path, scenario)


def test_the_loop_answers_as_the_async_engine(own_database_url: str) -> None:
    """The service's reads (a token's standing, an execution's outcome and status, the
    variables) give the same values either way: dates, JSON, booleans, missing rows."""
    from datetime import UTC, datetime

    from gristmill_platform.auth.repository import STANDING
    from gristmill_platform.db.models.auth import SdkToken, User
    from gristmill_platform.db.models.env_vars import EnvironmentVariable
    from gristmill_platform.db.models.executions import Execution
    from gristmill_platform.executions.repository import OUTCOME, STATUS

    values = Read(select(EnvironmentVariable.name, EnvironmentVariable.value)
                  .order_by(EnvironmentVariable.name), dict, key=None, many=True)
    reads = loop_reads(own_database_url)
    if reads is None:
        pytest.skip("loop reads are SQLite's only")

    async def scenario() -> None:
        engine = create_engine(own_database_url)
        plain = Transactions(create_session_factory(engine))
        try:
            revoked = datetime(2026, 12, 7, 1, 2, 3, 456789, tzinfo=UTC)
            async with create_session_factory(engine)() as session, session.begin():
                session.add(User(id="u-1", name="u", email="u@example.com", is_admin=True))
                await session.flush()
                session.add_all([
                    SdkToken(id="t-1", user_id="u-1", secret_hash="h", revoked_at=revoked),
                    Execution(id="e-1", pipeline_name="p", step_name="s",
                              execution_rule="run", status="succeeded", inputs=[],
                              outputs=[{"pipeline_output_name": "o",
                                        "value": {"a": [1, 2.5], "b": None}}],
                              created_at=revoked),
                    EnvironmentVariable(name="B", value="2"),
                    EnvironmentVariable(name="A", value="1")])
            for read, key in ((STANDING, "t-1"), (STANDING, "t-2"), (OUTCOME, "e-1"),
                              (OUTCOME, "e-2"), (STATUS, "e-1"), (STATUS, "e-2"),
                              (values, "")):
                on_loop = reads.run(read, key)
                assert on_loop == await plain.read(read, key), (read, key)
            standing = reads.run(STANDING, "t-1")
            assert standing is not GIVEN_BACK and standing is not None
            assert standing.revoked_at == revoked
            assert standing.is_admin is True and standing.is_viewer is False
            assert reads.run(values, "") == {"A": "1", "B": "2"}
        finally:
            await engine.dispose()
            reads.dispose()

    asyncio.run(scenario())


def test_a_read_leaves_no_read_transaction_open(tmp_path: Path) -> None:
    """A reader that kept its statement open would hold a snapshot, and a checkpoint
    that must wait for readers (the WAL checkpoints', db/wal_checkpoints.py) would
    report itself busy."""
    path = tmp_path / "reads.sqlite3"
    pairs = Read(select(_T.c.k, _T.c.v), lambda rows: dict(rows), key=None, many=True)

    async def scenario(transactions: Transactions, engine: AsyncEngine,
                       reads: LoopReads) -> None:
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO t VALUES ('b', 'two'), ('c', 'x')"))
        assert reads.run(VALUE, "a") == "one"
        assert reads.run(pairs, "") == {"a": "one", "b": "two", "c": "x"}
        checkpointer = sqlite3.connect(path)
        try:
            busy, _log, _done = checkpointer.execute(
                "PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            checkpointer.close()
        assert busy == 0

    run(tmp_path, scenario)
