"""Which warm-worker pool serves low-latency deployments, from the settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gristmill_platform.executors.graph_workers import GraphWorkerPools
from gristmill_platform.executors.workers import WorkerPool

if TYPE_CHECKING:
    from gristmill_platform.db.transactions import Transactions
    from gristmill_platform.executors.deployment_logs import (
        DeploymentLogSink,
        DeploymentRecordsFor,
    )
    from gristmill_platform.executors.local_workers import StepBuildsView
    from gristmill_platform.settings import Settings


def worker_pool(settings: Settings, transactions: Transactions,
                deployments: DeploymentRecordsFor, logs: DeploymentLogSink,
                builds: StepBuildsView) -> GraphWorkerPools:
    # imported here: a local environment never loads kr8s
    if settings.executor == "kubernetes":
        from gristmill_platform.executors.kubernetes.config import kubernetes_config
        from gristmill_platform.executors.kubernetes.executor import KubernetesExecutor
        from gristmill_platform.executors.kubernetes.workers import KubernetesWorkerPool

        # its own executor: it connects lazily, at first use
        pool: WorkerPool = KubernetesWorkerPool(
            settings, transactions, deployments, logs,
            KubernetesExecutor(kubernetes_config(settings)))
    else:
        from gristmill_platform.executors.local_workers import LocalWorkerPool

        pool = LocalWorkerPool(transactions, deployments, logs, builds,
                               data_dir=settings.data_dir,
                               # GRISTMILL_INTERNAL_URL if set; the shadow runner's
                               # own API for its workers (executions/shadow_api.py)
                               environment_url=settings.worker_url,
                               replicas=settings.local_warm_workers)
    # multi-step pipelines' deployments: one pool per distinct step of their nodes
    return GraphWorkerPools(pool, transactions, deployments, builds)
