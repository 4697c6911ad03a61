"""SQLite statements through the control service's engine take one hop to aiosqlite's
thread each (db/sqlite_cursor.py), and give SQLAlchemy what the adapter's own cursor
gave: rows, row counts, RETURNING, executemany, the driver's errors as SQLAlchemy's.
Reads outside a write transaction take none: they run on the event loop's thread, within
a budget, and go to the thread past it or on any error."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from gristmill_platform.db import sqlite_cursor
from gristmill_platform.db.engine import create_engine, create_session_factory
from gristmill_platform.db.sqlite_cursor import OneHopConnection

T = TypeVar("T")


def run(tmp_path: Path, scenario: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    async def go() -> T:
        engine = create_engine(f"sqlite:///{tmp_path / 'one-hop.sqlite3'}")
        try:
            async with engine.begin() as connection:
                await connection.execute(text(
                    "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE NOT NULL)"))
            return await scenario(engine)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def database_of(connection: aiosqlite.Connection) -> str | None:
    """The file an aiosqlite connection opens (its connector's argument)."""
    for cell in connection._connector.__closure__ or ():
        if isinstance(cell.cell_contents, str):
            return cell.cell_contents
    return None


def hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The calls queued to aiosqlite's thread (its Connection._execute) by connections to
    this test's database (another test's service may still use its own in a thread), by
    name."""
    seen: list[str] = []
    original = aiosqlite.Connection._execute

    async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if (database_of(self) or "").endswith("one-hop.sqlite3"):
            seen.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return seen


def test_a_statement_is_one_hop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        async with engine.connect() as connection:  # the pool's connection is made
            raw = await connection.get_raw_connection()
            assert isinstance(raw.dbapi_connection, OneHopConnection)
        seen = hops(monkeypatch)
        async with engine.begin() as connection:
            before = len(seen)
            await connection.execute(text("INSERT INTO t (v) VALUES ('a')"))
            value = (await connection.execute(text("SELECT v FROM t"))).scalar_one()
            assert len(seen) - before == 2, seen  # two statements, two hops
        assert value == "a"

    run(tmp_path, scenario)


def test_rows_counts_returning_and_many(tmp_path: Path) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO t (v) VALUES (:v)"),
                                     [{"v": "a"}, {"v": "b"}, {"v": "c"}])
            inserted = await connection.execute(
                text("INSERT INTO t (v) VALUES ('d') RETURNING id, v"))
            assert inserted.one()[1] == "d"
            updated = await connection.execute(text("UPDATE t SET v = v || '!' WHERE v < 'c'"))
            assert updated.rowcount == 2
            nothing = await connection.execute(text("UPDATE t SET v = 'x' WHERE id = -1"))
            assert nothing.rowcount == 0
            rows = (await connection.execute(text("SELECT v FROM t ORDER BY v"))).all()
            assert [r[0] for r in rows] == ["a!", "b!", "c", "d"]
            several = await connection.execute(text("SELECT v FROM t ORDER BY v"))
            assert several.fetchmany(3) == [("a!",), ("b!",), ("c",)]
            assert several.fetchone() == ("d",) and several.fetchone() is None
        async with engine.connect() as connection:  # committed: seen by another
            count = await connection.execute(text("SELECT count(*) FROM t"))
            assert count.scalar_one() == 4

    run(tmp_path, scenario)


def test_errors_and_rollback(tmp_path: Path) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO t (v) VALUES ('a')"))
        with pytest.raises(IntegrityError):
            async with engine.begin() as connection:
                await connection.execute(text("INSERT INTO t (v) VALUES ('b')"))
                await connection.execute(text("INSERT INTO t (v) VALUES ('a')"))
        with pytest.raises(OperationalError):
            async with engine.connect() as connection:
                await connection.execute(text("SELECT nope FROM t"))
        factory = create_session_factory(engine)
        async with factory() as session:  # the ORM's session on the same cursors
            rows = (await session.execute(text("SELECT v FROM t"))).scalars().all()
        assert rows == ["a"]  # 'b' was rolled back with its transaction

    run(tmp_path, scenario)


def test_a_unit_of_work_that_wrote_nothing_ends_without_a_hop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        async with engine.connect():
            pass  # the pool's connection is made
        seen = hops(monkeypatch)
        async with engine.begin() as connection:
            await connection.execute(text("SELECT count(*) FROM t"))
        assert seen == []  # the SELECT on the loop's reader; no COMMIT, no reset on return
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO t (v) VALUES ('w')"))
        assert len(seen) == 2, seen  # the INSERT and its COMMIT
        monkeypatch.undo()
        # committed for real: a fresh engine on the same file sees it
        other = create_engine(f"sqlite:///{tmp_path / 'one-hop.sqlite3'}")
        try:
            async with other.connect() as connection:
                rows = await connection.execute(text("SELECT v FROM t"))
                assert rows.scalars().all() == ["w"]
        finally:
            await other.dispose()

    run(tmp_path, scenario)


def test_another_sqlalchemy_series_keeps_the_adapters_cursors(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one-hop cursor builds on SQLAlchemy 2.1's adapter; pyproject allows 2.0 too."""
    from gristmill_platform.db import sqlite_cursor

    assert sqlite_cursor.supported("2.1.9") and not sqlite_cursor.supported("2.0.44")
    assert not sqlite_cursor.supported("2.2.0")
    monkeypatch.setattr(sqlite_cursor, "SUPPORTED", False)

    async def scenario(engine: AsyncEngine) -> str:
        async with engine.begin() as connection:
            raw = await connection.get_raw_connection()
            assert not isinstance(raw.dbapi_connection, OneHopConnection)
            await connection.execute(text("INSERT INTO t (v) VALUES ('plain')"))
            return str((await connection.execute(text("SELECT v FROM t"))).scalar_one())

    assert run(tmp_path, scenario) == "plain"


