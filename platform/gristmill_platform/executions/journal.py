"""Write-behind tracking for low-latency executions.

A warm worker answers in a fraction of a millisecond; three transactions per execution
(created, started, ended) cost ten times that. Executions on the fast path
(executions/low_latency.py) are kept in memory while they run and written here in
batches: every FLUSH_INTERVAL_S at most, in one transaction, whatever their number.

A batch holds the executions that ended, and those running for RUNNING_VISIBLE_AFTER_S
or more. A short execution is therefore written once, ended, with its logs: one INSERT
for the whole batch. Writing it while it runs would cost its execution token's row, a
check that nobody ended it meanwhile, an UPDATE and the token's revocation, four times
the batch's cost for a row that lives a few milliseconds (measured,
docs/performance-log.md#latency).

Nothing reads a stale database because of it in this process: every transaction opened
through a Transactions (db/transactions.py) first writes everything the journal holds,
running executions and their tokens included (`barrier`), so the execution a caller was
just answered about, or a step's execution token, is in the database before any query
looks for it. (Background work that reads or writes none of it opens its transactions
without the barrier, `Transactions.unfenced`; the reconciler, which reads running
executions, leaves out those this journal `holds`; a request's token check, which reads
one token's row, waits for the barrier only when this journal `holds_token` it.) Another
control service process sharing the database sees an ended execution once its batch is
written (under FLUSH_INTERVAL_S plus a write), and a running one once it has run for
RUNNING_VISIBLE_AFTER_S. What a crash of this process can lose is the tracking of the
executions answered in the last FLUSH_INTERVAL_S and of those running for less than
RUNNING_VISIBLE_AFTER_S, were it not for the spool: every ended execution is also
appended to a file before its answer leaves (executions/spool.py), and the files of a
killed process are written to the database at the next start (replay_spools). What a
crash loses is then the tracking of executions still running, which the reconciler fails
when it finds them (or never sees them, if they ran under RUNNING_VISIBLE_AFTER_S).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gristmill_platform.db import changes
from gristmill_platform.db.models.deployments import Deployment
from gristmill_platform.db.models.executions import Execution
from gristmill_platform.db.models.steps import Pipeline
from gristmill_platform.db.types import UTCDateTime, utcnow
from gristmill_platform.executions import transitions as t
from gristmill_platform.executions.journal_writes import (
    COLUMNS,
    EXECUTIONS,
    Batch,
    BatchWriter,
    Slices,
)
from gristmill_platform.executions.records import ExecutionRecord
from gristmill_platform.executions.spool import Spool, orphaned_spools, read_spool
from gristmill_platform.telemetry.metrics import JOURNAL_ROWS, JOURNAL_WRITE
from gristmill_platform.timeouts import within

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from gristmill_platform.traffic import Traffic

log = logging.getLogger("gristmill.journal")

# A batch's cost is mostly per batch (a transaction, the journal thread's hand-off), not
# per row: at 50 ms, one sequential warm call in fifty met a batch and p99 was 3.4-3.9 ms
# (p50 0.9); at 250 ms p99 is 1.2 ms (bench/endpoints.py, quiet machine, docs/performance-log.md).
FLUSH_INTERVAL_S = 0.25
# Under the reconciler's heartbeat timeout and the endpoints' result wait: what another
# process may have to wait for before it sees a running execution.
RUNNING_VISIBLE_AFTER_S = 1.0
# At most this long a batch waits for a moment with no call in flight (traffic.py).
QUIET_WAIT_S = 0.25
# At most this long each slice of a batch's conversion waits for one (journal_writes.py).
SLICE_WAIT_S = 0.005
# Executions copied into a batch between two turns of the loop (about 0.05 ms).
COPY_SLICE = 16
# A batch this large is written at once, without waiting for the interval.
FLUSH_BATCH = 500
DEPLOYMENTS_RECHECK_S = 5.0


def _row(execution: ExecutionRecord) -> dict[str, Any]:
    return {column: getattr(execution, column) for column in COLUMNS}


class TrackingJournal:
    def __init__(self, engine: AsyncEngine, database_url: str, traffic: Traffic,
                 spool: Path, *, automatic_checkpoints: bool = True) -> None:
        self.engine = engine
        self.database_url = database_url
        # False: its SQLite connections leave WAL checkpoints to db/wal_checkpoints.py
        self.automatic_checkpoints = automatic_checkpoints
        self.traffic = traffic
        self._executions: dict[str, ExecutionRecord] = {}  # changed since the last write
        self._logs: dict[str, list[dict[str, Any]]] = {}  # execution id -> rows
        self._tokens: dict[str, dict[str, Any]] = {}  # execution id -> its token's row
        self._revoked: dict[str, datetime] = {}  # token id -> when
        self._token_ids: set[str] = set()  # the ids of the rows in _tokens, until written
        self._revoking: dict[str, datetime] = {}  # the revocations being written
        self._written: set[str] = set()  # executions in the database that may still change
        self._token_owner: dict[str, str] = {}  # written execution tokens -> execution id
        self._alive_deployments: set[str] = set()
        self._alive_pipelines: set[str] = set()
        self._deployments_version = (-1, -1)
        self._deployments_at = 0.0
        self._lock = asyncio.Lock()
        self._barriers = 0  # requests waiting in barrier()
        self._wake = asyncio.Event()  # a batch is full: write it now
        self._work = asyncio.Event()  # something is pending
        self._task: asyncio.Task[None] | None = None
        self._writer: BatchWriter | None = None
        self._closed = False
        self._spool = Spool(spool)

    @property
    def backlog(self) -> int:
        """Executions recorded and not yet written (the metrics' journal backlog)."""
        return len(self._executions)

    @property
    def pending(self) -> bool:
        return bool(self._executions or self._logs or self._tokens or self._revoked)

    def holds(self, execution_id: str) -> bool:
        """Whether the execution's latest state is here rather than in the database: not
        written yet, or written while it ran and not ended there yet. It runs in this
        process, whatever its row says."""
        return execution_id in self._executions or execution_id in self._written

    def holds_token(self, token_id: str) -> bool:
        """Whether an execution token's row, or its revocation, is here rather than in the
        database: not written yet, or in the batch being written. Any other token's row
        is as the database has it (an SDK token's, an execution token's already
        written): reading it needs no barrier."""
        return token_id in self._token_ids or token_id in self._revoked \
            or token_id in self._revoking

    # -- recording (no I/O: called on the request path) --------------------------------------

    def created(self, execution: ExecutionRecord, token: dict[str, Any]) -> None:
        """A new execution and its execution token's sdk_tokens row."""
        self._executions[execution.id] = execution
        self._tokens[execution.id] = token
        self._token_ids.add(token["id"])
        self._poke()

    def changed(self, execution: ExecutionRecord) -> None:
        self._executions[execution.id] = execution
        self._poke()

    def ended(self, execution: ExecutionRecord, logs: Sequence[dict[str, Any]], token_id: str,
              when: datetime) -> None:
        self._executions[execution.id] = execution
        if logs:
            self._logs.setdefault(execution.id, []).extend(logs)
        self._revoked[token_id] = when
        try:
            # before the answer leaves (low_latency.py answers after this returns)
            self._spool.append(_row(execution))
        except OSError:
            log.exception("could not spool execution %s", execution.id)
        self._poke()

    def _poke(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._flush_forever())
        self._work.set()
        if len(self._executions) >= FLUSH_BATCH:
            self._wake.set()

    # -- writing ------------------------------------------------------------------------------

    async def barrier(self) -> None:
        """Write everything pending now, running executions included, and wait for a
        batch being written (see the module's docstring). A batch being written stops
        waiting for quiet moments between its slices meanwhile: a request is waiting."""
        if self.pending or self._lock.locked():
            self._barriers += 1
            try:
                await self.flush()
            finally:
                self._barriers -= 1

    async def flush(self, everything: bool = True) -> None:
        """Write what is pending: everything, or (the periodic batch) what is due."""
        async with self._lock:
            if not self.pending:
                return
            # every ended execution is due: the batch holds all the rotated files hold
            spooled = self._spool.rotate()
            due = list(self._executions.values()) if everything else self._due()
            revoked, self._revoked = self._revoked, {}
            self._revoking = revoked
            tokens: list[dict[str, Any]] = []
            try:
                await self._flush_taken(spooled, due, revoked, tokens, everything)
            finally:
                # written, or dropped: either way the database's answer is the one to give
                self._token_ids.difference_update(token["id"] for token in tokens)
                self._revoking = {}

    async def _flush_taken(self, spooled: list[Path], due: list[ExecutionRecord],
                           revoked: dict[str, datetime], tokens: list[dict[str, Any]],
                           everything: bool) -> None:
        """The batch taken: its rows and logs copied (``tokens`` gets their tokens'),
        then written."""
        # Rows copied now (executions keep changing while the batch is written), a
        # slice at a time for the periodic batch: a few hundred rows took over a
        # millisecond of the loop in one piece (docs/performance-log.md#latency). What
        # changes between two slices is copied as it is then, or in the next batch.
        rows: list[dict[str, Any]] = []
        logs: list[dict[str, Any]] = []
        slices = Slices(self._between_slices)
        async for part in slices.over(len(due), len(due) if everything else COPY_SLICE):
            for execution in due[part]:
                row = _row(execution)
                rows.append(row)
                del self._executions[row["id"]]
                logs.extend(self._logs.pop(row["id"], ()))
                token = self._tokens.pop(row["id"], None)
                if token is not None:
                    tokens.append(token)
        if not rows and not revoked:
            self._spool.written(spooled)
            return
        try:
            await self._write(rows, logs, tokens, revoked)
            self._spool.written(spooled)
        except Exception:
            # One bad row (say, its owner was deleted meanwhile) must not take the
            # others with it: write them one at a time, drop what still fails.
            log.exception("writing %d tracked executions failed; retrying one by one",
                          len(rows))
            for row in rows:
                own = [x for x in tokens if x["execution_id"] == row["id"]]
                try:
                    # looking again for its deployment and pipeline: another process
                    # may have deleted them since they were last seen
                    await self._write(
                        [row], [x for x in logs if x["execution_id"] == row["id"]], own,
                        {x["id"]: revoked[x["id"]] for x in own if x["id"] in revoked},
                        recheck=True)
                except Exception:
                    # kept in the spool: the next start replays it
                    log.exception("dropped the tracking of execution %s", row["id"])
                    spooled = []
            self._spool.written(spooled)

    def _due(self) -> list[ExecutionRecord]:
        """Ended executions, those already in the database, and those running for long
        enough that other processes should see them."""
        seen_before = utcnow() - timedelta(seconds=RUNNING_VISIBLE_AFTER_S)
        return [e for e in self._executions.values()
                if e.status not in t.ACTIVE or e.id in self._written
                or e.created_at <= seen_before]

    async def _write(self, rows: list[dict[str, Any]], logs: list[dict[str, Any]],
                     tokens: list[dict[str, Any]], revoked: dict[str, datetime],
                     recheck: bool = False) -> None:
        if self._writer is None:
            self._writer = BatchWriter(self.engine, self.database_url,
                                       pause=self._between_slices,
                                       automatic_checkpoints=self.automatic_checkpoints)
        started = time.perf_counter()
        written = await self._writer.write(Batch(
            rows=rows, logs=logs, tokens=tokens, revoked=revoked,
            written_before=set(self._written), token_owner=self._token_owner,
            known_deployments=set() if recheck else self._known_deployments(),
            known_pipelines=set() if recheck else self._alive_pipelines))
        JOURNAL_WRITE.observe(time.perf_counter() - started)
        JOURNAL_ROWS.inc(len(rows))
        confirmed, kept, tokens = written.confirmed_deployments, written.kept, written.tokens
        self._alive_deployments |= confirmed  # only once written: a retry checks again
        self._alive_pipelines |= written.confirmed_pipelines
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

    async def _between_slices(self) -> bool:
        """Wait for a moment with no call in flight before a batch's next slice; False
        when a request waits for the batch (barrier): the rest then goes at once."""
        # A turn of the loop first: a call that came meanwhile is read and counted in
        # flight before the next slice (quiet() alone returns at once when none is).
        await asyncio.sleep(0)
        if self._barriers:
            return False
        await self.traffic.quiet(SLICE_WAIT_S)  # see traffic.py
        return True

    def _known_deployments(self) -> set[str]:
        """Deployments seen to exist, with no deletion since: through this process (seen
        at once, db/changes.py) or through another one (forgotten every
        DEPLOYMENTS_RECHECK_S). The same for pipelines (self._alive_pipelines)."""
        now = time.monotonic()
        current = (changes.version(Deployment), changes.version(Pipeline))
        if current != self._deployments_version or now - self._deployments_at > \
                DEPLOYMENTS_RECHECK_S:
            self._alive_deployments = set()
            self._alive_pipelines = set()
            self._deployments_version, self._deployments_at = current, now
        return self._alive_deployments

    async def _flush_forever(self) -> None:
        while True:
            if not self.pending:
                self._work.clear()
                await self._work.wait()  # idle: no timer running for nothing
            with contextlib.suppress(TimeoutError):
                await within(self._wake.wait(), FLUSH_INTERVAL_S)
            self._wake.clear()
            await self.traffic.quiet(QUIET_WAIT_S)  # see traffic.py
            try:
                await self.flush(everything=False)
            except Exception:
                log.exception("could not write tracked executions")

    async def shutdown(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        await self.flush()
        self._spool.close()
        if self._writer is not None:
            self._writer.close()


def spool_dir(data_dir: Path) -> Path:
    return data_dir / "journal"


_DATETIMES = frozenset(c.key for c in EXECUTIONS.columns
                       if isinstance(c.type, UTCDateTime))


async def replay_spools(session_factory: async_sessionmaker[AsyncSession], data_dir: Path
                        ) -> int:
    """Write the ended executions a killed control service spooled but had not written
    (executions/spool.py); call at start-up, before the reconciler looks for stuck ones.
    Returns how many rows were written."""
    files = orphaned_spools(spool_dir(data_dir))
    if not files:
        return 0
    rows: dict[str, dict[str, Any]] = {}
    for path in files:
        for row in read_spool(path, _DATETIMES):
            rows[row["id"]] = row
    written = 0
    async with session_factory() as session, session.begin():
        for row in rows.values():
            values = {column: row.get(column) for column in COLUMNS}
            existing = await session.get(Execution, row["id"])
            if existing is not None and existing.status not in t.ACTIVE:
                continue
            try:
                async with session.begin_nested():
                    if existing is None:
                        # its pipeline deleted meanwhile: kept, as the deletion keeps
                        # those written before (ON DELETE SET NULL)
                        if values["pipeline_id"] is not None and await session.get(
                                Pipeline, values["pipeline_id"]) is None:
                            values["pipeline_id"] = None
                        session.add(Execution(**values))
                    else:
                        for column, value in values.items():
                            if column != "pipeline_id":  # see journal_writes._UPDATED
                                setattr(existing, column, value)
                    await session.flush()
                written += 1
            except Exception:
                # its deployment was deleted meanwhile: nothing to keep it for
                log.warning("could not replay execution %s", row["id"], exc_info=True)
    for path in files:
        path.unlink(missing_ok=True)
    if written:
        log.info("replayed %d ended execution(s) from the spool", written)
    return written
