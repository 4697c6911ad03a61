"""The embedded environment's sampler: an asyncio task in the control service that reads
the machine and each local worker process every ``resource_sample_interval_s`` and keeps
the readings ``resource_retention_h`` in the database (table ``resource_samples``).

Why the database rather than a ring buffer in memory: the metrics page's question ("what
happened in the last hours?") matters most after an incident, often one that restarted the
control service, and a buffer would be empty then. The write load is small: one
transaction per tick holding 1 + (running workers) rows (21 rows per 5 s with 20 workers,
a few rows per second), which SQLite in WAL mode absorbs next to everything else; at the
24 h default the table holds at most ~17 000 rows per worker slot, and reads aggregate in
SQL. Expired rows are deleted about once a minute.

Reading happens in a thread (psutil, /proc and NVML calls block); the tracker's state is
only touched on the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import psutil
from sqlalchemy.ext.asyncio import AsyncSession

from gristmill_platform.db.models.resources import ResourceSample
from gristmill_platform.resources.probes import (
    HostProbe,
    HostReading,
    ProcessReading,
    children_map,
    descendants_of,
    read_process,
)
from gristmill_platform.resources.repository import HOST, PROCESS, ResourceSampleRepository
from gristmill_platform.resources.usage import UsageTracker

log = logging.getLogger("gristmill.resources")

PRUNE_EVERY_S = 60.0

SessionScope = Callable[[], AbstractAsyncContextManager[AsyncSession]]


@dataclass(frozen=True)
class _Collected:
    at_ms: int
    host: HostReading
    processes: dict[str, tuple[ProcessReading, float | None]]  # label -> (reading, started)


def _collect(probe: HostProbe, running: list[tuple[str, psutil.Process]]) -> _Collected:
    """Every reading of one tick (runs in a thread)."""
    at_ms = int(time.time() * 1000)
    host = probe.read()
    processes: dict[str, tuple[ProcessReading, float | None]] = {}
    if running:
        children = children_map()
        for label, process in running:
            reading = read_process(process, descendants_of(process.pid, children))
            if reading is None:
                continue
            try:
                started: float | None = float(process.create_time())
            except psutil.Error:
                started = None
            processes[label] = (reading, started)
    return _Collected(at_ms, host, processes)


class ResourceSampler:
    def __init__(self, *, session_scope: SessionScope, host_name: str, probe: HostProbe,
                 tracker: UsageTracker | None, interval_s: float, retention_s: float
                 ) -> None:
        self.session_scope = session_scope
        self.host_name = host_name
        self.probe = probe
        self.tracker = tracker
        self.interval_s = interval_s
        self.retention_s = retention_s
        self.cpu_count = psutil.cpu_count() or 1
        # label -> (epoch seconds, CPU seconds) of the previous tick, for CPU percents
        self._previous: dict[str, tuple[float, float]] = {}
        self._pruned_at = -math.inf
        self._task: asyncio.Task[None] | None = None
        self.ticks = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None

    async def _run(self) -> None:
        # the first host reading only sets the counters rates are measured from
        await asyncio.to_thread(self.probe.read)
        loop = asyncio.get_running_loop()
        due = loop.time() + self.interval_s
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            try:
                await self.tick()
            except Exception:
                log.exception("resource sampling failed")
            due += self.interval_s
            if due < loop.time():  # fell behind (a suspended machine): no burst
                due = loop.time() + self.interval_s

    async def tick(self) -> list[ResourceSample]:
        running = self.tracker.running() if self.tracker else []
        collected = await asyncio.to_thread(_collect, self.probe, running)
        rows = self.rows(collected)
        async with self.session_scope() as session:
            repository = ResourceSampleRepository(session)
            await repository.add_all(rows)
            now = time.monotonic()
            if now - self._pruned_at >= PRUNE_EVERY_S:
                self._pruned_at = now
                await repository.delete_before(
                    collected.at_ms - int(self.retention_s * 1000))
        self.ticks += 1
        return rows

    def rows(self, collected: _Collected) -> list[ResourceSample]:
        """The tick's rows; the process readings also go to the usage tracker."""
        host = collected.host
        gpu = host.gpu
        rows = [ResourceSample(
            sampled_at_ms=collected.at_ms, worker=self.host_name, kind=HOST,
            cpu_percent=host.cpu_percent, ram_used_bytes=host.ram_used_bytes,
            ram_total_bytes=host.ram_total_bytes, disk_used_bytes=host.disk_used_bytes,
            disk_total_bytes=host.disk_total_bytes,
            network_in_bytes_per_s=host.network_in_bytes_per_s,
            network_out_bytes_per_s=host.network_out_bytes_per_s,
            gpu_percent=gpu.util_percent if gpu else None,
            vram_used_bytes=gpu.vram_used_bytes if gpu else None,
            vram_total_bytes=gpu.vram_total_bytes if gpu else None,
        )]
        now_s = collected.at_ms / 1000
        for label, (reading, started) in collected.processes.items():
            if self.tracker is not None:
                self.tracker.apply(label, reading, gpu.process_memory if gpu else None)
            cpu = self._cpu_percent(label, now_s, reading.cpu_time_s, started)
            vram = (sum(gpu.process_memory.get(pid, 0) for pid in reading.pids)
                    if gpu else None)
            rows.append(ResourceSample(
                sampled_at_ms=collected.at_ms, worker=label, kind=PROCESS, cpu_percent=cpu,
                ram_used_bytes=reading.rss_bytes, ram_total_bytes=host.ram_total_bytes,
                vram_used_bytes=vram, vram_total_bytes=gpu.vram_total_bytes if gpu else None,
            ))
        for label in set(self._previous) - set(collected.processes):
            del self._previous[label]
        return rows

    def _cpu_percent(self, label: str, now_s: float, cpu_time_s: float,
                     started_s: float | None) -> float | None:
        """Share of the whole machine's CPU since the previous tick (or since the process
        started, on its first)."""
        previous = self._previous.get(label)
        self._previous[label] = (now_s, cpu_time_s)
        if previous is None:
            if started_s is None:
                return None
            previous = (started_s, 0.0)
        elapsed = now_s - previous[0]
        if elapsed <= 0:
            return None
        used = max(0.0, cpu_time_s - previous[1])
        return min(100.0, 100.0 * used / elapsed / self.cpu_count)
