"""Execution use cases inside one transaction: start a run, the runner's start/finish,
logs, values, deletion. Launching workers and waking waiters happen after commit
(see runtime.py)."""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from gristmill_platform.auth import policy
from gristmill_platform.auth.principal import Principal
from gristmill_platform.auth.service import AuthService
from gristmill_platform.datastore.backend import DataStoreBackend
from gristmill_platform.datastore.paths import validate_user_path
from gristmill_platform.db.hooks import on_commit
from gristmill_platform.db.models.deployments import Deployment
from gristmill_platform.db.models.executions import Execution, ExecutionLog
from gristmill_platform.db.models.steps import Pipeline, Step
from gristmill_platform.db.models.traffic import DeploymentTraffic
from gristmill_platform.db.transactions import Transactions
from gristmill_platform.db.types import utcnow
from gristmill_platform.deployments.validations import failures, io_values
from gristmill_platform.env_vars.repository import EnvVarRepository
from gristmill_platform.errors import AppError, BadRequest, Conflict, NotFound
from gristmill_platform.executions import transitions as t
from gristmill_platform.executions.io import (
    OutputPlan,
    ResolvedInput,
    check_outputs,
    expand_datastore_path,
    plan_outputs,
    resolve_inputs,
)
from gristmill_platform.executions.modes import ELASTIC, LOW_LATENCY, mode_of
from gristmill_platform.executions.records import ExecutionRecord
from gristmill_platform.executions.repository import (
    OUTCOME,
    ExecutionOutcome,
    ExecutionRepository,
)
from gristmill_platform.executors.workers import variant_key
from gristmill_platform.pipelines.graph import GRAPH_ORIGIN
from gristmill_platform.pipelines.repository import PipelineRepository
from gristmill_platform.steps.repository import StepRepository
from gristmill_platform.strict_json import parse_json
from gristmill_platform.telemetry import metrics

GRAPH_BACKEND = "graph"

MAX_LOG_LINES_PER_CALL = 10_000
MAX_LOG_LINE = 16_384


class ExecutionNotFound(NotFound):
    name = "ExecutionNotFound"


async def read_outcome(transactions: Transactions, execution_id: str) -> ExecutionOutcome:
    """Status and outputs of an execution (the outputs long-poll reads them once or twice
    per call), without an ORM session; ExecutionNotFound as ExecutionService.get."""
    outcome = await transactions.read(OUTCOME, execution_id)
    if outcome is None:
        raise ExecutionNotFound(f"Execution {execution_id!r} not found")
    return outcome


def execution_object_path(execution_id: str, kind: str, name: str) -> str:
    return f".gristmill/executions/{execution_id}/{kind}/{name}"


def new_execution_id(pipeline_name: str) -> str:
    # '_' would break the file-output Content-Disposition separator (contract §4.7).
    # 64 random bits: the fast path (low_latency.py) writes ids without asking whether
    # they exist, so collisions must stay out of reach at billions of executions.
    return f"{pipeline_name.replace('_', '-')}-{secrets.token_hex(8)}"


@dataclass(frozen=True)
class RunRequest:
    inputs: Mapping[str, Any]
    files: Mapping[str, tuple[str, IO[bytes]]]  # input name -> (filename, stream)
    inputs_mapping: Sequence[Mapping[str, Any]]
    outputs_mapping: Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class Recorded:
    """An execution as its creation committed it, with its step: what a local launch that
    follows in the same process would otherwise read back (executions/runtime.py)."""
    execution: Execution
    step: Step


@dataclass(frozen=True)
class Launch:
    execution_id: str
    step_id: str
    sdk_token: str
    deployment_id: str | None = None
    # minted with sdk_token: a local worker starts with it rather than exchanging the
    # token first (GRISTMILL_ACCESS_TOKEN, docs/internals/runtime-protocol.md)
    access_token: str | None = None
    deployment_name: str | None = None
    low_latency: bool = False
    # the execution of a multi-step pipeline: its nodes are launched by the graph
    # scheduler (graph_scheduler.py), not a worker of its own
    graph: bool = False
    # the deployment's execution_timeout_s: the worker is stopped after it
    timeout_s: int | None = None
    # a low-latency variant pipeline's warm workers (executors/workers.py variant_key);
    # None: the deployment's own
    worker_key: str | None = None
    # a node of a multi-step pipeline's execution: that execution's id
    parent_id: str | None = None
    # the deployment's generation when it was recorded: its own warm workers run it (or
    # a newer one) before the execution goes to them (LowLatencyDispatcher.follow)
    generation: int | None = None
    # set by record(); None for a launch made from the database (resumed after a restart)
    recorded: Recorded | None = field(default=None, compare=False, repr=False)


