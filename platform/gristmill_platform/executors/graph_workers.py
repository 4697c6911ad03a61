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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import select

from gristmill_platform.db.models.steps import Pipeline, Step
from gristmill_platform.db.transactions import Transactions
from gristmill_platform.executors.deployment_logs import DeploymentRecordsFor, record_status
from gristmill_platform.executors.workers import (
    StartHook,
    Version,
    WorkerAnswer,
    WorkerPool,
    node_key,
    node_step,
    split_key,
)
from gristmill_platform.timeouts import within

log = logging.getLogger("gristmill.workers")

SETTLE_POLL_S = 0.05
SETTLE_POLL_MAX_S = 0.5
# Once settled, how often the node pools are looked at again (in memory, no query): a
# pool that crashes, restarts or gives up later shows on the deployment within this.
WATCH_POLL_S = 1.0
UP, FAILED, RETRYING = "up", "creation_failed", "down_retrying"


# How long a node pool waits, at start-up, for a step build the restart interrupted (as a
# one-step deployment's worker does: local_workers.py START_TIMEOUT_S).
BUILD_WAIT_S = 1800.0


class StepBuildWaiter(Protocol):
    """What the node pools need of the step builds (steps/builds.py StepBuilds)."""

    async def wait(self, step_id: str, timeout: float) -> None: ...


@dataclass(frozen=True)
class _Graph:
    deployment_id: str
    generation: int
    keys: tuple[str, ...]  # one per distinct step of its nodes
    step_ids: tuple[str, ...] = ()


@dataclass
class _Watch:
    """The task that records a graph deployment's status from its node pools."""

    settled: asyncio.Event = field(default_factory=asyncio.Event)
    # set by ensure: look again at once, at the settling pace (a roll, a new generation)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    # (generation, status, reason) last recorded: recorded again only when it changes
    recorded: tuple[int, str, str | None] | None = None


def graph_status(verdicts: Sequence[tuple[str, str, str | None]], *, served: bool
                 ) -> tuple[str, str | None] | None:
    """The deployment's (status, reason) from its node pools' verdicts (key, state, why);
    ``served``: whether this generation was up already. None: nothing to record (the pools
    of a new generation are still starting)."""
    failed = next(((key, why) for key, state, why in verdicts if state == "failed"), None)
    if failed is not None:
        key, why = failed
        if served:
            return FAILED, f"the worker of step {node_step(key)!r} failed: {why}"
        return FAILED, f"the worker of step {node_step(key)!r} could not be started: {why}"
    if all(state == "up" for _, state, _ in verdicts):
        return UP, None
    if served:  # a pool that served restarts its worker (a crash)
        key = next(key for key, state, _ in verdicts if state != "up")
        return RETRYING, f"the worker of step {node_step(key)!r} is being restarted"
    return None


