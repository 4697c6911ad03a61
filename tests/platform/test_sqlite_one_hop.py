"""SQLite statements through the control service's engine take one hop to aiosqlite's
thread each (db/sqlite_cursor.py), and give SQLAlchemy what the adapter's own cursor
gave: rows, row counts, RETURNING, executemany, the driver's errors as SQLAlchemy's.
Reads outside a write transaction take none: they run on the event loop's thread, within
a budget, and go to the thread past it or on any error. Writes take none either when
they can be done at once: never waiting for a lock on the loop, a transaction's first
write past its budget undone and given to the thread, its end done where its writes were."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from gristmill_platform.db import sqlite_cursor
from gristmill_platform.db.engine import BUSY_TIMEOUT_MS, create_engine, create_session_factory
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


async def values(engine: AsyncEngine) -> list[str]:
    """What table t holds, committed, in order."""
    async with engine.connect() as connection:
        rows = await connection.execute(text("SELECT v FROM t ORDER BY v"))
        return list(rows.scalars().all())


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
            # executemany, and a read in a write transaction: the thread's, one hop each
            await connection.execute(text("INSERT INTO t (v) VALUES (:v)"),
                                     [{"v": "a"}, {"v": "b"}])
            value = (await connection.execute(text("SELECT min(v) FROM t"))).scalar_one()
            assert len(seen) == 2, seen  # two statements, two hops
        assert len(seen) == 3, seen  # and its COMMIT, where its write was
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
        assert seen == []  # the INSERT and its COMMIT on the loop
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
        assert answered == ["SELECT v FROM t"] and seen == []  # INSERT, COMMIT: the loop
        # committed by another connection (as the journal's thread does): seen at once
        other = sqlite3.connect(tmp_path / "one-hop.sqlite3")
        other.execute("INSERT INTO t (v) VALUES ('b')")
        other.commit()
        other.close()
        assert await values(engine) == ["a", "b"]
        assert len(answered) == 2 and seen == []

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


async def hops_after_connecting(engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
                                ) -> list[str]:
    """hops(), counted once the pool's connection is made (its opening takes hops)."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    return hops(monkeypatch)


def writer_of(adapter: Any) -> sqlite_cursor.LoopWriter:
    writer = sqlite_cursor.loop_writer(adapter._connection)
    assert writer is not None
    return writer


def test_writes_and_their_end_run_on_the_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        seen = hops(monkeypatch)
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO t (v) VALUES ('a'), ('b')"))
            updated = await connection.execute(text("UPDATE t SET v = 'c' WHERE v = 'b'"))
            assert updated.rowcount == 1
            inserted = await connection.execute(
                text("INSERT INTO t (v) VALUES ('d') RETURNING id, v"))
            assert inserted.one()[1] == "d"
        async with engine.connect() as connection:
            await connection.execute(text("INSERT INTO t (v) VALUES ('undone')"))
            await connection.rollback()
            deleted = await connection.execute(text("DELETE FROM t WHERE v = 'a'"))
            assert deleted.rowcount == 1
            await connection.commit()
            raw = await connection.get_raw_connection()
            # the lock's wait is the connection's own again after each write here
            writer = writer_of(raw.dbapi_connection)
            busy = writer.connection.execute("PRAGMA busy_timeout").fetchone()
            assert busy == (BUSY_TIMEOUT_MS,)
        assert seen == []
        # committed for real, as a connection of another process sees it
        other = sqlite3.connect(tmp_path / "one-hop.sqlite3")
        try:
            assert other.execute("SELECT v FROM t ORDER BY v").fetchall() == [("c",), ("d",)]
        finally:
            other.close()

    run(tmp_path, scenario)


def test_a_write_finding_the_lock_taken_waits_on_the_thread_not_the_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))  # the pool's connection is made
        holder = sqlite3.connect(tmp_path / "one-hop.sqlite3", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another writer (a CLI command) holds the lock
        holder.execute("INSERT INTO t (v) VALUES ('first')")
        seen = hops(monkeypatch)
        ticks = 0

        async def write() -> None:
            async with engine.begin() as connection:
                await connection.execute(text("INSERT INTO t (v) VALUES ('second')"))

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticking = asyncio.ensure_future(tick())
        writing = asyncio.ensure_future(write())
        await asyncio.sleep(0.3)
        assert not writing.done() and ticks >= 10  # waiting, and the loop runs meanwhile
        holder.execute("COMMIT")
        await asyncio.wait_for(writing, 10)
        ticking.cancel()
        holder.close()
        assert len(seen) == 2, seen  # the INSERT and its COMMIT, on the thread
        async with engine.connect() as connection:
            rows = await connection.execute(text("SELECT v FROM t ORDER BY id"))
            assert rows.scalars().all() == ["first", "second"]  # nothing lost, once each
            raw = await connection.get_raw_connection()
            writer = writer_of(raw.dbapi_connection)
            assert writer.slow == set()  # a lock is not slowness
            busy = writer.connection.execute("PRAGMA busy_timeout").fetchone()
            assert busy == (BUSY_TIMEOUT_MS,)
        seen.clear()
        async with engine.begin() as connection:  # the lock free: the loop again
            await connection.execute(text("INSERT INTO t (v) VALUES ('third')"))
        assert seen == []

    run(tmp_path, scenario)


# COUNT_TO's work, written: 'n200000'
INSERT_COUNTED = "INSERT INTO t (v) SELECT 'n' || " + COUNT_TO.removeprefix("SELECT ")


def test_a_first_write_past_the_budget_is_undone_and_given_to_the_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_cursor, "LOOP_WRITE_BUDGET_S", 0.0)

    async def scenario(engine: AsyncEngine) -> None:
        seen = await hops_after_connecting(engine, monkeypatch)
        async with engine.begin() as connection:
            await connection.execute(text(INSERT_COUNTED))
            raw = await connection.get_raw_connection()
            writer = writer_of(raw.dbapi_connection)
            assert INSERT_COUNTED in writer.slow
            assert len(seen) == 1  # interrupted on the loop (undone), done by the thread
        assert len(seen) == 2  # and its COMMIT there too
        async with engine.begin() as connection:
            await connection.execute(text("DELETE FROM t"))
            await connection.execute(text(INSERT_COUNTED))  # a later write: remembered
        assert await values(engine) == ["n200000"]  # once, not twice

    run(tmp_path, scenario)


