"""Executions of low-latency deployments: carried to a warm worker by the pool
(executors/workers.py), recorded here the same way whatever the backend.

Two ways to record them:

* ``dispatch``: in the database as the elastic path does (created by the trigger's
  transaction, the start in one transaction once the worker takes it, the end in another).
  For executions with files, whose inputs and outputs go through the data store.
* ``track``: the endpoint gateway's fast path for everything else. The execution, its
  execution token, start, end and logs are kept in memory and written in batches by the
  journal (executions/journal.py); the deployment, step and environment variables come
  from in-memory snapshots. No query stands between the caller and the worker.

Both count the deployment's ``execution_timeout_s`` from the moment the worker takes the
execution (``_run_within``). Past it the execution fails with ``timeout_reason`` and its
caller gets its answer at once; the call is abandoned on the worker, which Python cannot
make stop a function mid-call, so the worker is replaced (``WorkerPool.replace``): the next
executions run on a new one, and the other executions still running on the old one finish
there first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import update

from gristmill_platform.auth.principal import EXECUTION_SCOPE
from gristmill_platform.auth.tokens import new_sdk_token
from gristmill_platform.db.models.executions import Execution
from gristmill_platform.db.models.steps import Step
from gristmill_platform.db.transactions import Transactions
from gristmill_platform.db.types import utcnow
from gristmill_platform.deployments.directory import Endpoint
from gristmill_platform.deployments.validations import failures, io_values
from gristmill_platform.env_vars.snapshot import EnvironmentSnapshot
from gristmill_platform.errors import AppError, Conflict, NotFound
from gristmill_platform.executions import transitions as t
from gristmill_platform.executions.events import ExecutionEvents
from gristmill_platform.executions.factory import ExecutionServices
from gristmill_platform.executions.io import resolve_deployment_inputs
from gristmill_platform.executions.journal import TrackingJournal
from gristmill_platform.executions.modes import LOW_LATENCY, LOW_LATENCY_BACKEND
from gristmill_platform.executions.records import ExecutionRecord
from gristmill_platform.executions.service import (
    MAX_LOG_LINES_PER_CALL,
    Launch,
    failure_lines,
    judge_report,
    log_rows,
    new_execution_id,
    runner_payload,
    system_line,
    with_values,
)
from gristmill_platform.executions.shadow_queue import ShadowQueue
from gristmill_platform.executions.shadow_runner import ShadowRunner
from gristmill_platform.executors.workers import (
    ExecutionLost,
    StartHook,
    WorkerAnswer,
    WorkerPool,
    behind,
)
from gristmill_platform.telemetry import metrics
from gristmill_platform.timeouts import within

log = logging.getLogger("gristmill.low_latency")

# Under the reconciler's 45 s: executions waiting in line or running on a worker are
# alive as long as this process holds them.
HEARTBEAT_S = 10.0
TAIL_LINES = 50
SHUTDOWN_GRACE_S = 3.0
# Copies waiting to be sent; past this, new ones are dropped (logged and counted). A copy
# is sent when its shadow workers have a free place (shadow_queue.py).
SHADOW_QUEUE_LIMIT = 10_000


def timeout_reason(timeout_s: int) -> str:
    """Why an execution that ran past its deployment's execution_timeout_s failed."""
    return (f"The execution exceeded the deployment's execution timeout ({timeout_s} s) "
            "and was stopped: its low-latency worker is replaced by a new one")


# Fails an execution (reason, last lines of its output): ExecutionRuntime._fail.
FailExecution = Callable[[str, str, Sequence[str]], Awaitable[None]]
# A node of a multi-step pipeline ended: GraphScheduler.node_ended.
NodeEnded = Callable[[str], Awaitable[None]]


@dataclass
class Tracked:
    """An execution on the fast path; ``done`` resolves once it has ended."""

    execution: ExecutionRecord
    done: asyncio.Future[ExecutionRecord]


def worker_handle(pod_id: str, execution_id: str) -> dict[str, str]:
    # No pid on purpose: cancelling one execution must not kill the worker the others
    # share. Should this control service die while it runs, the reconciler finds this
    # handle and fails it (see LOW_LATENCY_BACKEND).
    return {"backend": LOW_LATENCY_BACKEND, "pod_id": pod_id, "execution_id": execution_id}