class ExecutionService:
    def __init__(self, repository: ExecutionRepository, datastore: DataStoreBackend,
                 auth: AuthService) -> None:
        self.repository = repository
        self.datastore = datastore
        self.auth = auth

    @property
    def session(self) -> Any:
        return self.repository.session

    async def get(self, execution_id: str) -> Execution:
        execution = await self.repository.get(execution_id)
        if execution is None:
            raise ExecutionNotFound(f"Execution {execution_id!r} not found")
        return execution

    async def step_of(self, execution: Execution) -> Step | None:
        """The step the execution ran (None once deleted): how it was built."""
        if not execution.step_id:
            return None
        return await StepRepository(self.session).get(execution.step_id)

    # -- creating a run -----------------------------------------------------------------------

    async def environment(self) -> dict[str, str]:
        return {v.name: v.value for v in await EnvVarRepository(self.session).list()}

    async def create(self, pipeline: Pipeline, step: Step, request: RunRequest,
                     principal: Principal) -> Launch:
        """A run: inputs from the call, mappings from the call."""
        # the variables are only read for a mapping (one may name a variable): a run
        # given its values does not pay a query for them
        environment = await self.environment() if request.inputs_mapping else {}
        resolved = resolve_inputs(step.inputs, request.inputs, set(request.files),
                                  request.inputs_mapping, environment)
        plans = plan_outputs(step.outputs, request.outputs_mapping)
        return await self.record(pipeline, step, resolved, plans, request.files,
                                 created_by=principal.user_id)

    async def record(self, pipeline: Pipeline, step: Step, resolved: Sequence[ResolvedInput],
                     plans: Sequence[OutputPlan],
                     files: Mapping[str, tuple[str, IO[bytes]]], *, created_by: str | None,
                     deployment: Deployment | None = None,
                     parent: Execution | None = None, node_name: str | None = None,
                     shadow: bool = False, cache_key: str | None = None,
                     batch: bool = False) -> Launch:
        """Record an execution (and its execution token) and return its launch. batch: one
        of several recorded together (a graph's ready nodes): the rows are written with
        the session's next flush. The id is not looked up first (64 random bits, as the
        fast path's, low_latency.py: a collision would fail the insert on the primary key,
        never overwrite a row)."""
        if step.status != "ready":
            raise BadRequest(f"Pipeline {pipeline.name!r} is not ready (its step is "
                             f"{step.status})", name="PipelineNotReady")
        if created_by is None:
            raise BadRequest("An execution needs an owner")
        execution_id = new_execution_id(pipeline.name)
        records = []
        for item in resolved:
            record = item.record()
            if item.file_source is not None:
                record["file"] = await self._store_input_file(execution_id, item.name,
                                                              item.file_source, files)
            records.append(record)
        execution = Execution(
            id=execution_id, pipeline_id=pipeline.id, pipeline_name=pipeline.name,
            step_id=step.id, step_name=step.name,
            deployment_id=deployment.id if deployment else None,
            deployment_name=deployment.name if deployment else None,
            execution_rule=deployment.execution_rule if deployment else "run",
            status=t.PENDING, inputs=records, outputs=[p.record() for p in plans],
            created_by=created_by, created_at=utcnow(),
            timeout_s=deployment.execution_timeout_s if deployment else None,
            shadow=shadow, cache_key=cache_key,
        )
        graph = step.origin == GRAPH_ORIGIN
        if graph:
            # no worker: the reconciler asks the graph scheduler about it instead
            execution.handle = {"backend": GRAPH_BACKEND}
        if parent is not None:
            execution.parent_id, execution.node_name = parent.id, node_name
            execution.execution_rule = parent.execution_rule
            execution.deployment_id = parent.deployment_id
            execution.deployment_name = parent.deployment_name
            execution.timeout_s = parent.timeout_s
        if batch:
            # flushed with its token's row below: one flush for all the batch's
            await self.repository.add(execution, flush=False)
        else:
            # Core INSERTs, not the unit of work (db/inserts.py): nothing reads either
            # row back in this transaction, the launch uses these objects (Recorded)
            await self.repository.insert(execution)
        mode = LOW_LATENCY if deployment and deployment.mode == LOW_LATENCY else ELASTIC
        rule = execution.execution_rule
        self.after_commit(lambda: metrics.execution_started(mode, rule))
        token = await self.auth.create_sdk_token(
            created_by, name=f"execution {execution_id}", scope="execution",
            execution_id=execution_id, flush=False, insert_now=not batch,
            owner_checked=True)
        return Launch(execution_id=execution_id, step_id=step.id, sdk_token=token.plaintext,
                      access_token=self.auth.access_token_for(token.token).access_token,
                      deployment_id=execution.deployment_id,
                      deployment_name=execution.deployment_name,
                      low_latency=bool(deployment and deployment.mode == "low_latency"),
                      timeout_s=execution.timeout_s, graph=graph,
                      parent_id=execution.parent_id,
                      generation=deployment.generation if deployment else None,
                      worker_key=(variant_key(deployment.name, pipeline.name)
                                  if deployment and pipeline.name != deployment.pipeline_name
                                  else None),
                      recorded=Recorded(execution, step))

    async def _store_input_file(self, execution_id: str, name: str, source: tuple[str, str],
                                files: Mapping[str, tuple[str, IO[bytes]]]) -> dict[str, Any]:
        kind, ref = source
        target = execution_object_path(execution_id, "inputs", name)
        if kind == "datastore":
            info = await self.datastore.head(ref)
            if info is None:
                raise BadRequest(f"Input {name!r} is mapped to data store object {ref!r}, "
                                 "which does not exist", name="NoSuchKey")
            with tempfile.TemporaryDirectory() as scratch:
                local = Path(scratch) / "object"
                await self.datastore.download_to(ref, local)
                stored = await self.datastore.upload_from(local, target)
            return {"object": target, "filename": ref.rsplit("/", 1)[-1], "size": stored.size}
        filename, stream = files[ref]
        with tempfile.NamedTemporaryFile(prefix="gristmill-input-") as copy:
            while chunk := stream.read(1024 * 1024):
                copy.write(chunk)
            copy.flush()
            stored = await self.datastore.upload_from(Path(copy.name), target)
        return {"object": target, "filename": filename or name, "size": stored.size}

    # -- the runner's side -------------------------------------------------------------------

    def require_runner(self, principal: Principal, execution_id: str) -> None:
        policy.require_runner(principal, execution_id)

    async def start(self, execution_id: str, step: Step | None, *,
                    elastic: bool = True) -> dict[str, Any]:
        """elastic=False for a warm worker's start, which waited for no worker of its own
        (not part of the elastic queue's wait)."""
        return self._mark_started(await self._locked(execution_id), step, elastic=elastic)

    async def start_elastic(self, execution_id: str) -> dict[str, Any]:
        """The runner's /start: the execution's row is read once, locked, and its step
        read after it (not before the lock, which would read the row twice)."""
        execution = await self._locked(execution_id)
        return self._mark_started(execution, await self.step_of(execution), elastic=True)

    def start_launched(self, execution: Execution, step: Step) -> dict[str, Any]:
        """A local worker's start, recorded with its launch (read locked by the caller):
        the answer its /start gets over its channel (executors/local.py)."""
        return self._mark_started(execution, step, elastic=True)

    def _mark_started(self, execution: Execution, step: Step | None, *,
                      elastic: bool) -> dict[str, Any]:
        execution_id = execution.id
        if execution.status != t.PENDING:
            raise Conflict(f"Execution {execution_id} is already {execution.status}",
                           name="AlreadyStarted")
        if step is None:
            raise Conflict(f"The step of execution {execution_id} was deleted")
        execution.status = t.transition(execution.status, t.RUNNING)
        execution.started_at = execution.heartbeat_at = utcnow()
        if elastic:
            waited = (execution.started_at - execution.created_at).total_seconds()
            self.after_commit(lambda: metrics.QUEUE_WAIT.observe(max(waited, 0.0)))
        return runner_payload(execution, step)

    async def _locked(self, execution_id: str) -> Execution:
        execution = await self.repository.get(execution_id, for_update=True)
        if execution is None:
            raise ExecutionNotFound(f"Execution {execution_id!r} not found")
        return execution

    async def append_logs(self, execution_id: str, lines: Sequence[Mapping[str, Any]],
                          *, heartbeat: bool = True) -> int:
        if len(lines) > MAX_LOG_LINES_PER_CALL:
            raise BadRequest(f"At most {MAX_LOG_LINES_PER_CALL} log lines per call")
        if not lines and not heartbeat:
            return 0  # nothing to do: a finish without logs (its caller read the row)
        execution = await self.get(execution_id)
        if heartbeat and execution.status in t.ACTIVE:
            execution.heartbeat_at = utcnow()
        if not lines:
            return 0
        seq = await self.repository.next_log_seq(execution_id)
        rows = [ExecutionLog(**row) for row in log_rows(execution_id, seq, lines)]
        await self.repository.add_logs(rows)
        return len(rows)

    async def store_output_file(self, execution_id: str, name: str, filename: str,
                                source: Path) -> None:
        execution = await self.get(execution_id)
        if execution.status != t.RUNNING:
            raise Conflict(f"Execution {execution_id} is {execution.status}, not running")
        outputs = [dict(o) for o in execution.outputs]
        item = next((o for o in outputs if o["pipeline_output_name"] == name), None)
        if item is None or item["data_type"] != "file":
            raise BadRequest(f"{name!r} is not a file output of this execution")
        target = execution_object_path(execution_id, "outputs", name)
        stored = await self.datastore.upload_from(source, target)
        item["file"] = {"object": target, "filename": filename, "size": stored.size}
        execution.outputs = outputs

    async def finish(self, execution_id: str, report: Mapping[str, Any], *,
                     ended_at: datetime | None = None) -> Execution:
        execution = await self._locked(execution_id)
        if execution.status not in t.ACTIVE:
            raise Conflict(f"Execution {execution_id} already ended ({execution.status})",
                           name="AlreadyFinished")
        await self.append_logs(execution_id, report.get("logs") or [], heartbeat=False)
        received = {o["pipeline_output_name"] for o in execution.outputs if o.get("file")}
        values, reason = judge_report(execution, report, received)
        if reason is None:
            try:
                await self._deliver_outputs(execution, values)
            except AppError as exc:
                reason = f"Could not write the outputs: {exc.message}"
        if reason is None:
            if execution.deployment_id is not None:
                execution.validation_failures = await self._validate(execution)
            self._end(execution, t.SUCCEEDED, None, ended_at)
            return execution
        await self.append_logs(execution_id, [system_line(reason)], heartbeat=False)
        self._end(execution, t.FAILED, reason, ended_at)
        return execution

    async def copy_object(self, execution_id: str, kind: str, name: str,
                          stored: Mapping[str, Any]) -> dict[str, Any]:
        """Copy another execution's stored file (a graph node's output) as this one's."""
        target = execution_object_path(execution_id, kind, name)
        with tempfile.TemporaryDirectory() as scratch:
            local = Path(scratch) / "object"
            await self.datastore.download_to(stored["object"], local)
            copied = await self.datastore.upload_from(local, target)
        return {"object": target, "filename": stored.get("filename") or name,
                "size": copied.size}

    async def deliver_outputs(self, execution: Execution, values: Mapping[str, Any]) -> None:
        """Set the output values and write the outputs mapped to the data store."""
        await self._deliver_outputs(execution, values)

    async def _validate(self, execution: Execution) -> list[str] | None:
        """Its deployment's validations it violates (deployments/validations.py)."""
        assert execution.deployment_id is not None
        traffic = await self.repository.session.get(DeploymentTraffic, execution.deployment_id)
        if traffic is None or not traffic.validations:
            return None
        return failures(traffic.validations, io_values(execution.inputs, execution.outputs))

    async def _deliver_outputs(self, execution: Execution, values: Mapping[str, Any]) -> None:
        outputs = with_values(execution.outputs, values)
        now = datetime.now(UTC)
        for item in outputs:
            if item["mapping_type"] == "datastore" and item.get("file"):
                path = validate_user_path(expand_datastore_path(
                    item["mapping_value"]["datastore_path"], execution.id, now))
                with tempfile.TemporaryDirectory() as scratch:
                    local = Path(scratch) / "output"
                    await self.datastore.download_to(item["file"]["object"], local)
                    await self.datastore.upload_from(local, path)
                item["mapping_value"] = {**item["mapping_value"], "resolved_path": path}
        execution.outputs = outputs

    def end(self, execution: Execution, status: str, reason: str | None = None) -> None:
        """End an execution the scheduler decides the outcome of (a graph, its nodes)."""
        self._end(execution, status, reason)

    def _end(self, execution: Execution, status: str, reason: str | None,
             ended_at: datetime | None = None) -> None:
        execution.status = t.transition(execution.status, status)
        execution.status_reason = reason
        execution.ended_at = ended_at or utcnow()
        mode, rule = mode_of(execution.handle), execution.execution_rule
        self.after_commit(lambda: metrics.execution_ended(mode, status, rule))

    async def fail(self, execution_id: str, reason: str, tail: Sequence[str] = ()) -> bool:
        """Fail an execution whose worker is gone; False if it had already ended."""
        execution = await self._locked(execution_id)
        if execution.status not in t.ACTIVE:
            return False
        await self.append_logs(execution_id, failure_lines(reason, tail), heartbeat=False)
        self._end(execution, t.FAILED, reason)
        return True

    # -- reading ------------------------------------------------------------------------------

    async def logs(self, execution_id: str, body: Mapping[str, Any]) -> Sequence[ExecutionLog]:
        execution = await self.get(execution_id)
        start = from_unix_ms(body.get("from"), "from")
        end = from_unix_ms(body.get("to"), "to")
        limit = body.get("limit")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)
                                  or limit < 1):
            raise BadRequest("limit must be a positive integer")
        nodes = await self.repository.nodes(execution_id) if is_graph(execution) else ()
        return await self.repository.logs(execution_id, start=start, end=end, limit=limit,
                                          with_ids=[n.id for n in nodes])

    def io_item(self, execution: Execution, kind: str, name: str) -> dict[str, Any]:
        items = execution.inputs if kind == "inputs" else execution.outputs
        key = "pipeline_input_name" if kind == "inputs" else "pipeline_output_name"
        item = next((i for i in items if i[key] == name), None)
        if item is None:
            raise NotFound(f"Execution {execution.id} has no {kind[:-1]} named {name!r}")
        return item

    async def graph_of(self, execution: Execution
                       ) -> tuple[dict[str, Any] | None, Sequence[Execution]]:
        """A graph execution's graph and node executions; (None, ()) for one step."""
        if not is_graph(execution):
            return None, ()
        pipeline = (await PipelineRepository(self.session).get(execution.pipeline_id)
                    if execution.pipeline_id else None)
        return (pipeline.graph if pipeline else {"nodes": [], "outputs": []},
                await self.repository.nodes(execution.id))

    async def cancel(self, execution_id: str, principal: Principal
                     ) -> tuple[Execution, list[str], list[dict[str, Any]]]:
        """Cancel a running (or pending) execution, and every node of a multi-step
        pipeline's execution that has not ended: all marked cancelled, their tokens
        revoked. Returns the execution, the ids of those cancelled, and the handles of the
        workers to stop once this is committed (so that a stopped worker's exit finds its
        execution ended already)."""
        execution = await self._locked(execution_id)
        policy.require_owner(principal, execution.created_by, f"Execution {execution_id!r}")
        if execution.status not in t.ACTIVE:
            raise Conflict(f"Execution {execution_id!r} has already ended (status "
                           f"{t.DISPLAY[execution.status]}): there is nothing to cancel",
                           name="ExecutionEnded")
        _, nodes = await self.graph_of(execution)
        handles: list[dict[str, Any]] = []
        cancelled: list[str] = []
        for item in [*nodes, execution]:
            if item.status not in t.ACTIVE:
                continue
            cancelled.append(item.id)
            reason = ("the execution was cancelled" if item is execution
                      else "its pipeline's execution was cancelled")
            await self.append_logs(item.id, [system_line(f"Cancelled: {reason}")],
                                   heartbeat=False)
            self._end(item, t.CANCELLED, reason)
            await self.auth.revoke_execution_tokens(item.id)
            if item.handle and not is_graph(item):
                handles.append(item.handle)
        return execution, cancelled, handles

    async def delete(self, execution: Execution) -> None:
        for item in [*execution.inputs, *execution.outputs]:
            if item.get("file"):
                await self.datastore.delete(item["file"]["object"])
        await self.auth.revoke_execution_tokens(execution.id)
        await self.repository.delete(execution)

    def after_commit(self, effect: Any) -> None:
        on_commit(self.session, effect)