def test_a_later_write_past_the_budget_finishes_on_the_loop_and_is_remembered(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        seen = hops(monkeypatch)
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO t (v) VALUES ('a')"))
            # interrupting it would undo 'a' with it: it is let finish
            monkeypatch.setattr(sqlite_cursor, "LOOP_WRITE_BUDGET_S", 0.0)
            await connection.execute(text(INSERT_COUNTED))
            raw = await connection.get_raw_connection()
            writer = writer_of(raw.dbapi_connection)
        assert seen == [] and INSERT_COUNTED in writer.slow
        assert await values(engine) == ["a", "n200000"]
        async with engine.begin() as connection:
            await connection.execute(text("DELETE FROM t"))
            await connection.execute(text(INSERT_COUNTED))  # remembered: the thread's
        assert len(seen) == 2, seen  # that INSERT, and the COMMIT where it was
        assert await values(engine) == ["n200000"]

    run(tmp_path, scenario)


def test_a_write_slowed_by_something_else_than_its_own_work_is_not_remembered(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pause of the disk (or of the machine) is not a property of the statement: only
    what SQLite counts of its own work past the budget sends it to the thread."""
    async def scenario(engine: AsyncEngine) -> None:
        original = sqlite_cursor._run

        def paused(conn: sqlite3.Connection, *args: Any) -> Any:
            time.sleep(sqlite_cursor.LOOP_WRITE_BUDGET_S * 5)
            return original(conn, *args)

        monkeypatch.setattr(sqlite_cursor, "_run", paused)
        seen = hops(monkeypatch)
        for value in ("a", "b"):
            async with engine.begin() as connection:
                await connection.execute(text(f"INSERT INTO t (v) VALUES ('{value}')"))
                raw = await connection.get_raw_connection()
                writer = writer_of(raw.dbapi_connection)
        assert seen == [] and writer.slow == set()

    run(tmp_path, scenario)


def test_a_failing_write_gives_the_drivers_error_and_keeps_the_transaction(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO t (v) VALUES ('a')"))
        seen = hops(monkeypatch)
        async with engine.connect() as connection:
            with pytest.raises(IntegrityError):  # the transaction's first write
                await connection.execute(text("INSERT INTO t (v) VALUES ('a')"))
            await connection.execute(text("INSERT INTO t (v) VALUES ('b')"))
            with pytest.raises(IntegrityError):  # a later one: only it is undone
                await connection.execute(text("INSERT INTO t (v) VALUES ('a')"))
            with pytest.raises(OperationalError, match="no such column"):
                await connection.execute(text("UPDATE t SET nope = 1"))
            await connection.commit()
        assert seen == []
        assert await values(engine) == ["a", "b"]

    run(tmp_path, scenario)


def test_writes_elsewhere_than_the_loops_thread_go_to_aiosqlites(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        async with engine.connect() as connection:
            await connection.execute(text("INSERT INTO t (v) VALUES ('a')"))
            await connection.commit()
            raw = await connection.get_raw_connection()
            writer = writer_of(raw.dbapi_connection)
            elsewhere: list[Any] = []
            thread = threading.Thread(target=lambda: elsewhere.append(
                writer.write("INSERT INTO t (v) VALUES ('no')", ())))
            thread.start()
            thread.join()
            assert elsewhere == [None] and not writer.connection.in_transaction

    run(tmp_path, scenario)


def test_an_engine_with_the_same_thread_check_writes_on_the_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection opened with sqlite3's same-thread check (another engine's than
    create_engine's) cannot be written on the loop: its writes take the hop, as before."""
    from sqlalchemy import event
    from sqlalchemy.ext.asyncio import create_async_engine

    async def go() -> int:
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'one-hop.sqlite3'}",
                                     connect_args={"check_same_thread": True})
        event.listen(engine.sync_engine, "connect", sqlite_cursor.use_one_hop_cursors)
        try:
            async with engine.begin() as connection:
                await connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
            seen = hops(monkeypatch)
            async with engine.begin() as connection:
                await connection.execute(text("INSERT INTO t (v) VALUES ('a')"))
                raw = await connection.get_raw_connection()
                assert sqlite_cursor.loop_writer(raw.dbapi_connection._connection) is None
            assert await values(engine) == ["a"]
            return len(seen)
        finally:
            await engine.dispose()

    assert asyncio.run(go()) == 2  # the INSERT and its COMMIT


