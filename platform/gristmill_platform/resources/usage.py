"""Per-execution resource usage of local workers: CPU time (user + system), peak resident
memory and peak GPU memory, recorded on the execution (``Execution.resource_usage``)
when its worker exits.

The tracker is the local executor's WorkerObserver. A worker is read

* when it starts, then again at growing intervals (a quarter of its age, between
  FIRST_GAP_S and MAX_GAP_S): a short step gets readings close to its end, a long one one
  per MAX_GAP_S at the cost of one /proc read;
* at every sampler tick, together with its descendants (processes the step started);
* when its output closes, i.e. while it exits (a last chance: the process is usually
  already reaped by then).

A process's CPU time is gone once it is reaped (its parent's RUSAGE_CHILDREN only holds
the sum over every child, and other workers and builds end at the same time), so the
recorded CPU time is that of the last reading: it misses at most the CPU spent in the
last gap (<= MAX_GAP_S, or a quarter of the run). The peak memory is the kernel's
high-water mark of the worker process (VmHWM), which no sparse reading can miss, or the
largest resident size of the worker with its descendants seen by a reading."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psutil

from gristmill_platform.resources.probes import ProcessReading, read_process
from gristmill_platform.timeouts import within

if TYPE_CHECKING:
    from gristmill_platform.db.transactions import Transactions

log = logging.getLogger("gristmill.resources")

FIRST_GAP_S = 0.05
MAX_GAP_S = 1.0
AGE_FRACTION = 0.25
WRITE_DELAY_S = 0.25
RETRY_S = 5.0

Recorder = Callable[[str, dict[str, Any]], Awaitable[None]]


@dataclass
class _Tracked:
    label: str
    process: psutil.Process
    started: float
    next_read: float
    cpu_time_s: float = 0.0
    peak_memory_bytes: int = 0
    gpu_memory_bytes: int | None = None
    readings: int = 0
    pids: tuple[int, ...] = field(default_factory=tuple)


def usage_document(cpu_time_s: float, peak_memory_bytes: int,
                   gpu_memory_bytes: int | None) -> dict[str, Any]:
    """What ``Execution.resource_usage`` holds (and get_pipeline_execution shows)."""
    return {"cpu_time_s": round(cpu_time_s, 3), "peak_memory_bytes": int(peak_memory_bytes),
            "gpu_memory_bytes": gpu_memory_bytes}


class UsageTracker:
    """Reads worker processes while they run and records their usage when they exit."""

    def __init__(self, record: Recorder, *, gpu_enabled: bool = False,
                 max_gap_s: float = MAX_GAP_S, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self._record = record
        self._gpu_enabled = gpu_enabled
        self._max_gap_s = max_gap_s
        self._clock = clock
        self._tracked: dict[str, _Tracked] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- the executor's WorkerObserver ---------------------------------------------------

    def worker_started(self, execution_id: str, pid: int) -> None:
        try:
            process = psutil.Process(pid)
        except psutil.NoSuchProcess:
            return
        now = self._clock()
        tracked = _Tracked(execution_id, process, now, now + FIRST_GAP_S)
        self._tracked[execution_id] = tracked
        self._read(tracked)
        self._wake.set()

    def worker_exiting(self, execution_id: str) -> None:
        tracked = self._tracked.get(execution_id)
        if tracked is not None:
            self._read(tracked)

    async def worker_exited(self, execution_id: str) -> None:
        tracked = self._tracked.pop(execution_id, None)
        if tracked is None or tracked.readings == 0:
            return
        await self._record(execution_id, usage_document(
            tracked.cpu_time_s, tracked.peak_memory_bytes, tracked.gpu_memory_bytes))

    # -- readings -------------------------------------------------------------------------

    def running(self) -> list[tuple[str, psutil.Process]]:
        """The workers being tracked (label, process), for the sampler."""
        return [(t.label, t.process) for t in self._tracked.values()]

    def apply(self, label: str, reading: ProcessReading,
              gpu_memory: dict[int, int] | None = None) -> None:
        """Fold in a reading taken elsewhere (the sampler's tick)."""
        tracked = self._tracked.get(label)
        if tracked is not None:
            self._fold(tracked, reading, gpu_memory)

    def _read(self, tracked: _Tracked) -> None:
        reading = read_process(tracked.process)
        if reading is not None:
            self._fold(tracked, reading, None)

    def _fold(self, tracked: _Tracked, reading: ProcessReading,
              gpu_memory: dict[int, int] | None) -> None:
        # readings without the descendants can be lower than one with them: keep the max
        tracked.cpu_time_s = max(tracked.cpu_time_s, reading.cpu_time_s)
        tracked.peak_memory_bytes = max(tracked.peak_memory_bytes, reading.peak_rss_bytes)
        tracked.pids = reading.pids
        tracked.readings += 1
        if self._gpu_enabled:
            used = sum((gpu_memory or {}).get(pid, 0) for pid in reading.pids)
            tracked.gpu_memory_bytes = max(tracked.gpu_memory_bytes or 0, used)

    # -- the early readings -----------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._read_forever())

    async def _read_forever(self) -> None:
        while True:
            self._wake.clear()
            now = self._clock()
            for tracked in list(self._tracked.values()):
                if tracked.next_read <= now:
                    try:
                        self._read(tracked)
                    except Exception:
                        log.exception("reading worker %s failed", tracked.label)
                    gap = min(self._max_gap_s,
                              max(FIRST_GAP_S, (now - tracked.started) * AGE_FRACTION))
                    tracked.next_read = now + gap
            upcoming = [t.next_read for t in self._tracked.values()]
            delay = (min(upcoming) - self._clock()) if upcoming else None
            with contextlib.suppress(TimeoutError):
                await within(self._wake.wait(),
                                       None if delay is None else max(0.0, delay))

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None


class UsageWrites:
    """The usage of ended workers, written to their executions' rows in batches: one
    transaction per WRITE_DELAY_S for every worker that exited meanwhile, not one per
    worker (its own transaction was about a twentieth of the control service's CPU per
    elastic execution, docs/performance-log.md). A usage is in the database at most
    WRITE_DELAY_S after its worker exited (plus the write); a failed write is logged and
    tried again RETRY_S later; ``close`` writes what is left."""

    def __init__(self, transactions: Transactions, *, delay_s: float = WRITE_DELAY_S) -> None:
        self.transactions = transactions
        self.delay_s = delay_s
        self._pending: dict[str, dict[str, Any]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def record(self, execution_id: str, usage: dict[str, Any]) -> None:
        """The tracker's Recorder: queued, written with the next batch."""
        self._pending[execution_id] = usage
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._write_forever())
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def _write_forever(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.delay_s)  # the workers ending meanwhile join the batch
            self._wake.clear()
            if not await self.write():
                await asyncio.sleep(RETRY_S)  # the database is failing: not every batch

    async def write(self) -> bool:
        """Write every pending usage now, in one transaction; False if that failed (they
        stay pending)."""
        batch, self._pending = self._pending, {}
        if not batch:
            return True
        from gristmill_platform.executions.repository import ExecutionRepository

        try:
            async with self.transactions() as session:
                # no read first: a deleted execution just matches no row
                await ExecutionRepository(session).set_many(
                    {execution_id: {"resource_usage": usage}
                     for execution_id, usage in batch.items()})
        except asyncio.CancelledError:
            self._keep(batch)  # stopped mid-write (close): close writes them again
            raise
        except Exception:
            log.exception("could not record the resource usage of %d execution(s); "
                          "trying again in %s s", len(batch), RETRY_S)
            self._keep(batch)
            self._wake.set()
            return False
        return True

    def _keep(self, batch: dict[str, dict[str, Any]]) -> None:
        """Pending again, unless a later usage of the same execution came meanwhile."""
        for execution_id, usage in batch.items():
            self._pending.setdefault(execution_id, usage)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
        await self.write()
