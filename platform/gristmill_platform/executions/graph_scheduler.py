"""Runs a multi-step pipeline's execution: each node of its graph is an execution of its
own (``parent_id`` the graph's execution, ``node_name`` the node), started through the
same launch path as any elastic execution (so the backend, and any admission control in
front of it, applies per node) as soon as the nodes it reads have succeeded. The nodes of
an execution of a low-latency deployment run on its warm workers instead: the pool of
the node's step (executors/graph_workers.py).

The scheduler keeps no state of its own: each step of progress reads the graph's
execution and its nodes from the database (``advance``), so a control service restarted
mid-graph resumes where the database says the graph is (the reconciler calls ``advance``
for graph executions). File outputs pass from node to node through the data store: a
node's file input is a copy of the upstream node's stored output object.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from gristmill_platform.db.models.auth import User
from gristmill_platform.db.models.deployments import Deployment
from gristmill_platform.db.models.executions import Execution
from gristmill_platform.db.models.steps import Pipeline, Step
from gristmill_platform.db.transactions import Transactions
from gristmill_platform.db.types import utcnow
from gristmill_platform.errors import AppError
from gristmill_platform.executions import transitions as t
from gristmill_platform.executions.factory import ExecutionServices
from gristmill_platform.executions.io import ResolvedInput, plan_outputs
from gristmill_platform.executions.service import (
    ExecutionService,
    Launch,
    system_line,
    with_values,
)
from gristmill_platform.executors.spec import Handle
from gristmill_platform.executors.workers import node_key
from gristmill_platform.pipelines.cache_keys import cache_key, code_digest, file_digest
from gristmill_platform.pipelines.graph import bound_violation, node_named, progress
from gristmill_platform.pipelines.repository import PipelineRepository
from gristmill_platform.steps.repository import StepRepository

log = logging.getLogger("gristmill.executions.graph")


class UnknownParent:
    """A parent id not known to the caller (None is known: no parent)."""


UNKNOWN = UnknownParent()

LaunchNode = Callable[[Launch], None]
StopWorker = Callable[[Handle], Awaitable[None]]
Notify = Callable[[str], None]


# the handle of a cached node's execution: it ran nowhere, its outputs are a copy
CACHE_BACKEND = "cache"


class GraphFailure(Exception):
    """The graph's execution cannot go on; the message is its status reason."""


