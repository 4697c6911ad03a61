"""Which warm-worker pool serves low-latency deployments, from the settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gristmill_platform.executors.workers import WorkerPool

if TYPE_CHECKING:
    from gristmill_platform.state import AppState


def worker_pool(state: AppState) -> WorkerPool:
    from gristmill_platform.executors.local_workers import LocalWorkerPool

    return LocalWorkerPool(state)
