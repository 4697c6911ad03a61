"""SQLite statements in one hop to aiosqlite's thread instead of four.

aiosqlite runs each call on the database connection in a thread of its own; SQLAlchemy's
adapter makes four such calls per statement (open a cursor, execute, fetch the rows,
close the cursor), each a wake-up of that thread and a wake-up of the event loop when
it answers. A statement's whole cursor life is done here in one call instead, with the
same sqlite3 calls in the same order on the same connection: only the hand-offs go (the
profile of an elastic execution had them at a large share of the control service's
CPU, docs/performance-log.md). Results are fetched in full as before (the adapter's
default cursor buffers every row too); server-side cursors keep SQLAlchemy's class. And
ending a unit of work that wrote nothing takes no hop at all (OneHopConnection).

A read outside a write transaction (each request's token check, a long-poll's read, a
launch's reads) takes no hop either: it runs on the event loop's own thread, on a
read-only connection to the same file (LoopReader), when it is done within
LOOP_READ_BUDGET_S. A SELECT by key takes tens of microseconds there, where the hop
costs a wake-up of two threads. Anything else goes to aiosqlite's thread as before: a
statement past the budget (interrupted, then remembered as one for the thread), a
database busy with a lock (the reader never waits for one), any error (the thread's
connection then gives the real one). Reads in a write transaction stay on the writing
connection, which alone sees its own uncommitted writes.

Writes take no hop either when they can be done at once (LoopWriter): an INSERT, UPDATE
or DELETE runs on the event loop's thread, on the writing connection itself (opened
without sqlite3's same-thread check; no statement of it is in flight then, each was
awaited), never waiting for SQLite's write lock. A transaction's first write that finds
the lock taken, or whose own work (what SQLite's progress handler counts) runs past
LOOP_WRITE_BUDGET_S, is undone (it is the whole transaction) and given to the thread,
which waits for the lock as before. A later write of the transaction holds the lock
already; it cannot be interrupted without losing the transaction's earlier writes, so one
past the budget is let finish and remembered.
The transaction's COMMIT (or ROLLBACK) is done on the loop too when all its writes were;
if any went to the thread, so does its end, and so do its later writes.
"""

from __future__ import annotations

import collections
import contextlib
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_


def _run(connection: sqlite3.Connection, operation: str, parameters: Any, many: bool
         ) -> tuple[Any, list[Any], int, int | None]:
    """In aiosqlite's thread: a cursor's whole life, what SQLAlchemy reads of it kept."""
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


# How long a read may hold the event loop before it is interrupted and given to the
# thread instead: a few key lookups' worth; every request waits while it runs. Counted
# in the thread's CPU time (budget_clock), checked at SQLite's progress calls.
LOOP_READ_BUDGET_S = 0.0005
# VM instructions between two checks of that budget (a key lookup is ~100: unchecked).
PROGRESS_EVERY = 1000
# Statements that went past the budget, kept per reader (bounded: SQL texts are few).
SLOW_KEPT = 256


def budget_clock() -> float:
    """What the budgets count: this thread's CPU time. A statement's own work, not the
    time the machine gave to other processes or threads while it ran (on a loaded machine
    the loop is descheduled mid-statement, and a wall-clock deadline then sent short
    statements to the thread, remembered as slow until the service restarts), nor a wait
    for the disk."""
    return time.thread_time()


def is_read(operation: Any) -> bool:
    return isinstance(operation, str) and operation.lstrip()[:6].upper() == "SELECT"


# How long a transaction's first write may run on the event loop before it is interrupted
# (undoing it) and given to the thread; a later write past it is let finish. Either is
# remembered (by SQL text, until the service restarts) and goes to the thread after.
LOOP_WRITE_BUDGET_S = 0.001
_WRITES = ("INSERT", "UPDATE", "DELETE")


def is_write(operation: Any) -> bool:
    return isinstance(operation, str) and operation.lstrip()[:6].upper() in _WRITES