@dataclass(frozen=True)
class _ShadowCopy:
    endpoint: Endpoint
    body: Mapping[str, Any]
    environment: Mapping[str, str]
    wait_s: float
    at: float  # when it was queued (loop time)


def _places(copy: _ShadowCopy) -> int:
    """How many executions the copy's shadow workers run at once (its deployment's)."""
    deployment = copy.endpoint.deployment
    return max(1, deployment.max_parallel_executions_per_pod or 1) \
        if deployment.enable_parallel_executions else 1


def variant_version(endpoint: Endpoint) -> tuple[int, str, str]:
    """What a variant's warm workers run: the deployment's generation (bumped by its
    update), the pipeline's and its step's ids (new when either is created again)."""
    return (endpoint.deployment.generation,
            endpoint.pipeline.id if endpoint.pipeline is not None else "",
            endpoint.step.id if endpoint.step is not None else "")


class LowLatencyDispatcher:
    def __init__(self, transactions: Transactions, executions: ExecutionServices,
                 pool: WorkerPool, journal: TrackingJournal,
                 environment: EnvironmentSnapshot, events: ExecutionEvents,
                 fail: FailExecution, node_ended: NodeEnded | None = None,
                 follow_wait_s: float = 25.0, shadow_quiet_s: float = 0.02,
                 shadow_max_delay_s: float = 2.0) -> None:
        self.transactions = transactions
        self.node_ended = node_ended
        self.executions = executions
        self.pool = pool
        self.events = events
        self.fail_execution = fail
        self._held: set[str] = set()  # executions waiting for or running on a worker
        self._idle = asyncio.Event()
        self._idle.set()
        self._heartbeat: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._warming: dict[str, asyncio.Task[None]] = {}
        # executions of the database path a worker has taken: their pool key, worker and
        # the task waiting for its answer (abandon)
        self._taken: dict[str, tuple[str, str, asyncio.Task[Any]]] = {}
        self._warmed_for: dict[str, tuple[int, str, str]] = {}  # key -> variant_version
        # own workers rolling to the deployment a call read (follow), by key; and how
        # long a call of the database path waits for them (the gateway's calls: theirs)
        self._following: dict[str, asyncio.Task[None]] = {}
        self.follow_wait_s = follow_wait_s
        # shadow copies waiting for the calls in flight to be answered (shadow)
        self._shadows: ShadowQueue[_ShadowCopy] = ShadowQueue()
        self._shadow_drain: asyncio.Task[None] | None = None
        self._shadow_room = asyncio.Event()  # a copy in flight ended
        # copies yield to the calls (traffic.paused; settings.shadow_quiet_ms)
        self._shadow_quiet_s = shadow_quiet_s
        self._shadow_max_delay_s = shadow_max_delay_s
        self.shadows_dropped = 0
        # set: copies are handed to the shadow runner process (shadow_runner.py) instead of
        # being run here; that process runs them with this class, hand_off unset
        self.hand_off: ShadowRunner | None = None
        # the shadow runner's: told of each copy once it ended, was not run, or dropped
        self.on_settled: Callable[[Endpoint, bool], None] | None = None
        # keys whose warm workers run at a low CPU priority: started for shadow copies only
        self._background: set[str] = set()
        self.journal = journal
        self.environment = environment

    async def dispatch(self, launch: Launch) -> None:
        """Run a committed execution on its deployment's worker and record its end."""
        execution_id = launch.execution_id
        self._hold(execution_id)
        try:
            if (launch.worker_key is None and launch.deployment_id is not None
                    and launch.generation is not None):
                # a periodic fire, a call with an SDK token: as the gateway's calls
                await self.follow(launch.deployment_name or "", launch.deployment_id,
                                  launch.generation, wait_s=self.follow_wait_s)
            answer = await self._run_within(
                launch.worker_key or launch.deployment_name or "",
                lambda pod_id: self._start(launch, pod_id), launch.timeout_s, execution_id)
            if answer is not None:
                await self._finish(execution_id, answer.report, answer.answered_at)
        except ExecutionLost as lost:
            await self._fail(execution_id, lost.reason, lost.tail)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("low-latency dispatch of %s failed", execution_id)
            await self._fail(execution_id, f"the low-latency worker could not run it: {exc}")
        finally:
            self._taken.pop(execution_id, None)
            self._release(execution_id)
        if launch.parent_id is not None and self.node_ended is not None:
            await self.node_ended(execution_id)  # what follows the node may start

    async def warm(self, endpoint: Endpoint, *, wait_s: float, background: bool = False
                   ) -> None:
        """Bring up the warm workers of a variant pipeline (executors/workers.py
        variant_key) on its first call, once however many calls come at once; and roll
        them when what they run changed since (the deployment updated, the pipeline
        deleted and created again under its name: a new pipeline or step), as the
        deployment's own workers roll on its update. The endpoint is the directory's
        (deployments/directory.py), so this follows a change made through any replica.

        background: for shadow copies. Workers first started for them run at a low CPU
        priority (WorkerPool.ensure), so that on a busy machine the answering workers and
        this service go first; a call that a variant answers rolls such workers to the
        normal priority (a process cannot be given back its priority without privileges)."""
        key = endpoint.worker_key
        version = variant_version(endpoint)
        task = self._warming.get(key)
        promote = not background and key in self._background
        restart = task is not None and (self._warmed_for.get(key) != version or promote)
        if task is None or restart or (task.done() and not self.pool.pods(key)):
            low = background and (task is None or key in self._background)
            (self._background.add if low else self._background.discard)(key)
            task = asyncio.get_running_loop().create_task(
                self.pool.ensure(key, wait_s=wait_s, restart=restart, background=low))
            self._warming[key] = task
            self._warmed_for[key] = version
        await asyncio.shield(task)

    async def follow(self, key: str, deployment_id: str, generation: int, *, wait_s: float
                     ) -> None:
        """Before a call goes to a deployment's own warm workers: when they run an older
        version of it than the one the call read (updated, or deleted and created again,
        through another control service sharing the database: docs/rollout.md#replicas),
        roll them and wait (up to wait_s) for the new ones, once however many calls come
        at once, as a variant's first call does (warm). In memory when they are current;
        executors/following.py rolls them within its interval even with no call."""
        if not behind(self.pool.versions(key), deployment_id, generation):
            return
        task = self._following.get(key)
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(
                self.pool.ensure(key, wait_s=wait_s))
            self._following[key] = task
            task.add_done_callback(lambda done: self._forget_following(key, done))
        await asyncio.shield(task)

    def _forget_following(self, key: str, task: asyncio.Task[None]) -> None:
        if self._following.get(key) is task:
            del self._following[key]

    def shadow(self, endpoint: Endpoint, body: Mapping[str, Any],
               environment: Mapping[str, str], *, wait_s: float) -> None:
        """A shadow copy of a call (docs/rollout.md): queued, and dispatched once the
        callers pause (no call in flight for shadow_quiet_s, traffic.paused; at the latest
        when it has waited shadow_max_delay_s), so none of its work (recording it,
        sending it, its answer) runs between a caller's own steps, nor between two calls
        of a sequential caller (docs/performance-log.md#rollout). Whatever becomes of
        it (a pipeline not ready, bad inputs for it, a crash, slowness) is its own. It is
        sent when its shadow workers have a free place (shadow_queue.py); past
        SHADOW_QUEUE_LIMIT copies waiting, new ones are dropped (logged and counted).

        With a hand_off, the copy is only handed to the shadow runner process, which does
        all of the above on its own event loop (shadow_runner.py)."""
        if self.hand_off is not None:
            if not self.hand_off.offer(endpoint.path, endpoint.deployment.name,
                                       endpoint.pipeline_name, body):
                self._dropped(endpoint, self.hand_off.waiting)
            return
        if not self._shadows.offer(endpoint.worker_key,
                                   _ShadowCopy(endpoint, body, environment, wait_s,
                                               asyncio.get_running_loop().time()),
                                   SHADOW_QUEUE_LIMIT):
            self._dropped(endpoint, len(self._shadows))
            return
        if self._shadow_drain is None:
            self._shadow_drain = asyncio.get_running_loop().create_task(self._drain_shadows())

    @property
    def shadows_unended(self) -> int:
        """Shadow copies queued and not yet ended: waiting for a pause of the calls,
        handed to the shadow runner, or running (the live gauge)."""
        if self.hand_off is not None:
            return self.hand_off.waiting
        return self._shadows.unended()

    def _dropped(self, endpoint: Endpoint, waiting: int) -> None:
        self.shadows_dropped += 1
        metrics.SHADOW_COPIES_DROPPED.labels(endpoint.deployment.name).inc()
        log.warning("%d shadow copies wait already: the copy for %s of a call to %s is "
                    "dropped (%d dropped so far)", waiting, endpoint.pipeline_name,
                    endpoint.deployment.name, self.shadows_dropped)
        if self.on_settled is not None:
            self.on_settled(endpoint, True)

    async def _drain_shadows(self) -> None:
        try:
            while len(self._shadows):
                taken = self._shadows.take(_places)
                if taken is None:  # every waiting copy's workers are busy with copies
                    self._shadow_room.clear()
                    await self._shadow_room.wait()
                    continue
                # once the callers pause, or when the copy is overdue
                overdue_in = self._shadow_max_delay_s - (
                    asyncio.get_running_loop().time() - taken[1].at)
                await self.journal.traffic.paused(self._shadow_quiet_s, overdue_in)
                await self._copy(*taken)
        finally:
            self._shadow_drain = None

    async def _copy(self, key: str, copy: _ShadowCopy) -> None:
        endpoint = copy.endpoint
        try:
            step = endpoint.step
            if step is None or step.status != "ready":
                log.warning("shadow pipeline %s is not ready: no copy", endpoint.pipeline_name)
                self._shadow_ended(key, endpoint)
                return
            await self.warm(endpoint, wait_s=copy.wait_s, background=True)
            tracked = self.track(endpoint, copy.body, copy.environment, shadow=True)
        except Exception:
            log.exception("the shadow copy for %s was not run", endpoint.pipeline_name)
            self._shadow_ended(key, endpoint)
            return
        tracked.done.add_done_callback(lambda _: self._shadow_ended(key, endpoint))

    def _shadow_ended(self, key: str, endpoint: Endpoint) -> None:
        self._shadows.ended(key)
        self._shadow_room.set()
        if self.on_settled is not None:
            self.on_settled(endpoint, False)

    def track(self, endpoint: Endpoint, body: Mapping[str, Any],
              environment: Mapping[str, str], *, shadow: bool = False) -> Tracked:
        """Create an execution of a fast-path endpoint (directory.Endpoint.fast) from the
        caller's inputs and run it on the deployment's worker in the background. Raises
        the same 400s as the database path, before anything is recorded."""
        deployment, pipeline, step = endpoint.deployment, endpoint.pipeline, endpoint.step
        assert pipeline is not None and step is not None and deployment.created_by
        resolved = resolve_deployment_inputs(step.inputs, deployment.inputs_mapping, body,
                                             set(), environment)
        plans = endpoint.output_plans
        now = utcnow()
        execution = ExecutionRecord(
            id=new_execution_id(pipeline.name), pipeline_id=pipeline.id,
            pipeline_name=pipeline.name, step_id=step.id, step_name=step.name,
            deployment_id=deployment.id, deployment_name=deployment.name,
            execution_rule=deployment.execution_rule, status=t.PENDING,
            inputs=[r.record() for r in resolved], outputs=[p.record() for p in plans],
            created_by=deployment.created_by, created_at=now, heartbeat_at=now,
            shadow=shadow)
        fresh = new_sdk_token()
        # the sdk_tokens row, hashed as any other token
        token = {"id": fresh.token_id, "user_id": deployment.created_by,
                 "name": f"execution {execution.id}", "secret_hash": fresh.secret_hash,
                 "scope": EXECUTION_SCOPE, "execution_id": execution.id, "created_at": now,
                 "expires_at": None, "revoked_at": None, "last_used_at": None}
        self.journal.created(execution, token)
        metrics.execution_started(LOW_LATENCY, execution.execution_rule)
        tracked = Tracked(execution, asyncio.get_running_loop().create_future())
        task = asyncio.get_running_loop().create_task(
            self._run_tracked(tracked, step, endpoint.worker_key, fresh.token_id,
                              fresh.plaintext, endpoint.validations,
                              deployment.execution_timeout_s))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return tracked

    async def _run_tracked(self, tracked: Tracked, step: Step, worker_key: str,
                           token_id: str, token: str, validations: Mapping[str, str],
                           timeout_s: int | None = None) -> None:
        execution = tracked.execution
        self._hold(execution.id)
        lines: list[dict[str, Any]] = []
        reason: str | None = None
        ended_at: datetime | None = None

        async def start(pod_id: str) -> dict[str, Any] | None:
            execution.status = t.transition(execution.status, t.RUNNING)
            execution.started_at = execution.heartbeat_at = utcnow()
            execution.worker = pod_id
            execution.handle = worker_handle(pod_id, execution.id)
            self.journal.changed(execution)
            return await self._request(runner_payload(execution, step), token)

        try:
            answer = await self._run_within(worker_key, start, timeout_s, execution.id)
            assert answer is not None
            report = answer.report
            ended_at = answer.answered_at
            reported = report.get("logs")
            lines = list(reported) if isinstance(reported, list) else []
            values, reason = judge_report(execution, report, set())
            if reason is None:
                execution.outputs = with_values(execution.outputs, values)
                if validations:
                    execution.validation_failures = failures(
                        validations, io_values(execution.inputs, execution.outputs))
            else:
                lines.append(system_line(reason))
        except ExecutionLost as lost:
            reason = lost.reason
            lines = failure_lines(reason, lost.tail[-TAIL_LINES:])
        except Exception as exc:  # never leave the caller waiting, nor the execution running
            log.exception("low-latency execution %s failed", execution.id)
            reason = f"the low-latency worker could not run it: {exc}"
            lines = failure_lines(reason)
        finally:
            if execution.status in t.ACTIVE:
                execution.status = t.transition(execution.status,
                                                t.FAILED if reason else t.SUCCEEDED)
                execution.status_reason = reason
                execution.ended_at = ended_at or utcnow()
            self.journal.ended(execution, log_rows(execution.id, 0, lines), token_id,
                               utcnow())
            metrics.execution_ended(LOW_LATENCY, execution.status, execution.execution_rule)
            self._release(execution.id)
            if not tracked.done.done():
                tracked.done.set_result(execution)
            self.events.notify(execution.id)

    async def shutdown(self) -> None:
        """Stop the workers; the executions they ran are failed by their dispatches, which
        get a moment to record it while the database is still there."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._shadow_drain is not None:
            self._shadow_drain.cancel()  # copies not sent yet are dropped
        await self.pool.shutdown()
        with contextlib.suppress(TimeoutError):
            await within(self._idle.wait(), SHUTDOWN_GRACE_S)
        await self.journal.shutdown()

    async def _run_within(self, key: str, start: StartHook, timeout_s: int | None,
                          execution_id: str) -> WorkerAnswer | None:
        """pool.run, the deployment's execution timeout counted from the moment the worker
        takes the execution (start returns its request). Past it: ExecutionLost with
        timeout_reason, the worker replaced and the request abandoned."""
        if not timeout_s:
            return await self.pool.run(key, start)
        loop = asyncio.get_running_loop()
        taken: asyncio.Future[str] = loop.create_future()

        async def timed_start(pod_id: str) -> dict[str, Any] | None:
            body = await start(pod_id)
            if body is not None and not taken.done():
                taken.set_result(pod_id)
            return body

        run = loop.create_task(self.pool.run(key, timed_start))
        try:
            await asyncio.wait((run, taken), return_when=asyncio.FIRST_COMPLETED)
            if not run.done():
                await asyncio.wait((run,), timeout=timeout_s)
            if run.done():
                return run.result()
            reason = timeout_reason(timeout_s)
            self.pool.replace(key, taken.result(),
                              f"execution {execution_id} exceeded the deployment's "
                              f"execution timeout ({timeout_s} s)")
            run.cancel()  # closes its connection: the worker's place is given back
            await asyncio.wait((run,))
            raise ExecutionLost(reason)
        finally:
            if not run.done():  # this dispatch was cancelled
                run.cancel()

    # -- recording ----------------------------------------------------------------------------

    async def _start(self, launch: Launch, pod_id: str) -> dict[str, Any] | None:
        execution_id = launch.execution_id
        async with self.transactions() as session:
            service = self.executions(session)
            execution = await service.repository.get(execution_id)
            step = (await session.get(Step, execution.step_id)
                    if execution is not None else None)
            try:
                payload = await service.start(execution_id, step, elastic=False)
            except (NotFound, Conflict):
                return None  # deleted, cancelled or already started: nothing to run
            if execution is not None:
                execution.worker = pod_id
                execution.handle = worker_handle(pod_id, execution_id)
        task = asyncio.current_task()
        if task is not None:
            key = launch.worker_key or launch.deployment_name or ""
            self._taken[execution_id] = (key, pod_id, task)
        return await self._request(payload, launch.sdk_token)

    def abandon(self, execution_id: str, reason: str) -> bool:
        """An execution ended from outside while a worker runs it (cancelled, deleted, a
        node of a graph stopped because another failed): as for a timeout (_run_within),
        its worker is replaced, so that the call stops with it once the other executions
        it runs have answered, and its request is abandoned. False when no worker of this
        process runs it (not started, ended, or on the in-memory fast path)."""
        taken = self._taken.pop(execution_id, None)
        if taken is None:
            return False
        key, pod_id, task = taken
        self.pool.replace(key, pod_id, f"execution {execution_id} was stopped: {reason}")
        task.cancel()  # closes its connection: the worker's place is given back
        return True

    async def _request(self, payload: dict[str, Any], token: str) -> dict[str, Any]:
        """The worker's request: the runner's payload, the execution token and the
        environment variables as they are now (refreshed for every execution)."""
        environment = await self.environment.current()
        return {**payload, "sdk_token": token, "env": dict(environment)}

    async def _finish(self, execution_id: str, report: dict[str, Any],
                      ended_at: datetime) -> None:
        lines = report.get("logs")
        lines = lines if isinstance(lines, list) else []
        try:
            async with self.transactions() as session:
                service = self.executions(session)
                # finish takes one batch of lines: an execution that printed more has the
                # earlier ones stored first, in order
                while len(lines) > MAX_LOG_LINES_PER_CALL:
                    await service.append_logs(execution_id, lines[:MAX_LOG_LINES_PER_CALL],
                                              heartbeat=False)
                    lines = lines[MAX_LOG_LINES_PER_CALL:]
                # Conflict: already ended (cancelled, or failed by the reconciler)
                with contextlib.suppress(Conflict):
                    await service.finish(execution_id, {**report, "logs": lines},
                                         ended_at=ended_at)
                await service.auth.revoke_execution_tokens(execution_id)
        except NotFound:
            pass  # deleted while it ran
        except AppError as exc:
            await self._fail(execution_id, f"the result could not be recorded: {exc.message}")
            return
        self.events.notify(execution_id)

    async def _fail(self, execution_id: str, reason: str, tail: Sequence[str] = ()) -> None:
        try:
            await self.fail_execution(execution_id, reason, list(tail)[-TAIL_LINES:])
        except Exception:
            log.exception("could not record the failure of %s", execution_id)

    # -- liveness -----------------------------------------------------------------------------

    def _hold(self, execution_id: str) -> None:
        self._held.add(execution_id)
        self._idle.clear()
        if self._heartbeat is None:
            self._heartbeat = asyncio.get_running_loop().create_task(self._heartbeat_forever())

    def _release(self, execution_id: str) -> None:
        self._held.discard(execution_id)
        if not self._held:
            self._idle.set()

    async def _heartbeat_forever(self) -> None:
        """Executions held here are alive: without this the reconciler would fail one that
        waits in line (or runs) for longer than its heartbeat timeout."""
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            held = list(self._held)
            if not held:
                continue
            try:
                await self._beat(held)
            except Exception:
                log.exception("could not record the heartbeat of low-latency executions")

    async def _beat(self, held: list[str]) -> None:
        """The heartbeat of the held executions the database has. A plain session, not a
        transaction of Transactions, whose barrier would write what the journal holds on
        the event loop, between warm calls (docs/performance-log.md#latency): one not written
        yet gets a heartbeat as fresh as this one when it is (its start or its creation,
        under 2 s ago: RUNNING_VISIBLE_AFTER_S plus a batch)."""
        async with self.transactions.session_factory() as session, session.begin():
            await session.execute(
                update(Execution)
                .where(Execution.id.in_(held), Execution.status.in_(t.ACTIVE))
                .values(heartbeat_at=utcnow())
                .execution_options(synchronize_session=False))