def is_graph(execution: Execution | ExecutionRecord) -> bool:
    return bool(execution.handle and execution.handle.get("backend") == GRAPH_BACKEND)


def runner_payload(execution: Execution | ExecutionRecord, step: Step) -> dict[str, Any]:
    """What the runner needs to run an execution (contract: docs/internals)."""
    values = {i["pipeline_input_name"]: i.get("value") for i in execution.inputs
              if i["data_type"] != "file"}
    for item in execution.inputs:
        if item["data_type"] == "file" and not item.get("file"):
            values[item["pipeline_input_name"]] = None
    return {
        "execution_id": execution.id,
        "step_name": step.name,
        "function_path": step.function_path,
        "function_name": step.function_name,
        "inputs": values,
        "file_inputs": [{"name": i["pipeline_input_name"], "filename": i["file"]["filename"]}
                        for i in execution.inputs if i.get("file")],
        "outputs": [{"name": o["pipeline_output_name"], "data_type": o["data_type"]}
                    for o in execution.outputs],
    }


def judge_report(execution: Execution | ExecutionRecord, report: Mapping[str, Any],
                 files_received: set[str]) -> tuple[dict[str, Any], str | None]:
    """The runner's finish report: (output values, None), or ({}, why it failed)."""
    if report.get("status") != "succeeded":
        error = report.get("error") or {}
        kind = error.get("type") or "Error"
        return {}, f"{kind}: {error.get('message') or 'the step function failed'}"
    plans = [OutputPlan(o["pipeline_output_name"], o["data_type"], o["mapping_type"],
                        o.get("mapping_value") or {}) for o in execution.outputs]
    return check_outputs(plans, report.get("outputs"), files_received)


