"""How the journal (executions/journal.py) writes a batch: one transaction, Core statements
on a synchronous connection facade, the same code on every database.

On SQLite the batch goes through a connection of its own, synchronously, on the event
loop: a batch of a few rows takes well under a millisecond there, while through the
async driver each statement and the commit are a round trip to its thread, and the batch
lasts several milliseconds, interleaved with the calls in flight, each of which then
waits for it (measured, docs/deployments.md#latency). The connection never waits for the
database lock: if another transaction holds it, the batch goes through the async driver,
which waits without blocking the loop. PostgreSQL batches always use the async driver,
which has no thread."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, bindparam, event, insert, select, update
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from gristmill_platform.db.models.auth import SdkToken
from gristmill_platform.db.models.deployments import Deployment
from gristmill_platform.db.models.executions import Execution, ExecutionLog
from gristmill_platform.db.urls import is_sqlite, sync_url
from gristmill_platform.executions import transitions as t

log = logging.getLogger("gristmill.journal")

# Core tables: executemany of plain rows, no ORM bookkeeping
EXECUTIONS = cast(Table, Execution.__table__)
TOKENS = cast(Table, SdkToken.__table__)
LOGS = cast(Table, ExecutionLog.__table__)
COLUMNS = tuple(c.key for c in EXECUTIONS.columns)
_UPDATED = tuple(c for c in COLUMNS if c != "id")


@dataclass
class Batch:
    rows: list[dict[str, Any]]
    logs: list[dict[str, Any]]
    tokens: list[dict[str, Any]]
    revoked: dict[str, datetime]  # token id -> when
    written_before: set[str]  # executions already in the database
    token_owner: dict[str, str]  # written execution tokens -> execution id
    known_deployments: set[str]  # seen to exist: no need to look again


@dataclass
class Written:
    confirmed_deployments: set[str] = field(default_factory=set)
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


class BatchWriter:
    def __init__(self, engine: AsyncEngine, database_url: str) -> None:
        self._engine = engine
        self._direct: Engine | None = None
        if is_sqlite(database_url):
            self._direct = create_sync_engine(sync_url(database_url))
            event.listen(self._direct, "connect", _never_wait)
            event.listen(self._direct, "begin",
                         lambda connection: connection.exec_driver_sql("BEGIN IMMEDIATE"))

    async def write(self, batch: Batch) -> Written:
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
        if self._direct is not None:
            self._direct.dispose()


def _never_wait(dbapi_connection: Any, _record: Any) -> None:
    # The same settings as the service's connections (db/engine.py), except the wait for
    # the lock: this one runs on the event loop, which must never block on it. BEGIN
    # IMMEDIATE takes the lock at once, so a batch fails before it writes anything.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=0")
    cursor.close()
