"""Write-behind tracking for low-latency executions.

A warm worker answers in a fraction of a millisecond; three transactions per execution
(created, started, ended) cost ten times that. Executions on the fast path
(executions/low_latency.py) are kept in memory while they run and written here in
batches: every FLUSH_INTERVAL_S at most, in one transaction, whatever their number.

Nothing reads a stale database because of it in this process: every transaction opened
through deps.transaction() first writes what the journal holds (`barrier`), so the
execution a caller was just answered about is in the database before any query looks
for it. Another control service process sharing the database sees it once the batch is
written (under FLUSH_INTERVAL_S plus a write). What a crash of this process can lose is
the tracking of the executions answered in the last FLUSH_INTERVAL_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, bindparam, insert, select, update

from gristmill_platform.db import changes
from gristmill_platform.db.models.auth import SdkToken
from gristmill_platform.db.models.deployments import Deployment
from gristmill_platform.db.models.executions import Execution, ExecutionLog
from gristmill_platform.executions import transitions as t
from gristmill_platform.executions.records import ExecutionRecord

if TYPE_CHECKING:
    from gristmill_platform.state import AppState

log = logging.getLogger("gristmill.journal")

FLUSH_INTERVAL_S = 0.05
# A batch this large is written at once, without waiting for the interval.
FLUSH_BATCH = 500
DEPLOYMENTS_RECHECK_S = 5.0
# Core tables: executemany of plain rows, no ORM bookkeeping
EXECUTIONS = cast(Table, Execution.__table__)
TOKENS = cast(Table, SdkToken.__table__)
LOGS = cast(Table, ExecutionLog.__table__)
_COLUMNS = tuple(c.key for c in EXECUTIONS.columns)
_UPDATED = tuple(c for c in _COLUMNS if c != "id")


def _row(execution: ExecutionRecord) -> dict[str, Any]:
    return {column: getattr(execution, column) for column in _COLUMNS}


class TrackingJournal:
    def __init__(self, state: AppState) -> None:
        self.state = state
        self._executions: dict[str, ExecutionRecord] = {}  # changed since the last write
        self._logs: list[dict[str, Any]] = []
        self._tokens: list[dict[str, Any]] = []
        self._revoked: dict[str, datetime] = {}  # token id -> when
        self._written: set[str] = set()  # executions in the database that may still change
        self._token_owner: dict[str, str] = {}  # written execution tokens -> execution id
        self._alive_deployments: set[str] = set()
        self._deployments_version = -1
        self._deployments_at = 0.0
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def pending(self) -> bool:
        return bool(self._executions or self._logs or self._tokens or self._revoked)

    # -- recording (no I/O: called on the request path) --------------------------------------

    def created(self, execution: ExecutionRecord, token: dict[str, Any]) -> None:
        """A new execution and its execution token's sdk_tokens row."""
        self._executions[execution.id] = execution
        self._tokens.append(token)
        self._poke()

    def changed(self, execution: ExecutionRecord) -> None:
        self._executions[execution.id] = execution
        self._poke()

    def ended(self, execution: ExecutionRecord, logs: Sequence[dict[str, Any]], token_id: str,
              when: datetime) -> None:
        self._executions[execution.id] = execution
        self._logs.extend(logs)
        self._revoked[token_id] = when
        self._poke()

    def _poke(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._flush_forever())
        if len(self._executions) + len(self._logs) // 20 >= FLUSH_BATCH:
            self._wake.set()

    # -- writing ------------------------------------------------------------------------------

    async def barrier(self) -> None:
        """Write what is pending now, and wait for a batch being written (see the module's
        docstring)."""
        if self.pending or self._lock.locked():
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            if not self.pending:
                return
            # rows copied now: executions keep changing while the batch is written
            rows = [_row(e) for e in self._executions.values()]
            self._executions = {}
            logs, self._logs = self._logs, []
            tokens, self._tokens = self._tokens, []
            revoked, self._revoked = self._revoked, {}
            try:
                await self._write(rows, logs, tokens, revoked)
            except Exception:
                # One bad row (say, its owner was deleted meanwhile) must not take the
                # others with it: write them one at a time, drop what still fails.
                log.exception("writing %d tracked executions failed; retrying one by one",
                              len(rows))
                for row in rows:
                    own = [x for x in tokens if x["execution_id"] == row["id"]]
                    try:
                        await self._write(
                            [row], [x for x in logs if x["execution_id"] == row["id"]], own,
                            {x["id"]: revoked[x["id"]] for x in own if x["id"] in revoked})
                    except Exception:
                        log.exception("dropped the tracking of execution %s", row["id"])

    async def _write(self, rows: list[dict[str, Any]], logs: list[dict[str, Any]],
                     tokens: list[dict[str, Any]], revoked: dict[str, datetime]) -> None:
        written_before = set(self._written)
        # a connection, not an ORM session: nothing here needs one, and it costs
        async with self.state.engine.begin() as session:
            fresh = [r for r in rows if r["id"] not in written_before]
            known = [r for r in rows if r["id"] in written_before]
            confirmed: set[str] = set()
            wanted = {r["deployment_id"] for r in fresh}
            if fresh and not wanted <= self._known_deployments():
                # deleted since: its executions went with it
                confirmed = set((await session.scalars(select(Deployment.id).where(
                    Deployment.id.in_(wanted)))).all())
                fresh = [r for r in fresh if r["deployment_id"] in confirmed]
            if known:
                # deleted meanwhile, or ended by someone else (cancelled, reconciled)
                still = set((await session.scalars(select(Execution.id).where(
                    Execution.id.in_([r["id"] for r in known]),
                    Execution.status.in_(t.ACTIVE)))).all())
                known = [r for r in known if r["id"] in still]
            if fresh:
                await session.execute(insert(EXECUTIONS), fresh)
            if known:
                await session.execute(
                    update(EXECUTIONS).where(EXECUTIONS.c.id == bindparam("key"))
                    .values({c: bindparam(c) for c in _UPDATED}),
                    [{"key": r["id"], **{c: r[c] for c in _UPDATED}} for r in known])
            kept = {r["id"] for r in (*fresh, *known)}
            # logs of executions written in an earlier batch and unchanged since
            kept |= written_before - {r["id"] for r in rows}
            # An execution token is written only for an execution still running: one that
            # ended before its first write has no use for it (had it been used, the
            # lookup's transaction would have written it first, see barrier()).
            running = {r["id"] for r in fresh if r["status"] in t.ACTIVE}
            tokens = [token for token in tokens if token["execution_id"] in running]
            if tokens:
                await session.execute(insert(TOKENS), tokens)
            revoke = [{"key": key, "revoked_at": when} for key, when in revoked.items()
                      if self._token_owner.get(key) in written_before]
            if revoke:
                await session.execute(
                    update(TOKENS).where(TOKENS.c.id == bindparam("key"),
                                         TOKENS.c.revoked_at.is_(None))
                    .values(revoked_at=bindparam("revoked_at")), revoke)
            logs = [line for line in logs if line["execution_id"] in kept]
            if logs:
                await session.execute(insert(LOGS), logs)
        self._alive_deployments |= confirmed  # only once written: a retry checks again
        for token in tokens:
            self._token_owner[token["id"]] = token["execution_id"]
        for key in revoked:
            self._token_owner.pop(key, None)
        # what may still change is updated next time; what ended or was dropped is done
        for row in rows:
            if row["status"] in t.ACTIVE and row["id"] in kept:
                self._written.add(row["id"])
            else:
                self._written.discard(row["id"])

    def _known_deployments(self) -> set[str]:
        """Deployments seen to exist, with no deletion since: through this process (seen
        at once, db/changes.py) or through another one (forgotten every
        DEPLOYMENTS_RECHECK_S)."""
        now = time.monotonic()
        current = changes.version(Deployment)
        if current != self._deployments_version or now - self._deployments_at > \
                DEPLOYMENTS_RECHECK_S:
            self._alive_deployments = set()
            self._deployments_version, self._deployments_at = current, now
        return self._alive_deployments

    async def _flush_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FLUSH_INTERVAL_S)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("could not write tracked executions")

    async def shutdown(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        await self.flush()