class GraphScheduler:
    def __init__(self, transactions: Transactions, executions: ExecutionServices,
                 launch: LaunchNode, stop_worker: StopWorker, notify: Notify,
                 code_dir: Callable[[str], Path]) -> None:
        self.transactions = transactions
        self.code_dir = code_dir
        self._code_digests: dict[str, str] = {}
        self.executions = executions
        self.launch = launch
        self.stop_worker = stop_worker
        self.notify = notify
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}  # lock, its users
        # graphs with an advance waiting for the lock that has not yet read the database:
        # a further advance would read the same (or older) state after it, so it is not
        # queued (twenty nodes ending together make one or two advances, not twenty)
        self._pending: set[str] = set()
        # node execution -> graph execution, for the nodes this process started (others,
        # after a restart, are found by the reconciler)
        self._parents: dict[str, str] = {}

    async def node_ended(self, execution_id: str,
                         parent_id: str | UnknownParent | None = UNKNOWN) -> None:
        """parent_id: the ended execution's, when the caller has just read its row (the
        database is then not asked again); UNKNOWN otherwise."""
        started_here = self._parents.pop(execution_id, None)
        if isinstance(parent_id, UnknownParent):
            parent_id = started_here
            if parent_id is None:
                # started by another replica, or before a restart: the database knows
                async with self.transactions() as session:
                    node = await self.executions(session).repository.get(execution_id)
                    parent_id = node.parent_id if node is not None else None
        if parent_id is not None:
            await self.advance(parent_id)

    async def advance(self, parent_id: str) -> None:
        """Start the nodes whose inputs are ready, or end the graph's execution. One
        advance at a time per graph in this process (two could start the same node)."""
        if parent_id in self._pending:
            return  # the waiting advance reads the database after what called this
        lock, users = self._locks.get(parent_id, (asyncio.Lock(), 0))
        self._locks[parent_id] = (lock, users + 1)
        self._pending.add(parent_id)
        waiting = True
        try:
            async with lock:
                self._pending.discard(parent_id)
                waiting = False
                await self._advance(parent_id)
        except Exception:
            log.exception("could not advance graph execution %s", parent_id)
        finally:
            if waiting:  # cancelled before its turn
                self._pending.discard(parent_id)
            lock, users = self._locks[parent_id]
            if users == 1:
                del self._locks[parent_id]
            else:
                self._locks[parent_id] = (lock, users - 1)

    async def _advance(self, parent_id: str) -> None:
        launches: list[Launch] = []
        to_stop: list[Handle] = []
        ended = False
        reused = False
        async with self.transactions() as session:
            service = self.executions(session)
            parent = await service.repository.get(parent_id, for_update=True)
            if parent is None or parent.status not in t.ACTIVE:
                return
            nodes = {n.node_name: n for n in await service.repository.nodes(parent_id)
                     if n.node_name}
            # no heartbeat written here: an advance that changes nothing stays read-only
            # (twenty nodes ending together would otherwise queue twenty writes), and a
            # graph quiet for long is only advanced again by the reconciler, harmlessly
            try:
                pipeline = await self._pipeline(session, parent)
                graph = pipeline.graph
                assert graph is not None
                state = progress(graph, {name: n.status for name, n in nodes.items()})
                self._judge_checks(parent, graph, nodes)
                if state.failed is not None:
                    failed = nodes[state.failed]
                    raise GraphFailure(f"node {state.failed!r} failed: "
                                       f"{failed.status_reason or failed.status}")
                if state.done:
                    await self._judge_bounds(service, parent, graph, nodes)
                    await self._finish(service, parent, graph, nodes)
                    ended = True
                else:
                    warm = bool(state.ready) and await self._low_latency(session, parent)
                    # read once for all the ready nodes, and held: the session's identity
                    # map keeps only what is referenced, and a look-up that misses it
                    # would query (and flush) once per node
                    steps = await StepRepository(session).by_ids(
                        node_named(graph, name)["step_id"] for name in state.ready)
                    _owner = (await session.get(User, parent.created_by)
                              if state.ready and parent.created_by else None)
                    for name in state.ready:
                        node = node_named(graph, name)
                        launch = await self._start_node(service, pipeline, parent, node,
                                                        steps.get(node["step_id"]), nodes)
                        if launch is None:
                            reused = True  # its outputs came from the cache
                            continue
                        if warm:
                            step_name = node_named(graph, name)["step_name"]
                            assert parent.deployment_name is not None
                            launch = replace(launch, low_latency=True, worker_key=node_key(
                                parent.deployment_name, step_name))
                        launches.append(launch)
                        self._parents[launch.execution_id] = parent_id
                    await session.flush()  # the ready nodes' rows, in one go
                    if (launches or reused) and parent.status == t.PENDING:
                        parent.status = t.transition(parent.status, t.RUNNING)
                        parent.started_at = utcnow()
            except (GraphFailure, AppError) as failure:
                reason = str(failure) if isinstance(failure, GraphFailure) else failure.message
                to_stop = self._cancel_nodes(service, nodes.values())
                await service.fail(parent_id, reason)
                await service.auth.revoke_execution_tokens(parent_id)
                ended = True
        for handle in to_stop:
            try:
                await self.stop_worker(handle)
            except Exception:
                log.warning("could not stop a node of %s", parent_id, exc_info=True)
        for launch in launches:
            self.launch(launch)
        if ended:
            self.notify(parent_id)
        elif reused:
            await self._advance(parent_id)  # what follows a reused node may be ready now

    @staticmethod
    async def _low_latency(session: Any, parent: Execution) -> bool:
        """Do the graph's nodes run on its deployment's warm workers?"""
        if parent.deployment_id is None:
            return False
        deployment = await session.get(Deployment, parent.deployment_id)
        return deployment is not None and deployment.mode == "low_latency"

    async def _pipeline(self, session: Any, parent: Execution) -> Pipeline:
        pipeline = (await PipelineRepository(session).get(parent.pipeline_id)
                    if parent.pipeline_id else None)
        if pipeline is None or pipeline.graph is None:
            raise GraphFailure("the pipeline was deleted while its execution ran")
        return pipeline

    @staticmethod
    def _judge_checks(parent: Execution, graph: Mapping[str, Any],
                      nodes: Mapping[str, Execution]) -> None:
        """A check node that returned False: an error fails the execution, a warning is
        recorded on it."""
        for node in graph["nodes"]:
            check, run = node.get("check"), nodes.get(node["name"])
            if check is None or run is None or run.status != t.SUCCEEDED:
                continue
            if check_passed(run):
                continue
            message = f"check {node['name']!r} failed"
            if check["severity"] == "error":
                raise GraphFailure(message)
            _warn(parent, {"kind": "check", "name": node["name"], "message": message})

    async def _judge_bounds(self, service: ExecutionService, parent: Execution,
                            graph: Mapping[str, Any], nodes: Mapping[str, Execution]
                            ) -> None:
        bounds = graph.get("metric_bounds") or {}
        if not bounds:
            return
        ran = [n.id for n in nodes.values()]
        recorded = await service.repository.metric_values(ran)
        listed = await service.repository.list_metric_values(ran)
        for name, bound in bounds.items():
            problem = bound_violation(name, bound, recorded.get(name), listed.get(name, ()))
            if problem is None:
                continue
            if bound["severity"] == "error":
                raise GraphFailure(f"metric bound: {problem}")
            _warn(parent, {"kind": "metric_bound", "name": name, "message": problem})

    @staticmethod
    def _cancel_nodes(service: ExecutionService, nodes: Sequence[Execution] | Any
                      ) -> list[Handle]:
        """Mark the nodes still active cancelled; the handles of their workers to stop."""
        handles: list[Handle] = []
        for node in nodes:
            if node.status in t.ACTIVE:
                service.end(node, t.CANCELLED, "another node of the pipeline failed")
                if node.handle:
                    handles.append(node.handle)
        return handles

    async def _start_node(self, service: ExecutionService, pipeline: Pipeline,
                          parent: Execution, node: Mapping[str, Any], step: Step | None,
                          nodes: Mapping[str, Execution]) -> Launch | None:
        """Record a node's execution and return its launch; None when a cached node
        reused an earlier run's outputs (it is then already succeeded)."""
        if step is None:
            raise GraphFailure(f"node {node['name']!r}: its step {node['step_name']!r} was "
                               "deleted")
        resolved = node_inputs(node, step.inputs, parent, nodes)
        plans = plan_outputs(step.outputs, [])
        key = await self._cache_key(service, step, resolved) if node.get("cache") else None
        earlier = await service.repository.cached(key) if key else None
        # the ready nodes' rows go to the database together, with _advance's flush
        launch = await service.record(pipeline, step, resolved, plans, {},
                                      created_by=parent.created_by, parent=parent,
                                      node_name=node["name"], cache_key=key, batch=True)
        if earlier is None:
            return launch
        execution = await service.repository.get(launch.execution_id)
        assert execution is not None
        await self._reuse(service, execution, earlier)
        return None

    async def _reuse(self, service: ExecutionService, execution: Execution,
                     earlier: Execution) -> None:
        outputs = []
        for item in earlier.outputs:
            copied = {**item}
            if item.get("file"):
                copied["file"] = await service.copy_object(
                    execution.id, "outputs", item["pipeline_output_name"], item["file"])
            outputs.append(copied)
        execution.outputs = outputs
        execution.status = t.transition(execution.status, t.RUNNING)
        execution.handle = {"backend": CACHE_BACKEND, "execution_id": earlier.id}
        service.end(execution, t.SUCCEEDED)
        execution.started_at = execution.ended_at
        await service.append_logs(execution.id, [system_line(
            f"Cached: outputs reused from execution {earlier.id}")], heartbeat=False)
        await service.auth.revoke_execution_tokens(execution.id)

    async def _cache_key(self, service: ExecutionService, step: Step,
                         resolved: Sequence[ResolvedInput]) -> str:
        code = step.image or self._code_digests.get(step.id)
        if code is None:
            code = await asyncio.to_thread(code_digest, self.code_dir(step.id))
            self._code_digests[step.id] = code
        values: dict[str, Any] = {}
        for item in resolved:
            if item.file_source is None:
                values[item.name] = item.value
                continue
            with tempfile.TemporaryDirectory() as scratch:
                local = Path(scratch) / "input"
                await service.datastore.download_to(item.file_source[1], local)
                values[item.name] = {"file_sha256": await asyncio.to_thread(file_digest,
                                                                             local)}
        return cache_key(code, step.environment_key,
                         f"{step.function_path}:{step.function_name}", values)

    async def _finish(self, service: ExecutionService, parent: Execution,
                      graph: Mapping[str, Any], nodes: Mapping[str, Execution]) -> None:
        """Every node succeeded: the pipeline's outputs are copied from the nodes' (file
        outputs object to object in the data store), then delivered as mapped."""
        values: dict[str, Any] = {}
        outputs = [dict(o) for o in parent.outputs]
        for wiring in graph["outputs"]:
            item = _output_item(nodes[wiring["node"]], wiring["output"])
            target = next((o for o in outputs if o["pipeline_output_name"] == wiring["name"]),
                          None)
            if target is None or item is None:
                continue
            if item["data_type"] == "file":
                if item.get("file"):
                    target["file"] = await service.copy_object(
                        parent.id, "outputs", wiring["name"], item["file"])
            else:
                values[wiring["name"]] = item.get("value")
        parent.outputs = outputs
        parent.outputs = with_values(parent.outputs, values)
        await service.deliver_outputs(parent, values)
        await service.append_logs(parent.id, [system_line(
            f"All {len(graph['nodes'])} nodes succeeded")], heartbeat=False)
        service.end(parent, t.SUCCEEDED)
        await service.auth.revoke_execution_tokens(parent.id)