def _primary_code(error: sqlite3.Error) -> int | None:
    """SQLite's result code of the error, without its extended part (SQLITE_BUSY for
    SQLITE_BUSY_SNAPSHOT); None for an error that did not come from SQLite."""
    code = getattr(error, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def interrupted(error: sqlite3.Error) -> bool:
    """Stopped by the progress handler (a budget)."""
    return _primary_code(error) == sqlite3.SQLITE_INTERRUPT


def locked(error: sqlite3.Error) -> bool:
    """Kept out by a lock another connection holds (waiting was not allowed)."""
    return _primary_code(error) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


# The settings of a connection that reads on the event loop: read-only; a lock held
# elsewhere is not waited for (the caller's other path waits, not the loop); its page
# cache kept to 512 KiB, the index pages of its key lookups (default: 2 MiB), as there is
# one per pooled connection (up to 30).
READER_PRAGMAS = ("query_only=ON", "busy_timeout=0", "cache_size=-512")


def open_reader(connector: Callable[[], sqlite3.Connection]) -> sqlite3.Connection:
    """A connection made by ``connector``, with READER_PRAGMAS."""
    connection = connector()
    try:
        for pragma in READER_PRAGMAS:
            connection.execute(f"PRAGMA {pragma}").close()
    except sqlite3.Error:
        connection.close()
        raise
    return connection


@contextlib.contextmanager
def read_budget(connection: sqlite3.Connection) -> Iterator[None]:
    """The connection's statements in the block are interrupted (SQLITE_INTERRUPT, see
    ``interrupted``) once their own work passes LOOP_READ_BUDGET_S."""
    deadline = budget_clock() + LOOP_READ_BUDGET_S

    def past_budget() -> bool:
        return budget_clock() > deadline

    connection.set_progress_handler(past_budget, PROGRESS_EVERY)
    try:
        yield
    finally:
        connection.set_progress_handler(None, 0)


class LoopReader:
    """A read-only connection to the database of one aiosqlite connection, made with the
    same settings (its connector) and only ever used on the thread that made it: the
    event loop's."""

    def __init__(self, connector: Callable[[], sqlite3.Connection]) -> None:
        self.thread = threading.get_ident()
        self.connection = open_reader(connector)
        self.slow: set[str] = set()

    def read(self, operation: str, parameters: Any
             ) -> tuple[Any, list[Any], int, int | None] | None:
        """The statement's results, or None: give it to the thread."""
        if operation in self.slow or threading.get_ident() != self.thread:
            return None
        try:
            with read_budget(self.connection):
                return _run(self.connection, operation, parameters, False)
        except sqlite3.Error as error:
            if interrupted(error) and len(self.slow) < SLOW_KEPT:
                self.slow.add(operation)
            return None

    def close(self) -> None:
        self.connection.close()


# By aiosqlite connection: the adapter class has no room for it (its __slots__ are fixed,
# and OneHopConnection takes its layout by __class__ assignment).
_readers: weakref.WeakKeyDictionary[Any, LoopReader] = weakref.WeakKeyDictionary()


def loop_reader(connection: Any) -> LoopReader | None:
    """connection's LoopReader, made on first use; None if one cannot be made here."""
    reader = _readers.get(connection)
    if reader is None:
        try:
            reader = LoopReader(connection._connector)
        except (sqlite3.Error, AttributeError):
            return None
        _readers[connection] = reader
    return reader


class LoopWriter:
    """The event loop's use of one aiosqlite connection's own sqlite3 connection for
    writes, on the thread that made it only. ``own_end``: no write of the current
    transaction went to aiosqlite's thread, so its end is done here too."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.thread = threading.get_ident()
        self.connection = connection
        # the connection's wait for a lock held elsewhere, restored after each write here
        row = connection.execute("PRAGMA busy_timeout").fetchone()
        self.busy_timeout_ms = int(row[0]) if row else 0
        self.slow: set[str] = set()
        self.own_end = False

    def usable(self) -> bool:
        return threading.get_ident() == self.thread

    def write(self, operation: str, parameters: Any
              ) -> tuple[Any, list[Any], int, int | None] | None:
        """The statement's results, or None: give it to the thread (nothing of it done)."""
        connection = self.connection
        first = not connection.in_transaction
        if first:
            self.own_end = False  # a new transaction: nothing of it done anywhere yet
        if not self.usable() or operation in self.slow or not (first or self.own_end):
            self.own_end = False
            return None
        # Before the budget's handler: SQLite checks it whenever a reused statement's
        # count of instructions crosses the interval, and an interrupted PRAGMA here
        # would fail the request instead of sending its write to the thread.
        connection.execute("PRAGMA busy_timeout=0").close()
        deadline = budget_clock() + LOOP_WRITE_BUDGET_S
        over = False

        def past_budget() -> bool:
            # what the statement itself does past the budget (not a pause of the disk's)
            nonlocal over
            over = over or budget_clock() > deadline
            return over and first  # interrupted (undone) only if nothing else is lost

        try:
            connection.set_progress_handler(past_budget, PROGRESS_EVERY)
            done = _run(connection, operation, parameters, False)
        except sqlite3.Error as error:
            if not (first and (interrupted(error) or locked(error))):
                # what the thread would answer, the transaction as SQLite left it (a
                # failed statement undoes only itself): what there is of it was done here
                self.own_end = connection.in_transaction
                raise
            # the transaction's only statement: nothing is lost in undoing it
            connection.rollback()
            if interrupted(error) and len(self.slow) < SLOW_KEPT:
                self.slow.add(operation)
            self.own_end = False
            return None
        finally:
            connection.set_progress_handler(None, 0)
            connection.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}").close()
        if over and len(self.slow) < SLOW_KEPT:
            self.slow.add(operation)
        self.own_end = True
        return done

    def gave_to_thread(self) -> None:
        """A write of the current transaction went to the thread: so will its end."""
        self.own_end = False

    def end(self, commit: bool) -> bool:
        """End the transaction here if all its writes were done here; False: not done."""
        if not (self.own_end and self.usable()):
            return False
        self.own_end = False
        if commit:
            self.connection.commit()
        else:
            self.connection.rollback()
        return True


