"""SQLite's WAL checkpoints, run by the control service when its callers pause.

SQLite copies its write-ahead log back into the database file once the log passes 1,000
pages, in whichever connection commits then (``wal_autocheckpoint``). In the control
service that is mostly the tracking journal's thread, in the middle of warm calls
(docs/performance-log.md, "SQLite's WAL checkpoints"). So the service's own connections turn it off
(``AUTOMATIC_OFF``), and ``WalCheckpoints`` runs the checkpoints instead: at most once per
``interval_s``, once no warm call has been in flight for ``quiet_s`` (``Traffic.paused``,
as shadow copies wait), and at the latest ``max_delay_s`` after it started waiting. The
automatic checkpoint ran inside the journal's COMMIT, so every API request waiting for
that batch (the journal's barrier) waited for the checkpoint too.

The checkpoint is PASSIVE, SQLite's automatic kind: it never waits for a reader or a
writer, and what it cannot copy yet (a reader still on an older snapshot) is copied by
the next one. It runs on a thread and a connection of its own, off the event loop.
Other processes (CLI commands, backups) keep SQLite's automatic checkpoints; the last
connection to close copies what is left, as SQLite always does. The local shadow runner,
a child of the service built from its settings, leaves them off too: the service's
checkpoints copy its writes with the rest.

``GRISTMILL_SQLITE_CHECKPOINTS=automatic`` gives SQLite's own behaviour back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gristmill_platform.telemetry.metrics import SQLITE_CHECKPOINT

if TYPE_CHECKING:
    from gristmill_platform.traffic import Traffic

log = logging.getLogger("gristmill.db")

AUTOMATIC_OFF = "wal_autocheckpoint=0"
# Often enough to keep the log short: reads slow down as it grows (with 1 s and 5 s
# here, API requests under warm load had a p50 up to 17 % higher, bench/warm_tail.py).
INTERVAL_S = 0.5
QUIET_S = 0.02
# Under steady traffic with no pause of 20 ms, a checkpoint waits this long at most, then
# runs beside the calls (still off the journal's transaction and off the event loop).
MAX_DELAY_S = 1.0


def connection_pragmas(automatic_checkpoints: bool) -> tuple[str, ...]:
    """What a service connection adds to its settings: nothing, or automatic
    checkpoints off (this module runs them)."""
    return () if automatic_checkpoints else (AUTOMATIC_OFF,)


@dataclass(frozen=True)
class Checkpoint:
    """What one PASSIVE checkpoint did: the log's frames, and how many are now copied
    (all of them unless a reader held some back)."""

    busy: bool
    log_frames: int
    copied_frames: int

    @property
    def complete(self) -> bool:
        return not self.busy and self.copied_frames >= self.log_frames


class WalCheckpoints:
    def __init__(self, path: str, traffic: Traffic, *, interval_s: float = INTERVAL_S,
                 quiet_s: float = QUIET_S, max_delay_s: float = MAX_DELAY_S) -> None:
        self._path = path
        self._traffic = traffic
        self._interval_s = interval_s
        self._quiet_s = quiet_s
        self._max_delay_s = max_delay_s
        self._thread = ThreadPoolExecutor(max_workers=1,
                                          thread_name_prefix="gristmill-checkpoint")
        self._connection: sqlite3.Connection | None = None  # the thread's own
        self._task: asyncio.Task[None] | None = None
        self.last: Checkpoint | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run_forever())

    async def _run_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self._traffic.paused(self._quiet_s, self._max_delay_s)
            try:
                await self.checkpoint()
            except sqlite3.Error:
                # the next turn tries again; SQLite's log only grows meanwhile
                log.warning("WAL checkpoint of %s failed", self._path, exc_info=True)

    async def checkpoint(self) -> Checkpoint:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        self.last = await loop.run_in_executor(self._thread, self._checkpoint)
        SQLITE_CHECKPOINT.observe(time.perf_counter() - started)
        return self.last

    def _checkpoint(self) -> Checkpoint:
        if self._connection is None:
            # autocommit; a PASSIVE checkpoint never waits for the lock, so no busy_timeout
            self._connection = sqlite3.connect(self._path, isolation_level=None)
        busy, log_frames, copied = self._connection.execute(
            "PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return Checkpoint(busy=bool(busy), log_frames=log_frames, copied_frames=copied)

    async def shutdown(self) -> None:
        """Stop, with a last checkpoint: what the service wrote is in the database file
        even if another process keeps the log open."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await self.checkpoint()
        except sqlite3.Error:
            log.warning("last WAL checkpoint of %s failed", self._path, exc_info=True)

        def close() -> None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

        await asyncio.get_running_loop().run_in_executor(self._thread, close)
        self._thread.shutdown(wait=True)