def check_passed(run: Execution) -> bool:
    """A check node passed when its one output is True (None or anything else fails)."""
    return any(o.get("value") is True for o in run.outputs)


def _warn(parent: Execution, warning: dict[str, str]) -> None:
    warnings = list(parent.warnings or [])
    if warning not in warnings:
        parent.warnings = [*warnings, warning]


def _output_item(node: Execution, name: str) -> dict[str, Any] | None:
    return next((o for o in node.outputs if o["pipeline_output_name"] == name), None)


def node_inputs(node: Mapping[str, Any], declared: Sequence[Mapping[str, Any]],
                parent: Execution, nodes: Mapping[str, Execution]) -> list[ResolvedInput]:
    """A node's inputs from its wiring: the graph execution's inputs, upstream nodes'
    outputs, constants, else the step's default. File inputs name the stored object to
    copy (file_source), never its bytes."""
    given = {i["pipeline_input_name"]: i for i in parent.inputs}
    resolved: list[ResolvedInput] = []
    for spec in declared:
        name, data_type = spec["name"], spec["data_type"]
        source = node["inputs"].get(name)
        if source is None:
            resolved.append(ResolvedInput(name, data_type, "default", {},
                                          spec.get("default_value")))
            continue
        if "constant" in source:
            resolved.append(ResolvedInput(name, data_type, "constant",
                                          {"constant_value": source["constant"]},
                                          source["constant"]))
            continue
        if "pipeline_input" in source:
            item = given.get(source["pipeline_input"])
            mapping = {"pipeline_input_name": source["pipeline_input"]}
        else:
            item = _output_item(nodes[source["node"]], source["output"])
            mapping = {"node_name": source["node"], "output_name": source["output"]}
        kind = "pipeline_input" if "pipeline_input" in source else "node_output"
        if data_type == "file":
            stored = (item or {}).get("file")
            resolved.append(ResolvedInput(
                name, data_type, kind, mapping,
                file_source=("datastore", stored["object"]) if stored else None))
        else:
            resolved.append(ResolvedInput(name, data_type, kind, mapping,
                                          (item or {}).get("value")))
    return resolved

