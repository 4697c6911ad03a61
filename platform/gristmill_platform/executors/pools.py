"""Which warm-worker pool serves low-latency deployments, from the settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gristmill_platform.executors.workers import WorkerPool

if TYPE_CHECKING:
    from gristmill_platform.executors.kubernetes.executor import KubernetesExecutor
    from gristmill_platform.state import AppState

# state.components key of the KubernetesExecutor the pool uses: a component that put its
# own executor there first (before worker_pool) shares its connection with the pool
KUBERNETES_EXECUTOR = "kubernetes_executor"


def worker_pool(state: AppState) -> WorkerPool:
    # imported here: each pool imports the executions' helpers, and a local environment
    # never loads kr8s
    if state.settings.executor == "kubernetes":
        from gristmill_platform.executors.kubernetes.workers import KubernetesWorkerPool

        return KubernetesWorkerPool(state, kubernetes_executor(state))
    from gristmill_platform.executors.local_workers import LocalWorkerPool

    return LocalWorkerPool(state)


def kubernetes_executor(state: AppState) -> KubernetesExecutor:
    """The app's executor, made from the settings at first use (it connects lazily)."""
    from gristmill_platform.executors.kubernetes.config import kubernetes_config
    from gristmill_platform.executors.kubernetes.executor import KubernetesExecutor

    executor = state.components.get(KUBERNETES_EXECUTOR)
    if executor is None:
        executor = KubernetesExecutor(kubernetes_config(state.settings))
        state.components[KUBERNETES_EXECUTOR] = executor
    assert isinstance(executor, KubernetesExecutor)
    return executor
