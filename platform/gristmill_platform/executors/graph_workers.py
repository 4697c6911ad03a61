"""Warm workers of low-latency deployments of multi-step pipelines, on either backend.

Such a deployment has no worker of its own: each distinct step its nodes run gets a pool
of warm workers (``node_key``: "<deployment>@#<step>"), which the backend's pool starts,
restarts, rolls and carries executions to as it does for any deployment. Two nodes
running the same step share its pool. The graph scheduler sends each node's execution to
its step's pool (executions/graph_scheduler.py).

This wraps the backend's pool: a deployment of a one-step pipeline goes straight through;
for a multi-step one, ``ensure`` brings every node pool up and records the deployment's
status from all of them (``up`` once each serves, ``creation_failed`` naming the step
whose worker could not start), ``pods`` lists theirs and ``stop`` stops them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from gristmill_platform.db.models.steps import Pipeline
from gristmill_platform.db.transactions import Transactions
from gristmill_platform.executors.deployment_logs import DeploymentRecordsFor, record_status
from gristmill_platform.executors.workers import (
    StartHook,
    WorkerAnswer,
    WorkerPool,
    node_key,
    node_step,
    split_key,
)

log = logging.getLogger("gristmill.workers")

SETTLE_POLL_S = 0.05
SETTLE_POLL_MAX_S = 0.5


@dataclass(frozen=True)
class _Graph:
    deployment_id: str
    generation: int
    keys: tuple[str, ...]  # one per distinct step of its nodes


class GraphWorkerPools:
    """The WorkerPool the control service uses (see workers.py for the contract)."""

    def __init__(self, inner: WorkerPool, transactions: Transactions,
                 deployments: DeploymentRecordsFor) -> None:
        self.inner = inner
        self.transactions = transactions
        self.deployments = deployments
        self._graphs: dict[str, _Graph] = {}  # deployment name -> its node pools
        self._settling: dict[str, asyncio.Task[None]] = {}

    async def ensure(self, deployment_name: str, *, wait_s: float,
                     restart: bool = False, background: bool = False) -> None:
        graph = (await self._graph(deployment_name)
                 if split_key(deployment_name)[1] is None else None)
        if graph is None:
            await self.inner.ensure(deployment_name, wait_s=wait_s, restart=restart,
                                    background=background)
            return
        self._graphs[deployment_name] = graph
        await asyncio.gather(*(self.inner.ensure(key, wait_s=0, restart=restart)
                               for key in graph.keys))
        task = self._settling.get(deployment_name)
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._settle(deployment_name))
            self._settling[deployment_name] = task
        if wait_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), wait_s)

    async def stop(self, deployment_name: str) -> None:
        graph = self._graphs.pop(deployment_name, None)
        task = self._settling.pop(deployment_name, None)
        if task is not None:
            task.cancel()
        keys = set(graph.keys if graph else ())
        if split_key(deployment_name)[1] is None:
            keys |= {key for key in self.inner.deployment_names()
                     if node_step(key) is not None and split_key(key)[0] == deployment_name}
        await asyncio.gather(*(self.inner.stop(key) for key in sorted(keys)))
        await self.inner.stop(deployment_name)

    def deployment_names(self) -> list[str]:
        return self.inner.deployment_names()

    def pods(self, deployment_name: str) -> list[dict[str, Any]]:
        graph = self._graphs.get(deployment_name)
        if graph is None:
            return self.inner.pods(deployment_name)
        return [pod for key in graph.keys for pod in self.inner.pods(key)]

    def verdict(self, key: str) -> tuple[str, str | None]:
        return self.inner.verdict(key)

    async def run(self, deployment_name: str, start: StartHook) -> WorkerAnswer | None:
        return await self.inner.run(deployment_name, start)

    def replace(self, deployment_name: str, pod_id: str, reason: str) -> None:
        self.inner.replace(deployment_name, pod_id, reason)

    async def resume(self) -> None:
        await self.inner.resume()  # a multi-step pipeline's deployment: nothing (_load)
        async with self.transactions() as session:
            deployments = [(d.name, d.is_enabled)
                           for d in await self.deployments(session).low_latency()]
        for name, enabled in deployments:
            try:
                graph = await self._graph(name)
                if graph is None:
                    continue  # a one-step pipeline's: the inner pool's
                # known even while disabled: deleting it stops its node pools (on
                # Kubernetes they outlive this process)
                self._graphs[name] = graph
                if enabled:
                    await self.ensure(name, wait_s=0)
            except Exception:
                log.exception("could not bring the workers of %s up again", name)

    async def shutdown(self) -> None:
        for task in self._settling.values():
            task.cancel()
        await self.inner.shutdown()

    # -- multi-step pipelines -----------------------------------------------------------------

    async def _graph(self, deployment_name: str) -> _Graph | None:
        """The node pools of a low-latency deployment of a multi-step pipeline; None for
        any other deployment."""
        async with self.transactions() as session:
            deployment = await self.deployments(session).by_name(deployment_name)
            if deployment is None or deployment.mode != "low_latency":
                return None
            pipeline = await session.get(Pipeline, deployment.pipeline_id)
            if pipeline is None or pipeline.graph is None:
                return None
            steps = sorted({node["step_name"] for node in pipeline.graph["nodes"]})
            return _Graph(deployment.id, deployment.generation,
                          tuple(node_key(deployment_name, step) for step in steps))

    async def _settle(self, deployment_name: str) -> None:
        """Wait until every node pool serves (the deployment is up) or one cannot start
        (creation_failed, naming its step), and record it on the deployment."""
        delay = SETTLE_POLL_S
        while True:
            graph = self._graphs.get(deployment_name)
            if graph is None:
                return
            verdicts = [(key, *self.inner.verdict(key)) for key in graph.keys]
            failed = next(((key, why) for key, state, why in verdicts if state == "failed"),
                          None)
            if failed is not None:
                key, why = failed
                await self._record(graph, "creation_failed",
                                   f"the worker of step {node_step(key)!r} could not be "
                                   f"started: {why}")
                return
            if all(state == "up" for _, state, _ in verdicts):
                await self._record(graph, "up", None)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, SETTLE_POLL_MAX_S)

    async def _record(self, graph: _Graph, status: str, reason: str | None) -> None:
        await record_status(self.transactions, self.deployments, graph.deployment_id,
                            graph.generation, status, reason)
