"""Admission control for elastic executions on local workers: at most ``capacity`` run at
once; the others wait, Pending, and start in the order they came; past ``queue_limit``
waiting, new work is refused with 503 and Retry-After, before anything is recorded.
Nothing accepted is ever failed for lack of room.

Why: every elastic execution is a fresh interpreter; on a 2-core machine 48 of them at
once starve the control service itself (its answers to the workers time out, executions
fail "the worker could not reach the control service") and exhaust its database pool.
Kubernetes has a scheduler of its own: this bounds the local backend only."""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from gristmill_platform.errors import AppError

log = logging.getLogger("gristmill.admission")

# A forked worker (zygote child) holds ~6 MiB of its own (USS 5.7 MiB, PSS 6.6 MiB, RSS
# 17 MiB measured for a sleeping step; docs/reliability.md): the runtime costs next to
# nothing, so 512 MiB each is the budget of what a step loads while it runs (data, a model).
MEMORY_PER_WORKER = 512 * 1024**2
WORKERS_PER_CPU = 2
# Peers' local defaults: Metaflow's local runtime 16 tasks, Airflow's LocalExecutor 32.
MAX_DEFAULT_CAPACITY = 32


class QueueFull(AppError):
    status_code = 503
    name = "QueueFull"


def default_capacity(cpus: int | None, memory_bytes: int | None) -> int:
    """Elastic workers run at once when the setting is left unset: one per 512 MiB of
    available memory, at least two per CPU, at most 32. Workers are forked from a zygote,
    so a worker that waits or sleeps costs little memory and no CPU: memory, not CPU
    count, is what running many at once spends."""
    by_cpu = max(1, (cpus or 1) * WORKERS_PER_CPU)
    by_memory = memory_bytes // MEMORY_PER_WORKER if memory_bytes else 0
    return min(MAX_DEFAULT_CAPACITY, max(by_cpu, by_memory))


def available_memory(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """Memory available to new processes (MemAvailable: free plus reclaimable caches),
    else the machine's physical memory; None when neither can be read."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def machine_capacity() -> int:
    return default_capacity(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                            else os.cpu_count(), available_memory())


class ElasticAdmission:
    """In memory, per control service process: what runs and what waits (the database says
    Pending for both until the runner starts). ``start`` launches one execution's worker;
    ``release`` is called whenever an execution ends, however it ends."""

    def __init__(self, capacity: int, queue_limit: int,
                 start: Callable[[Any], Coroutine[Any, Any, None]]) -> None:
        self.capacity = capacity
        self.queue_limit = queue_limit
        self._start = start
        self._waiting: OrderedDict[str, Any] = OrderedDict()
        self._running: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # mean seconds an execution held its slot, for Retry-After
        self._mean_hold_s = 5.0
        self._started_at: dict[str, float] = {}

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._running)

    def holds(self, execution_id: str) -> bool:
        """Whether the execution is admitted here (waiting or running): not lost."""
        return execution_id in self._waiting or execution_id in self._running

    def check_room(self) -> None:
        """Refuse new work (503) when the queue is full; call before recording it."""
        if len(self._waiting) >= self.queue_limit:
            raise QueueFull(
                f"{len(self._waiting)} executions are waiting for one of {self.capacity} "
                "workers: try again later", headers={"Retry-After": str(self.retry_after())},
                additional_data={"waiting": len(self._waiting), "capacity": self.capacity})

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained by a worker's share."""
        rounds = (len(self._waiting) + 1) / max(1, self.capacity)
        return max(1, min(300, math.ceil(rounds * self._mean_hold_s)))

    def admit(self, execution_id: str, launch: Any) -> None:
        if self.holds(execution_id):
            return
        self._waiting[execution_id] = launch
        self._pump()

    def withdraw(self, execution_id: str) -> None:
        """An execution cancelled while it waited: its turn goes to the next one. One
        already started keeps its place until its worker is gone (release)."""
        if self._waiting.pop(execution_id, None) is not None:
            self._pump()

    def release(self, execution_id: str) -> None:
        self._waiting.pop(execution_id, None)
        if execution_id in self._running:
            self._running.discard(execution_id)
            started = self._started_at.pop(execution_id, None)
            if started is not None:
                held = asyncio.get_running_loop().time() - started
                self._mean_hold_s = 0.9 * self._mean_hold_s + 0.1 * held
        self._pump()

    def _pump(self) -> None:
        while self._waiting and len(self._running) < self.capacity:
            execution_id, launch = self._waiting.popitem(last=False)
            self._running.add(execution_id)
            loop = asyncio.get_running_loop()
            self._started_at[execution_id] = loop.time()
            task = loop.create_task(self._start(launch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._waiting.clear()