def with_values(outputs: Sequence[Mapping[str, Any]], values: Mapping[str, Any]
                ) -> list[dict[str, Any]]:
    items = [dict(o) for o in outputs]
    for item in items:
        if item["data_type"] != "file":
            # an output mapped to null is dropped, whatever the function returned
            item["value"] = (None if item["mapping_type"] == "is_null"
                             else values.get(item["pipeline_output_name"]))
    return items


def system_line(message: str) -> dict[str, Any]:
    return {"timestamp": utcnow().isoformat(), "stream": "system", "message": message}


def failure_lines(reason: str, tail: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The log lines of an execution failed from outside: what its worker printed last,
    then why."""
    now = utcnow().isoformat()
    return [*({"timestamp": now, "stream": "worker", "message": line} for line in tail),
            system_line(f"Execution failed: {reason}")]


def log_rows(execution_id: str, first_seq: int, lines: Sequence[Mapping[str, Any]]
             ) -> list[dict[str, Any]]:
    """execution_logs rows for lines as the runner reports them."""
    return [{"execution_id": execution_id, "seq": first_seq + offset,
             "timestamp": _parse_time(line.get("timestamp")),
             "stream": str(line.get("stream") or "stdout")[:16],
             "message": str(line.get("message", ""))[:MAX_LOG_LINE]}
            for offset, line in enumerate(lines)]


def _parse_time(value: Any) -> datetime:
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        except ValueError:
            pass
    return utcnow()


def from_unix_ms(value: Any, field: str) -> datetime | None:
    """A log window's bound: a Unix time in milliseconds, within the years a date can
    hold (1 to 9999)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{field} must be a Unix time in milliseconds")
    try:
        return datetime.fromtimestamp(value / 1000, UTC)
    except (OverflowError, ValueError, OSError):
        raise BadRequest(f"{field} must be a Unix time in milliseconds between the years "
                         "1 and 9999") from None


def parse_mapping_field(raw: Any, what: str) -> list[Mapping[str, Any]]:
    if raw in (None, ""):
        return []
    if isinstance(raw, str):
        raw = parse_json(raw, what)
    if not isinstance(raw, list) or not all(isinstance(m, dict) for m in raw):
        raise BadRequest(f"{what} must be a list of objects")
    return raw