def reads_on_loop(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The statements on this test's table that a loop's reader answered itself (only
    those: another test's service may still be reading its own database in a thread)."""
    answered: list[str] = []
    original = sqlite_cursor.LoopReader.read

    def read(self: sqlite_cursor.LoopReader, operation: str, parameters: Any) -> Any:
        done = original(self, operation, parameters)
        if done is not None and re.search(r"\bFROM t\b", operation):
            answered.append(operation)
        return done

    monkeypatch.setattr(sqlite_cursor.LoopReader, "read", read)
    return answered


def test_reads_outside_a_write_run_on_the_loop_and_see_every_commit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        seen, answered = hops(monkeypatch), reads_on_loop(monkeypatch)
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO t (v) VALUES ('a')"))
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT v FROM t"))).scalar_one() == "a"
        assert answered == ["SELECT v FROM t"] and len(seen) == 2, seen  # INSERT, COMMIT
        # committed by another connection (as the journal's thread does): seen at once
        other = sqlite3.connect(tmp_path / "one-hop.sqlite3")
        other.execute("INSERT INTO t (v) VALUES ('b')")
        other.commit()
        other.close()
        async with engine.connect() as connection:
            rows = await connection.execute(text("SELECT v FROM t ORDER BY v"))
            assert rows.scalars().all() == ["a", "b"]
        assert len(answered) == 2 and len(seen) == 2

    run(tmp_path, scenario)


def test_a_read_in_a_write_transaction_sees_its_writes_on_the_writing_connection(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        answered = reads_on_loop(monkeypatch)
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO t (v) VALUES ('uncommitted')"))
            value = (await connection.execute(text("SELECT v FROM t"))).scalar_one()
            assert value == "uncommitted"
            await connection.rollback()
        assert answered == []
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT v FROM t"))).all() == []

    run(tmp_path, scenario)


COUNT_TO = ("SELECT (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
            "WHERE x < 200000) SELECT count(*) FROM c)")


def test_a_read_past_the_budget_goes_to_the_thread_and_is_remembered(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_cursor, "LOOP_READ_BUDGET_S", 0.0)

    async def scenario(engine: AsyncEngine) -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))  # within any budget: no VM check
            raw = await connection.get_raw_connection()
            adapter: Any = raw.dbapi_connection
            reader = sqlite_cursor.loop_reader(adapter._connection)
            assert reader is not None
            seen = hops(monkeypatch)
            assert (await connection.execute(text(COUNT_TO))).scalar_one() == 200000
            assert len(seen) == 1  # interrupted on the loop, answered by the thread
            assert COUNT_TO in reader.slow
            assert (await connection.execute(text(COUNT_TO))).scalar_one() == 200000
            assert len(seen) == 2  # straight to the thread

    run(tmp_path, scenario)


def test_a_locked_database_sends_the_read_to_the_thread_without_waiting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO t (v) VALUES ('a')"))
        async with engine.connect() as connection:
            await connection.execute(text("SELECT v FROM t"))
            raw = await connection.get_raw_connection()
            adapter: Any = raw.dbapi_connection
            reader = sqlite_cursor.loop_reader(adapter._connection)
            assert reader is not None
            # never waits for a lock on the loop
            assert reader.connection.execute("PRAGMA busy_timeout").fetchone() == (0,)
            original = sqlite_cursor._run

            def locked(conn: sqlite3.Connection, *args: Any) -> Any:
                if conn is reader.connection:  # what SQLite answers a reader kept out
                    raise sqlite3.OperationalError("database is locked")
                return original(conn, *args)

            monkeypatch.setattr(sqlite_cursor, "_run", locked)
            seen = hops(monkeypatch)
            assert (await connection.execute(text("SELECT v FROM t"))).scalar_one() == "a"
            assert len(seen) == 1  # the thread's connection answered
            assert reader.slow == set()  # a lock is not slowness: next time, the loop again

    run(tmp_path, scenario)


def test_a_failing_read_gets_the_threads_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        async with engine.connect():
            pass
        seen = hops(monkeypatch)
        with pytest.raises(OperationalError, match="no such column"):
            async with engine.connect() as connection:
                await connection.execute(text("SELECT nope FROM t"))
        assert len(seen) == 1  # tried on the loop, given (and failed) on the thread

    run(tmp_path, scenario)


def test_the_reader_is_used_on_its_own_thread_only_and_closed_with_its_connection(
        tmp_path: Path) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        async with engine.connect() as connection:
            raw = await connection.get_raw_connection()
            adapter: Any = raw.dbapi_connection
            aio = adapter._connection
            await connection.execute(text("SELECT v FROM t"))
            reader = sqlite_cursor.loop_reader(aio)
            assert reader is not None
            elsewhere: list[Any] = []
            thread = threading.Thread(
                target=lambda: elsewhere.append(reader.read("SELECT v FROM t", ())))
            thread.start()
            thread.join()
            assert elsewhere == [None]  # another thread: given to aiosqlite's
            assert reader.connection.execute("PRAGMA cache_size").fetchone() == (-512,)
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                reader.connection.execute("INSERT INTO t (v) VALUES ('no')")
        await engine.dispose()
        assert sqlite_cursor._readers.get(aio) is None
        with pytest.raises(sqlite3.ProgrammingError):
            reader.connection.execute("SELECT 1")  # closed

    run(tmp_path, scenario)
