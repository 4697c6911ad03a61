"""Reads outside any transaction, done on the event loop itself on SQLite.

Each request's token check, each long-poll's read and each elastic launch's read is one
Core SELECT by one key (a ``Read``, run by Transactions.read). Through the async engine
that statement already ran on the event loop's thread (db/sqlite_cursor.py: LoopReader),
yet SQLAlchemy around it cost many times the statement: its asyncio layer (a greenlet for
the checkout, one for the execute, one for the close, a task to shield the close), then
its execution of a compiled statement, some hundreds of Python calls. In the service,
where each read comes after other work, those calls run on cold CPU caches: 300 us a
read, against 40 us for the same read done back to back (profiled,
docs/performance-log.md). So here the statement is compiled once for SQLite
(PreparedRead: its SQL, its parameters' order, its columns' result processors, all
SQLAlchemy's own) and run on a plain sqlite3 connection to the same file, one per
thread, read-only, never waiting for a lock: about 100 us after other work.

The read is given back (Transactions.read then runs the same statement on the async
engine, as before) when it cannot be done at once: a lock held elsewhere kept it out
(busy_timeout=0), its own work ran past LOOP_READ_BUDGET_S (interrupted; that read is
remembered and always given back after), or any other database error (the async engine
then raises the real one). PostgreSQL and SQLite in memory have no LoopReads.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

from sqlalchemy import Select
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import Dialect

from gristmill_platform.db.sqlite_cursor import (
    SLOW_KEPT,
    interrupted,
    open_reader,
    read_budget,
)
from gristmill_platform.db.urls import sqlite_file

if TYPE_CHECKING:
    from typing import TypeAlias

    from typing_extensions import Unpack

    AnySelect: TypeAlias = Select[Unpack[tuple[Any, ...]]]

T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class Read(Generic[T]):
    """A SELECT by one key (bound as ``key``; None: a statement without parameters), and
    what its rows mean: ``shape`` gets the first row (None if there is none), or every
    row with ``many``. The same on the loop and on the async engine: rows are tuples of
    the columns in their order."""

    statement: AnySelect
    shape: Callable[[Any], T]
    key: str | None
    many: bool = False

    def parameters(self, key: str) -> dict[str, str]:
        return {} if self.key is None else {self.key: key}


class GivenBack:
    """What LoopReads.run returns for a read it did not do."""


GIVEN_BACK: Final = GivenBack()

@dataclass
class PreparedRead:
    """A Read compiled once for SQLite, with SQLAlchemy's own compiler and type
    processors: what SQLAlchemy does on each execution, done once."""

    sql: str
    bind_order: Sequence[str]
    bind_processors: Mapping[str, Callable[[Any], Any]]
    result_processors: Sequence[Callable[[Any], Any] | None]

    @classmethod
    def of(cls, read: Read[Any], dialect: Dialect) -> PreparedRead:
        compiled = read.statement.compile(dialect=dialect)
        binds = {name: bind.type.dialect_impl(dialect).bind_processor(dialect)
                 for name, bind in compiled.binds.items()}
        return cls(
            sql=str(compiled),
            bind_order=tuple(compiled.positiontup or ()),
            bind_processors={name: p for name, p in binds.items() if p is not None},
            result_processors=[column.type.dialect_impl(dialect).result_processor(dialect, None)
                               for column in read.statement.selected_columns])

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        processors = self.bind_processors
        return tuple(processors[name](values[name]) if name in processors else values[name]
                     for name in self.bind_order)

    def row(self, raw: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(value if process is None else process(value)
                     for process, value in zip(self.result_processors, raw, strict=True))


class _Connections(threading.local):
    connection: sqlite3.Connection | None = None


@dataclass
class LoopReads:
    """Read-only connections to one SQLite file, one per thread that reads (in the
    service, the event loop's), each made and used by that thread alone."""

    path: str
    dialect: Dialect = field(default_factory=SQLiteDialect_pysqlite)
    slow: set[Read[Any]] = field(default_factory=set)
    _prepared: dict[Read[Any], PreparedRead] = field(default_factory=dict)
    _local: _Connections = field(default_factory=_Connections)
    _opened: list[sqlite3.Connection] = field(default_factory=list)

    def connection(self) -> sqlite3.Connection:
        """The calling thread's connection, made on its first read."""
        connection = self._local.connection
        if connection is None:
            # the LoopReader's settings (db/sqlite_cursor.py); sqlite3's same-thread check on
            connection = open_reader(lambda: sqlite3.connect(self.path))
            self._local.connection = connection
            self._opened.append(connection)
        return connection

    def run(self, read: Read[T], key: str) -> T | GivenBack:
        """The read done here, or GIVEN_BACK (nothing of it kept)."""
        if read in self.slow:
            return GIVEN_BACK
        prepared = self._prepared.get(read)
        if prepared is None:
            prepared = self._prepared[read] = PreparedRead.of(read, self.dialect)
        try:
            connection = self.connection()
            cursor = connection.cursor()
            try:
                with read_budget(connection):
                    cursor.execute(prepared.sql, prepared.parameters(read.parameters(key)))
                    raw = cursor.fetchall() if read.many else cursor.fetchone()
            finally:
                # closed at once: a statement left open would keep its read transaction,
                # and the WAL checkpoints would wait for it
                cursor.close()
        except sqlite3.Error as error:
            if interrupted(error) and len(self.slow) < SLOW_KEPT:
                self.slow.add(read)
            return GIVEN_BACK
        if read.many:
            return read.shape([prepared.row(row) for row in raw])
        return read.shape(None if raw is None else prepared.row(raw))

    def dispose(self) -> None:
        """Close the connections (each thread's): at the service's stop, when none is in
        use."""
        for connection in self._opened:
            # one made by another thread cannot be closed here: it goes with the process
            with contextlib.suppress(sqlite3.ProgrammingError):
                connection.close()
        self._opened.clear()


def loop_reads(database_url: str) -> LoopReads | None:
    """LoopReads for a SQLite file's database; None for any other."""
    path = sqlite_file(database_url)
    return LoopReads(path) if path is not None else None
