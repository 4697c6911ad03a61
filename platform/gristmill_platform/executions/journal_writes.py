"""How the journal (executions/journal.py) writes a batch: one transaction, Core statements
on a synchronous connection facade, the same code on every database.

On SQLite, through the async driver, each statement and the commit are a round trip to
the driver's thread: a batch lasted several milliseconds, interleaved with the calls in
flight, each of which then waited for it (measured, docs/performance-log.md#latency). So:

* the usual batch, executions that ended since the last one (and their logs), is turned
  into plain rows on the event loop, with SQLAlchemy's own converters for each column, and
  inserted by a thread of the journal's own (SqliteInserts): the loop does not wait for
  SQLite. The thread inserts a slice of rows at a time (INSERT_SLICE), each at a moment
  with no call in flight (the journal's pause): inserting a whole batch at once competed
  with the calls for the interpreter lock and the CPUs, and was most of the warm calls'
  p99;
* any other batch (running executions, tokens, updates, the barrier's) goes through a
  connection of the journal's own, synchronously on the event loop, in well under a
  millisecond. That connection never waits for the database lock: if another
  transaction holds it, the batch goes through the async driver, which waits without
  blocking the loop.

PostgreSQL batches always use the async driver, which has no thread."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Dialect, Engine, Table, bindparam, event, insert, select, update
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from gristmill_platform.db.engine import apply_pragmas, sqlite_pragmas
from gristmill_platform.db.models.auth import SdkToken
from gristmill_platform.db.models.deployments import Deployment
from gristmill_platform.db.models.executions import Execution, ExecutionLog
from gristmill_platform.db.models.steps import Pipeline
from gristmill_platform.db.urls import is_sqlite, sqlite_file, sync_url
from gristmill_platform.executions import transitions as t

log = logging.getLogger("gristmill.journal")

# Core tables: executemany of plain rows, no ORM bookkeeping
EXECUTIONS = cast(Table, Execution.__table__)
TOKENS = cast(Table, SdkToken.__table__)
LOGS = cast(Table, ExecutionLog.__table__)
COLUMNS = tuple(c.key for c in EXECUTIONS.columns)
LOG_COLUMNS = ("execution_id", "seq", "timestamp", "stream", "message")  # id: the database's
# pipeline_id is set at creation and never changes, except by the pipeline's deletion
# (ON DELETE SET NULL): writing it again would write a deleted pipeline's id back, which
# the foreign key refuses, and the row with it (pipeline_name is what reads show)
_UPDATED = tuple(c for c in COLUMNS if c not in ("id", "pipeline_id"))


@dataclass
class Batch:
    rows: list[dict[str, Any]]
    logs: list[dict[str, Any]]
    tokens: list[dict[str, Any]]
    revoked: dict[str, datetime]  # token id -> when
    written_before: set[str]  # executions already in the database
    token_owner: dict[str, str]  # written execution tokens -> execution id
    known_deployments: set[str]  # seen to exist: no need to look again
    known_pipelines: set[str] = field(default_factory=set)  # as known_deployments


@dataclass
class Written:
    confirmed_deployments: set[str] = field(default_factory=set)
    confirmed_pipelines: set[str] = field(default_factory=set)
    kept: set[str] = field(default_factory=set)  # executions written
    tokens: list[dict[str, Any]] = field(default_factory=list)  # token rows written


def write_batch(connection: Connection, batch: Batch) -> Written:
    """Write a batch in the connection's transaction."""
    written = Written()
    rows = batch.rows
    fresh = [r for r in rows if r["id"] not in batch.written_before]
    known = [r for r in rows if r["id"] in batch.written_before]
    wanted = {r["deployment_id"] for r in fresh}
    if fresh and not wanted <= batch.known_deployments:
        # deleted since: its executions went with it
        written.confirmed_deployments = set(connection.scalars(
            select(Deployment.id).where(Deployment.id.in_(wanted))).all())
        fresh = [r for r in fresh if r["deployment_id"] in written.confirmed_deployments]
    unknown_pipelines = {r["pipeline_id"] for r in fresh} - batch.known_pipelines - {None}
    if unknown_pipelines:
        # A pipeline deleted while its execution ran: the execution is still written, as
        # the deletion left the executions already written (ON DELETE SET NULL).
        written.confirmed_pipelines = set(connection.scalars(
            select(Pipeline.id).where(Pipeline.id.in_(unknown_pipelines))).all())
        gone = unknown_pipelines - written.confirmed_pipelines
        fresh = [{**r, "pipeline_id": None} if r["pipeline_id"] in gone else r
                 for r in fresh]
    if known:
        # deleted meanwhile, or ended by someone else (cancelled, reconciled)
        still = set(connection.scalars(select(Execution.id).where(
            Execution.id.in_([r["id"] for r in known]),
            Execution.status.in_(t.ACTIVE))).all())
        known = [r for r in known if r["id"] in still]
    if fresh:
        connection.execute(insert(EXECUTIONS), fresh)
    if known:
        connection.execute(
            update(EXECUTIONS).where(EXECUTIONS.c.id == bindparam("key"))
            .values({c: bindparam(c) for c in _UPDATED}),
            [{"key": r["id"], **{c: r[c] for c in _UPDATED}} for r in known])
    written.kept = {r["id"] for r in (*fresh, *known)}
    # An execution token is written only for an execution still running: one that ended
    # before its first write has no use for it (had it been used, the lookup's
    # transaction would have written it first, see TrackingJournal.barrier).
    running = {r["id"] for r in fresh if r["status"] in t.ACTIVE}
    written.tokens = [token for token in batch.tokens if token["execution_id"] in running]
    if written.tokens:
        connection.execute(insert(TOKENS), written.tokens)
    revoke = [{"key": key, "revoked_at": when} for key, when in batch.revoked.items()
              if batch.token_owner.get(key) in batch.written_before]
    if revoke:
        connection.execute(
            update(TOKENS).where(TOKENS.c.id == bindparam("key"),
                                 TOKENS.c.revoked_at.is_(None))
            .values(revoked_at=bindparam("revoked_at")), revoke)
    logs = [line for line in batch.logs if line["execution_id"] in written.kept]
    if logs:
        connection.execute(insert(LOGS), logs)
    return written