class GraphWorkerPools:
    """The WorkerPool the control service uses (see workers.py for the contract)."""

    def __init__(self, inner: WorkerPool, transactions: Transactions,
                 deployments: DeploymentRecordsFor,
                 builds: StepBuildWaiter | None = None) -> None:
        self.inner = inner
        self.transactions = transactions
        self.deployments = deployments
        self.builds = builds
        # graph deployments whose node pools wait, at start-up, for their steps' builds:
        # their calls wait too (set once the pools were asked to start, or failed)
        self._resuming: dict[str, asyncio.Event] = {}
        self._resumes: set[asyncio.Task[None]] = set()
        self._graphs: dict[str, _Graph] = {}  # deployment name -> its node pools
        self._watches: dict[str, _Watch] = {}

    async def ensure(self, deployment_name: str, *, wait_s: float,
                     restart: bool = False, background: bool = False) -> None:
        graph = (await self._graph(deployment_name)
                 if node_step(deployment_name) is None else None)
        if graph is None:
            await self.inner.ensure(deployment_name, wait_s=wait_s, restart=restart,
                                    background=background)
            return
        self._graphs[deployment_name] = graph
        await asyncio.gather(*(self.inner.ensure(key, wait_s=0, restart=restart)
                               for key in graph.keys))
        if split_key(deployment_name)[1] is not None:
            # a multi-step variant pipeline (docs/rollout.md): the node pools of its steps,
            # shared with the deployment's own where the step is the same; as any
            # variant's workers, they say nothing of the deployment's status
            await self._started(graph, wait_s)
            return
        watch = self._watches.get(deployment_name)
        if watch is None or watch.task is None or watch.task.done():
            watch = _Watch()
            watch.task = asyncio.get_running_loop().create_task(
                self._watch(deployment_name, watch))
            self._watches[deployment_name] = watch
        elif restart or watch.recorded is None or watch.recorded[0] != graph.generation:
            watch.settled.clear()  # a roll or a new generation: settled again once decided
            watch.wake.set()
        if wait_s > 0:
            with contextlib.suppress(TimeoutError):
                await within(watch.settled.wait(), wait_s)

    async def stop(self, deployment_name: str) -> None:
        graph = self._graphs.pop(deployment_name, None)
        if split_key(deployment_name)[1] is not None:
            # a variant's node pools may serve the deployment's own nodes: they stop with
            # the deployment
            await self.inner.stop(deployment_name)
            return
        for key in [k for k in self._graphs if split_key(k)[0] == deployment_name]:
            del self._graphs[key]  # its variants' graphs: their node pools stop below
        watch = self._watches.pop(deployment_name, None)
        if watch is not None and watch.task is not None:
            watch.task.cancel()
        keys = set(graph.keys if graph else ())
        if split_key(deployment_name)[1] is None:
            keys |= {key for key in self.inner.deployment_names()
                     if node_step(key) is not None and split_key(key)[0] == deployment_name}
        await asyncio.gather(*(self.inner.stop(key) for key in sorted(keys)))
        await self.inner.stop(deployment_name)

    def deployment_names(self) -> list[str]:
        return self.inner.deployment_names()

    def versions(self, deployment_name: str) -> set[Version]:
        graph = self._graphs.get(deployment_name)
        if graph is None:
            return self.inner.versions(deployment_name)
        return {version for key in graph.keys for version in self.inner.versions(key)}

    def pods(self, deployment_name: str) -> list[dict[str, Any]]:
        graph = self._graphs.get(deployment_name)
        if graph is None:
            return self.inner.pods(deployment_name)
        return [pod for key in graph.keys for pod in self.inner.pods(key)]

    def verdict(self, key: str) -> tuple[str, str | None]:
        return self.inner.verdict(key)

    async def run(self, deployment_name: str, start: StartHook) -> WorkerAnswer | None:
        resuming = self._resuming.get(split_key(deployment_name)[0])
        if resuming is not None and node_step(deployment_name) is not None:
            await resuming.wait()  # its pool starts once the step is built again
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
                    self._resuming[name] = asyncio.Event()
                    task = asyncio.get_running_loop().create_task(
                        self._resume_graph(name, graph))
                    self._resumes.add(task)
                    task.add_done_callback(self._resumes.discard)
            except Exception:
                log.exception("could not bring the workers of %s up again", name)

    async def _resume_graph(self, name: str, graph: _Graph) -> None:
        """Start a graph deployment's node pools again once the builds of its steps that
        the restart interrupted (started again by StepBuilds.resume) have ended; a step
        whose build failed fails the deployment, naming it."""
        try:
            if self.builds is not None:
                await asyncio.gather(*(self.builds.wait(step_id, BUILD_WAIT_S)
                                       for step_id in graph.step_ids))
            unbuilt = await self._unbuilt(graph)
            if unbuilt is not None:
                await self._record(graph, FAILED, unbuilt)
                return
            await self.ensure(name, wait_s=0)
        except Exception:
            log.exception("could not bring the workers of %s up again", name)
        finally:
            event = self._resuming.pop(name, None)
            if event is not None:
                event.set()

    async def _unbuilt(self, graph: _Graph) -> str | None:
        """Why a node's step cannot serve (not built), None when every step is ready."""
        async with self.transactions() as session:
            for step_id in graph.step_ids:
                step = await session.get(Step, step_id)
                if step is None:
                    return "a step of its nodes was deleted"
                if step.status != "ready":
                    why = step.status_reason or step.status
                    return f"the step {step.name!r} of its nodes is not built: {why}"
        return None

    async def shutdown(self) -> None:
        for watch in self._watches.values():
            if watch.task is not None:
                watch.task.cancel()
        for task in self._resumes:
            task.cancel()
        await self.inner.shutdown()

    # -- multi-step pipelines -----------------------------------------------------------------

    async def _graph(self, key: str) -> _Graph | None:
        """The node pools of a low-latency deployment of a multi-step pipeline, or of a
        multi-step variant pipeline of one (key "<deployment>@<pipeline>"); None for any
        other."""
        deployment_name, variant = split_key(key)
        async with self.transactions() as session:
            deployment = await self.deployments(session).by_name(deployment_name)
            if deployment is None or deployment.mode != "low_latency":
                return None
            pipeline = (await session.get(Pipeline, deployment.pipeline_id) if variant is None
                        else await session.scalar(select(Pipeline).where(
                            Pipeline.name == variant)))
            if pipeline is None or pipeline.graph is None:
                return None
            steps = sorted({node["step_name"] for node in pipeline.graph["nodes"]})
            step_ids = sorted({node["step_id"] for node in pipeline.graph["nodes"]})
            return _Graph(deployment.id, deployment.generation,
                          tuple(node_key(deployment_name, step) for step in steps),
                          tuple(step_ids))

    async def _started(self, graph: _Graph, wait_s: float) -> None:
        """Wait (at most wait_s) until none of the graph's node pools is still starting."""
        deadline = asyncio.get_running_loop().time() + wait_s
        delay = SETTLE_POLL_S
        while any(self.inner.verdict(key)[0] == "starting" for key in graph.keys):
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, SETTLE_POLL_MAX_S)

    async def _watch(self, deployment_name: str, watch: _Watch) -> None:
        """Record the deployment's status from its node pools for as long as it is known
        here: ``up`` once every pool serves, ``creation_failed`` naming the step whose
        worker could not start; later, ``down_retrying`` while a pool restarts its
        crashed worker, ``creation_failed`` naming the step when a pool gives up, and
        ``up`` again once every pool serves again (an update, a restart)."""
        delay = SETTLE_POLL_S
        while True:
            graph = self._graphs.get(deployment_name)
            if graph is None:
                return
            recorded = watch.recorded
            served = (recorded is not None and recorded[0] == graph.generation
                      and recorded[1] in (UP, RETRYING))
            decided = graph_status([(key, *self.inner.verdict(key)) for key in graph.keys],
                                   served=served)
            if decided is not None and (graph.generation, *decided) != recorded:
                await self._record(graph, *decided)
                watch.recorded = (graph.generation, *decided)
            if decided is not None and decided[0] != RETRYING:
                watch.settled.set()
                delay = WATCH_POLL_S
            else:
                delay = min(delay * 2, SETTLE_POLL_MAX_S)
            with contextlib.suppress(TimeoutError):
                await within(watch.wake.wait(), delay)
            if watch.wake.is_set():
                watch.wake.clear()
                delay = SETTLE_POLL_S

    async def _record(self, graph: _Graph, status: str, reason: str | None) -> None:
        await record_status(self.transactions, self.deployments, graph.deployment_id,
                            graph.generation, status, reason)