# None: this connection's sqlite3 connection cannot be used here (opened with the
# same-thread check, by an engine other than create_engine's); asked once.
_writers: weakref.WeakKeyDictionary[Any, LoopWriter | None] = weakref.WeakKeyDictionary()


def loop_writer(connection: Any) -> LoopWriter | None:
    """connection's LoopWriter, made on first use on the loop's thread."""
    if connection in _writers:
        return _writers[connection]
    try:
        writer: LoopWriter | None = LoopWriter(connection._conn)
    except (sqlite3.Error, ValueError, AttributeError):
        writer = None
    _writers[connection] = writer
    return writer


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ("_arraysize", "_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: Any) -> None:
        # no aiosqlite cursor (opening one is a hop): each execute opens and closes its own
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> Any:
        return self._lastrowid

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    async def _async_soft_close(self) -> None:
        return None  # the cursor was closed with its statement; the rows are kept

    def close(self) -> None:
        self._rows.clear()

    async def _one_hop(self, operation: Any, parameters: Any, many: bool) -> None:
        async with self._adapt_connection._execute_mutex:
            done = None
            if not many and is_read(operation) and not self._connection._conn.in_transaction:
                reader = loop_reader(self._connection)
                if reader is not None:
                    done = reader.read(operation, parameters)
            elif not many and is_write(operation):
                writer = loop_writer(self._connection)
                if writer is not None:
                    done = writer.write(operation, parameters)
            elif not is_read(operation):
                writer = _writers.get(self._connection)
                if writer is not None:
                    writer.gave_to_thread()
            if done is None:
                # aiosqlite's own queue (what its cursor methods go through), so the call
                # is ordered with every other on this connection (commit, rollback, close)
                done = await self._connection._execute(
                    _run, self._connection._conn, operation, parameters, many)
            description, rows, rowcount, lastrowid = done
        self._description, self._rowcount, self._lastrowid = description, rowcount, lastrowid
        self._rows = collections.deque(rows)

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        try:
            return await_(self._one_hop(operation, parameters, False))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        try:
            return await_(self._one_hop(operation, seq_of_parameters, True))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def nextset(self) -> None:
        raise NotImplementedError("SQLite has no result sets beyond the first")

    def setinputsizes(self, *inputsizes: Any) -> None:
        return None


class OneHopConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneHopCursor

    # sqlite3 (legacy transaction control, what the adapter uses) opens a transaction
    # only before a write, and its commit() and rollback() do nothing outside one. A
    # read-only unit of work (each request's token check, a long-poll's read) therefore
    # has nothing to end: answered here without the hop to aiosqlite's thread. No
    # statement of this connection is in flight at that point (each was awaited), so the
    # flag read is settled.

    def _idle(self) -> bool:
        connection = self._connection._connection
        return connection is not None and not connection.in_transaction

    def _ended_on_loop(self, commit: bool) -> bool:
        writer = _writers.get(self._connection)
        if writer is None:
            return False
        try:
            return writer.end(commit)
        except Exception as error:
            self._handle_exception(error)
            return True  # not reached: _handle_exception raises

    def commit(self) -> None:
        if not self._idle() and not self._ended_on_loop(True):
            super().commit()

    def rollback(self) -> None:
        if not self._idle() and not self._ended_on_loop(False):
            super().rollback()

    def close(self) -> None:
        _writers.pop(self._connection, None)
        reader = _readers.pop(self._connection, None)
        if reader is not None:
            reader.close()
        super().close()


def supported(sqlalchemy_version: str) -> bool:
    """The adapter's internals this module builds on are SQLAlchemy 2.1's (2.0's aiosqlite
    adapter is a class of its own, pyproject allows >= 2.0.30): on any other series the
    adapter's own cursors stay, slower but correct."""
    return sqlalchemy_version.split(".")[:2] == ["2", "1"]


SUPPORTED = supported(sqlalchemy.__version__)


def use_one_hop_cursors(dbapi_connection: Any, _record: Any) -> None:
    """A "connect" listener: this connection's default cursors are OneHopCursor (the
    adapter's class is the one place it picks its cursor class from)."""
    if SUPPORTED and type(dbapi_connection) is AsyncAdapt_aiosqlite_connection:
        dbapi_connection.__class__ = OneHopConnection