def only_inserts(batch: Batch) -> bool:
    """Whether writing the batch is inserting its rows and their logs, nothing else: no
    row written before, no token to write or revoke. (Rows whose deployment is not known
    to exist are dropped if it is gone, as write_batch does: SqliteInserts looks for them
    in its own transaction.)"""
    if any(r["id"] in batch.written_before or r["status"] in t.ACTIVE for r in batch.rows):
        return False
    return not any(batch.token_owner.get(key) in batch.written_before
                   for key in batch.revoked)


class _Insert:
    """An INSERT of some of a table's columns, as plain rows in SQLite's terms."""

    def __init__(self, table: Table, columns: tuple[str, ...], dialect: Dialect) -> None:
        compiled = insert(table).values({c: bindparam(c) for c in columns}).compile(
            dialect=dialect)
        self.sql = str(compiled)
        order = compiled.positiontup or columns
        # the converters SQLAlchemy applies (JSON, UTC datetimes): the same stored values
        self._columns = [(name, table.c[name].type.dialect_impl(dialect)
                          .bind_processor(dialect)) for name in order]

    def position(self, column: str) -> int:
        """Where a column's value is in the rows of ``rows``."""
        return next(n for n, (name, _) in enumerate(self._columns) if name == column)

    def rows(self, values: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        columns = self._columns
        return [tuple(convert(row[name]) if convert is not None else row[name]
                      for name, convert in columns) for row in values]


# Waits for a moment to go on; False: go on without pausing again (a request waits)
Pause = Callable[[], Awaitable[bool]]
# Rows converted between two pauses: about a fifth of a millisecond on the 2-CPU machine
# of docs/performance-log.md.
CONVERT_SLICE = 8
# Rows inserted by the journal's thread between two pauses: with 8, the batch took so long
# that API requests (whose transactions wait for it) were slower under warm load; 32 and 64
# gave the same gain on the warm calls' tail, and API requests as before
# (bench/warm_tail.py, docs/performance-log.md#latency).
INSERT_SLICE = 32


# which of a JSON list of deployment (pipeline) ids exist (one statement whatever their
# number)
_EXISTING_DEPLOYMENTS = (f"SELECT id FROM {Deployment.__tablename__} "  # noqa: S608 - a constant
                         "WHERE id IN (SELECT value FROM json_each(?))")
_EXISTING_PIPELINES = (f"SELECT id FROM {Pipeline.__tablename__} "  # noqa: S608 - a constant
                       "WHERE id IN (SELECT value FROM json_each(?))")


async def _no_pause() -> bool:
    await asyncio.sleep(0)
    return True


class Slices:
    """A batch's work a slice at a time, with a pause before each slice but the first
    (unless asked): once a pause answers False, a request waits for the batch, and the
    rest goes in one piece, without pausing again (for every step of the batch that
    shares this object)."""

    def __init__(self, pause: Pause) -> None:
        self._pause = pause
        self.urgent = False

    async def over(self, count: int, size: int, *, pause_first: bool = False
                   ) -> AsyncIterator[slice]:
        start = 0
        while start < count:
            if (start or pause_first) and not self.urgent:
                self.urgent = not await self._pause()
            step = count - start if self.urgent else size
            yield slice(start, start + step)
            start += step


class SqliteInserts:
    """The usual batch on SQLite, written by a thread of its own (see the module's
    docstring)."""

    def __init__(self, path: str, dialect: Dialect, pause: Pause = _no_pause,
                 pragmas: tuple[str, ...] = sqlite_pragmas()) -> None:
        self._path = path
        self._pause = pause
        # as the service's connections (db/engine.py): this thread may wait for the lock
        self._pragmas = pragmas
        self._executions = _Insert(EXECUTIONS, COLUMNS, dialect)
        self._logs = _Insert(LOGS, LOG_COLUMNS, dialect)
        self._thread = ThreadPoolExecutor(max_workers=1,
                                          thread_name_prefix="gristmill-journal")
        self._one_at_a_time = asyncio.Lock()
        self._connection: sqlite3.Connection | None = None  # the thread's own
        self._deployment_at = self._executions.position("deployment_id")
        self._pipeline_at = self._executions.position("pipeline_id")
        self._id_at = self._executions.position("id")
        self._log_owner_at = self._logs.position("execution_id")

    async def write(self, batch: Batch) -> Written:
        # Converted a slice at a time, with a pause between slices (the journal's: until
        # no call is in flight), so that a call never waits for a whole batch's
        # conversion, only for a slice.
        slices = Slices(self._pause)
        executions: list[tuple[Any, ...]] = []
        async for part in slices.over(len(batch.rows), CONVERT_SLICE):
            executions.extend(self._executions.rows(batch.rows[part]))
        logs = self._logs.rows(batch.logs)
        # Deployments not seen to exist lately (another process may have deleted them) are
        # looked for by the thread, in the insert's transaction: on the loop, through
        # write_batch, that look made a batch of a few hundred rows block the loop for
        # ~10 ms once every DEPLOYMENTS_RECHECK_S (traced, docs/performance-log.md#latency).
        unknown = {r["deployment_id"] for r in batch.rows} - batch.known_deployments
        pipelines = {r["pipeline_id"] for r in batch.rows} - batch.known_pipelines - {None}
        async with self._one_at_a_time:  # the thread's transaction spans the slices
            loop = asyncio.get_running_loop()
            confirmed, confirmed_pipelines, executions, logs = await loop.run_in_executor(
                self._thread, self._begin, executions, logs, unknown, pipelines)
            try:
                for rows, sql in ((executions, self._executions.sql),
                                  (logs, self._logs.sql)):
                    async for part in slices.over(len(rows), INSERT_SLICE, pause_first=True):
                        await loop.run_in_executor(self._thread, self._insert, sql, rows[part])
                await loop.run_in_executor(self._thread, self._end, "COMMIT")
            except BaseException:
                # (cancelled too: the thread runs it after the slice it may be inserting)
                with contextlib.suppress(RuntimeError):  # closed: the connection goes too
                    self._thread.submit(self._end, "ROLLBACK")
                raise
        gone = unknown - confirmed
        kept = {r["id"] for r in batch.rows if r["deployment_id"] not in gone}
        return Written(confirmed_deployments=confirmed, kept=kept,
                       confirmed_pipelines=confirmed_pipelines)

    def _begin(self, executions: list[tuple[Any, ...]], logs: list[tuple[Any, ...]],
               unknown: set[Any], pipelines: set[Any]
               ) -> tuple[set[Any], set[Any], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Open the batch's transaction and keep the rows whose deployment exists, without
        the id of a pipeline deleted meanwhile (as write_batch); returns which of the
        unknown deployments and pipelines exist (a deployment deleted since: its
        executions went with it), and the rows to insert."""
        connection = self._connection
        if connection is None:
            connection = self._connection = sqlite3.connect(self._path, isolation_level=None)
            for pragma in self._pragmas:
                connection.execute(f"PRAGMA {pragma}")
        connection.execute("BEGIN IMMEDIATE")
        try:
            confirmed: set[Any] = set()
            if unknown:
                confirmed = {found for (found,) in connection.execute(
                    _EXISTING_DEPLOYMENTS, (json.dumps(sorted(unknown, key=str)),))}
                gone = unknown - confirmed
                if gone:
                    dropped = {row[self._id_at] for row in executions
                               if row[self._deployment_at] in gone}
                    executions = [row for row in executions
                                  if row[self._deployment_at] not in gone]
                    logs = [row for row in logs if row[self._log_owner_at] not in dropped]
            confirmed_pipelines: set[Any] = set()
            if pipelines:
                confirmed_pipelines = {found for (found,) in connection.execute(
                    _EXISTING_PIPELINES, (json.dumps(sorted(pipelines, key=str)),))}
                gone_pipelines = pipelines - confirmed_pipelines
                if gone_pipelines:  # (those known to exist were not looked for)
                    at = self._pipeline_at
                    executions = [(*row[:at], None, *row[at + 1:])
                                  if row[at] in gone_pipelines else row
                                  for row in executions]
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return confirmed, confirmed_pipelines, executions, logs

    def _insert(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        assert self._connection is not None  # opened by _begin
        self._connection.executemany(sql, rows)

    def _end(self, statement: str) -> None:
        if self._connection is not None and self._connection.in_transaction:
            self._connection.execute(statement)

    def close(self) -> None:
        def close_connection() -> None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

        self._thread.submit(close_connection)
        self._thread.shutdown(wait=True)


class BatchWriter:
    def __init__(self, engine: AsyncEngine, database_url: str, pause: Pause = _no_pause,
                 *, automatic_checkpoints: bool = True) -> None:
        self._engine = engine
        self._direct: Engine | None = None
        self._inserts: SqliteInserts | None = None
        if is_sqlite(database_url):
            self._direct = create_sync_engine(sync_url(database_url))
            event.listen(self._direct, "connect", _never_wait(sqlite_pragmas(
                busy_timeout_ms=0, automatic_checkpoints=automatic_checkpoints)))
            event.listen(self._direct, "begin",
                         lambda connection: connection.exec_driver_sql("BEGIN IMMEDIATE"))
            path = sqlite_file(database_url)
            if path is not None:
                self._inserts = SqliteInserts(path, self._direct.dialect, pause, sqlite_pragmas(
                    automatic_checkpoints=automatic_checkpoints))

    async def write(self, batch: Batch) -> Written:
        if self._inserts is not None and only_inserts(batch):
            try:
                return await self._inserts.write(batch)
            except sqlite3.Error:
                # a row refused (its pipeline deleted meanwhile, say): the general path
                # finds out which, and the journal writes the others one by one
                log.debug("journal insert of %d rows refused; using the general path",
                          len(batch.rows), exc_info=True)
        if self._direct is not None:
            try:
                with self._direct.begin() as connection:
                    return write_batch(connection, batch)
            except OperationalError as exc:
                if "locked" not in str(exc.orig) and "busy" not in str(exc.orig):
                    raise
                # another transaction holds the lock: wait for it off the loop
        async with self._engine.begin() as connection:
            return await connection.run_sync(write_batch, batch)

    def close(self) -> None:
        if self._inserts is not None:
            self._inserts.close()
        if self._direct is not None:
            self._direct.dispose()


def _never_wait(pragmas: tuple[str, ...]) -> Callable[[Any, Any], None]:
    # The same settings as the service's connections (db/engine.py), except the wait for
    # the lock (pragmas: busy_timeout=0): this one runs on the event loop, which must
    # never block on it. BEGIN IMMEDIATE takes the lock at once, so a batch fails before
    # it writes anything.
    settings = apply_pragmas(pragmas)

    def apply(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None
        settings(dbapi_connection, record)

    return apply