def test_errors_are_told_apart_by_sqlites_result_code(tmp_path: Path) -> None:
    """What sends a statement to the thread is SQLite's code, not its message's wording."""
    path = tmp_path / "codes.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (v TEXT UNIQUE)")
    holder.execute("BEGIN IMMEDIATE")
    kept_out = sqlite3.connect(path, timeout=0)
    with pytest.raises(sqlite3.OperationalError) as busy:
        kept_out.execute("INSERT INTO t VALUES ('a')")
    holder.execute("COMMIT")
    kept_out.set_progress_handler(lambda: True, 1)
    with pytest.raises(sqlite3.OperationalError) as stopped:
        kept_out.execute(COUNT_TO)
    kept_out.set_progress_handler(None, 0)
    kept_out.execute("INSERT INTO t VALUES ('a')")
    with pytest.raises(sqlite3.IntegrityError) as duplicate:
        kept_out.execute("INSERT INTO t VALUES ('a')")
    kept_out.close()
    holder.close()
    assert sqlite_cursor.locked(busy.value) and not sqlite_cursor.interrupted(busy.value)
    assert sqlite_cursor.interrupted(stopped.value) and not sqlite_cursor.locked(stopped.value)
    for other in (duplicate.value, sqlite3.OperationalError("database is locked")):
        assert not sqlite_cursor.locked(other) and not sqlite_cursor.interrupted(other)


def test_the_budget_covers_the_statement_not_the_writers_own_settings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer's `PRAGMA busy_timeout` runs outside the budget: its progress checks
    (which SQLite makes when a reused statement's count of instructions crosses the
    interval, whatever it does) could otherwise interrupt it past the deadline, and the
    request failed with `interrupted` instead of its write going to the thread (seen
    once in CI, a loaded machine delaying the loop between the deadline and the PRAGMA).
    Here every instruction is checked and the budget is always spent."""
    monkeypatch.setattr(sqlite_cursor, "PROGRESS_EVERY", 1)
    monkeypatch.setattr(sqlite_cursor, "LOOP_WRITE_BUDGET_S", 0.0)

    async def scenario(engine: AsyncEngine) -> None:
        seen = await hops_after_connecting(engine, monkeypatch)
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO t (v) VALUES ('a')"))
        assert len(seen) == 2, seen  # undone on the loop; the INSERT and COMMIT on the thread
        assert await values(engine) == ["a"]

    run(tmp_path, scenario)


def pausing(connection: sqlite3.Connection) -> sqlite3.Connection:
    """``pause(x)``: x, after 5 ms of sleep (the thread descheduled, not working)."""
    def pause(value: Any) -> Any:
        time.sleep(0.005)
        return value

    connection.create_function("pause", 1, pause)
    return connection


def test_a_read_descheduled_mid_statement_is_not_past_its_budget(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The budgets count the thread's CPU time: a statement paused by the machine (here,
    a sleep between two of its instructions, each checked) is not one to send to the
    thread; a statement working past the budget still is."""
    monkeypatch.setattr(sqlite_cursor, "PROGRESS_EVERY", 1)
    connection = pausing(sqlite3.connect(":memory:"))
    with sqlite_cursor.read_budget(connection):
        assert connection.execute("SELECT pause(1)").fetchone() == (1,)
    with pytest.raises(sqlite3.OperationalError) as caught, sqlite_cursor.read_budget(
            connection):
        connection.execute(COUNT_TO).fetchall()
    assert sqlite_cursor.interrupted(caught.value)


def test_a_write_descheduled_mid_statement_stays_on_the_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_cursor, "PROGRESS_EVERY", 1)
    connection = pausing(sqlite3.connect(tmp_path / "pause.sqlite3"))
    connection.execute("CREATE TABLE t (v TEXT)")
    connection.commit()
    writer = sqlite_cursor.LoopWriter(connection)
    assert writer.write("INSERT INTO t (v) VALUES (pause('a'))", ()) is not None
    assert writer.slow == set() and writer.end(commit=True)
    assert connection.execute("SELECT v FROM t").fetchall() == [("a",)]
    # its own work past the budget: undone, given to the thread (None), remembered
    assert writer.write(INSERT_COUNTED, ()) is None
    assert INSERT_COUNTED in writer.slow and not connection.in_transaction
    assert connection.execute("SELECT count(*) FROM t").fetchone() == (1,)
