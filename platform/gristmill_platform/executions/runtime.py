"""The execution machinery that lives as long as the control service: launching workers
after a run is committed, noticing workers that die, waking long-polls.

Elastic executions run on the backend the settings choose: local processes
(executors/local.py), or pods (executors/kubernetes/), followed by a PodWatcher since a pod
does not call back when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from gristmill_platform.db.models.deployments import Deployment
from gristmill_platform.db.models.executions import Execution
from gristmill_platform.db.models.steps import Step
from gristmill_platform.db.transactions import Transactions
from gristmill_platform.db.types import utcnow
from gristmill_platform.deployments.repository import DeploymentRepository
from gristmill_platform.env_vars.repository import EnvVarRepository
from gristmill_platform.env_vars.snapshot import EnvironmentSnapshot
from gristmill_platform.executions import transitions as t
from gristmill_platform.executions.admission import ElasticAdmission, machine_capacity
from gristmill_platform.executions.events import ExecutionEvents
from gristmill_platform.executions.factory import ExecutionServices
from gristmill_platform.executions.graph_scheduler import (
    UNKNOWN,
    GraphScheduler,
    UnknownParent,
)
from gristmill_platform.executions.journal import TrackingJournal
from gristmill_platform.executions.local_channel import LocalChannelCalls
from gristmill_platform.executions.low_latency import LowLatencyDispatcher
from gristmill_platform.executions.modes import LOW_LATENCY_BACKEND
from gristmill_platform.executions.pool_claims import PoolClaims
from gristmill_platform.executions.repository import (
    STATUS,
    ExecutionOutcome,
    ExecutionRepository,
)
from gristmill_platform.executions.runner_env import IMAGE_STEP_DIR, runner_env
from gristmill_platform.executions.runtime_calls import RuntimeCalls
from gristmill_platform.executions.service import GRAPH_BACKEND, MAX_LOG_LINES_PER_CALL, Launch
from gristmill_platform.executors.base import LogLine
from gristmill_platform.executors.kubernetes.config import kubernetes_config
from gristmill_platform.executors.kubernetes.elastic_pool import ElasticPool
from gristmill_platform.executors.kubernetes.executor import BACKEND as KUBERNETES
from gristmill_platform.executors.kubernetes.executor import KubernetesExecutor
from gristmill_platform.executors.kubernetes.pod_logs import unshipped
from gristmill_platform.executors.kubernetes.sweeper import OrphanSweeper
from gristmill_platform.executors.kubernetes.watcher import PodWatcher
from gristmill_platform.executors.local import LocalExecutor
from gristmill_platform.executors.spec import (
    PASSED_ENV,
    Handle,
    LaunchSpec,
    PollResult,
    Resources,
    WorkerState,
)
from gristmill_platform.executors.workers import WorkerPool
from gristmill_platform.executors.zygotes import ZygotePool
from gristmill_platform.logs import execution_context, redactor
from gristmill_platform.steps.environments import python_of
from gristmill_platform.steps.repository import StepRepository
from gristmill_platform.units import ram_bytes

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from gristmill_platform.settings import Settings

log = logging.getLogger("gristmill.executions")
HEARTBEAT_TIMEOUT = timedelta(seconds=45)
RECONCILE_EVERY_S = 5.0
RUNNER = ("-m", "gristmill.runtime", "run")
# In the runtime images (runtime-images/*/Dockerfile) `python` is the image's venv
# (/opt/venv/bin is first on PATH).
IMAGE_PYTHON = "python"
# Pod log lines stored in the execution's logs are marked as coming from the worker, as the
# local backend marks the tail of a worker that died.
WORKER_STREAM = "worker"


class _Superseded(Exception):
    """The execution changed (cancelled, deleted) while its local worker was forked."""


class LaunchRefused(Exception):
    """The execution cannot be started as it stands; the message is for the user."""


def step_image(step: Step) -> str | None:
    """The step's image, set when its image build finished (Kubernetes backend)."""
    return step.image or None


@dataclass(frozen=True)
class LaunchContext:
    """What launching an execution reads from the database, in one transaction."""

    step: Step | None
    execution: Execution | None
    deployment: Deployment | None
    variables: dict[str, str]


class StepFiles(Protocol):
    """Where a built step's code and environment are (steps/builds.py StepBuilds)."""

    def code_dir(self, step_id: str) -> Path: ...

    def environment_dir(self, key: str) -> Path: ...


class ExecutionRuntime:
    def __init__(self, settings: Settings, transactions: Transactions,
                 executions: ExecutionServices, steps: StepFiles, workers: WorkerPool,
                 journal: TrackingJournal, environment: EnvironmentSnapshot) -> None:
        self.settings = settings
        self.transactions = transactions
        self.executions = executions
        self.steps = steps
        self.events = ExecutionEvents()
        # The local executor always exists: it runs elastic executions with the local
        # backend, and the resource monitor watches its processes.
        zygotes = (ZygotePool(settings.data_dir / "workers" / ".fork-servers",
                              settings.local_fork_server_idle_s)
                   if settings.local_fork_server else None)
        # the runner's start, logs and finish, over HTTP or a forked worker's channel
        self.calls = RuntimeCalls(transactions, executions, self.finished)
        self.executor = LocalExecutor(settings.data_dir / "workers", self._worker_exited,
                                      zygotes, LocalChannelCalls(self.calls))
        self.kubernetes: KubernetesExecutor | None = None
        self.watcher: PodWatcher | None = None
        self.sweeper: OrphanSweeper | None = None
        self.pool: ElasticPool | None = None
        if settings.executor == "kubernetes":
            self.kubernetes = KubernetesExecutor(kubernetes_config(settings),
                                                 log_sink=self._keep_pod_logs)
            self.watcher = PodWatcher(self.kubernetes, self._pod_ended,
                                      settings.kubernetes_watch_interval_s)
            self.sweeper = OrphanSweeper(self.kubernetes, self._live_executions,
                                         self.watcher.following)
            if settings.kubernetes_elastic_pool_size > 0:
                assert settings.secret_key
                self.pool = ElasticPool(
                    self.kubernetes, secret_key=settings.secret_key,
                    size=settings.kubernetes_elastic_pool_size,
                    idle_s=settings.kubernetes_elastic_pool_idle_s,
                    environment_url=settings.worker_url,
                    owner=f"{socket.gethostname()}-{settings.port}",
                    interval_s=settings.kubernetes_watch_interval_s)
        self.pool_claims = PoolClaims(transactions, executions, self.pool,
                                      settings.worker_url)
        self._tasks: set[asyncio.Task[Any]] = set()
        # Local workers whose finish was recorded: their exit has nothing left to record.
        self._reported: set[str] = set()
        self._reconciler: asyncio.Task[None] | None = None
        # the warm workers of low-latency deployments, and what runs executions on them
        self.workers = workers
        self.environment = environment
        self.low_latency = LowLatencyDispatcher(
            transactions, executions, workers, journal, environment, self.events, self._fail,
            node_ended=lambda execution_id: self.graphs.node_ended(execution_id),
            follow_wait_s=settings.step_build_wait_s,
            shadow_quiet_s=settings.shadow_quiet_ms / 1000,
            shadow_max_delay_s=settings.shadow_max_delay_ms / 1000)
        # multi-step pipelines: their nodes go through launch() like any execution
        self.graphs = GraphScheduler(transactions, executions, self.launch, self.stop_worker,
                                     self.events.notify, steps.code_dir)
        # local workers only: Kubernetes schedules pods itself
        self.admission: ElasticAdmission | None = None
        if self.kubernetes is None:
            self.admission = ElasticAdmission(
                settings.worker_capacity or machine_capacity(), settings.elastic_queue_limit,
                self._launch)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- launching ----------------------------------------------------------------------------

    def check_room(self) -> None:
        """Refuse (503, Retry-After) a new elastic execution when too many already wait;
        call before recording it."""
        if self.admission is not None:
            self.admission.check_room()

    def launch(self, launch: Launch) -> None:
        """Start the worker, or queue it for a free one; call once the execution is
        committed. A graph's execution has no worker: its scheduler starts its nodes,
        each through this same path (and its admission)."""
        if launch.graph:
            self._spawn(self.graphs.advance(launch.execution_id))
            return
        if launch.low_latency:
            self._spawn(self.low_latency.dispatch(launch))
        elif self.admission is not None:
            self.admission.admit(launch.execution_id, launch)
        else:
            self._spawn(self._launch(launch))

    def cancelled(self, execution_ids: Sequence[str]) -> None:
        """After executions were cancelled: those still waiting for a worker leave the
        queue, and whoever waits on them is woken."""
        for execution_id in execution_ids:
            if self.admission is not None:
                self.admission.withdraw(execution_id)
            self.events.notify(execution_id)

    def _release(self, execution_id: str) -> None:
        if self.admission is not None:
            self.admission.release(execution_id)

    async def _launch(self, launch: Launch) -> None:
        # its own task (see _spawn): what it logs is about this execution only
        execution_context.set(launch.execution_id)
        try:
            if self.kubernetes is None:
                await self._launch_local(launch)
            else:
                await self._launch_pod(launch, self.kubernetes)
        except LaunchRefused as refused:
            await self._fail(launch.execution_id, str(refused))
        except Exception as exc:
            log.exception("could not launch %s", launch.execution_id)
            await self._fail(launch.execution_id, f"could not start the worker: {exc}")

    async def _launch_local(self, launch: Launch) -> None:
        """A local worker, forked (or spawned) within the transaction that records its
        start and its handle: one transaction, not one before the fork and one after.

        Nothing in it locks the row on SQLite (its reads take no lock), so the start is
        written only if the execution is still as it was read (a compare-and-set): a
        cancel or a delete committed during the fork wins, and the worker is stopped.
        Until the transaction has ended, the worker's channel answers nothing but the
        start it was given, and its exit is not reported: a finish, or a failure, must
        find the start and the handle written.

        On SQLite an execution this process recorded just before (``launch.recorded``) is
        not read back: only its status, which a cancel or a delete may have changed
        meanwhile, on a bare connection; the variables are the in-memory snapshot the warm
        workers' calls use (_fresh). The launch's read took
        no lock there anyway. On PostgreSQL the launch reads the row locked, so a cancel
        waits for the start it records."""
        recorded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        handle: Handle | None = None
        try:
            fresh = await self._fresh(launch)
            async with self.transactions() as session:
                service = self.executions(session)
                if fresh is None:
                    context = await self._context(session, launch)
                    waited = await service.repository.get(launch.execution_id,
                                                          for_update=True)
                    step, variables = context.step, context.variables
                else:
                    waited, step, variables = fresh
                if waited is None or waited.status not in t.ACTIVE:
                    # deleted or cancelled while it waited
                    self._release(launch.execution_id)
                    return
                if step is None or not step.environment_key:
                    raise RuntimeError("the step's environment is missing; create the step "
                                       "again")
                read_status = waited.status
                start_answer: dict[str, Any] | None = None
                started: dict[str, Any] = {}
                if read_status == t.PENDING:
                    # Started with the launch: the worker's /start is answered over its
                    # channel without another transaction.
                    start_answer = service.start_launched(waited, step)
                    started = {"status": waited.status, "started_at": waited.started_at,
                               "heartbeat_at": waited.heartbeat_at}
                if fresh is None:
                    # written below with the handle, under the compare-and-set, not flushed
                    session.expunge(waited)
                spec = self._spec(launch, step.environment_key, variables)
                handle = await self.executor.submit(spec, start_answer, recorded=recorded)
                if not await service.repository.set_columns_if(
                        launch.execution_id, read_status, **started, handle=handle,
                        worker=f"local-{handle['pid']}"):
                    raise _Superseded
        except _Superseded:
            # cancelled or deleted during the fork: its worker must not run on
            assert handle is not None
            recorded.set_result(None)
            await self.executor.cancel(handle)
        except BaseException:
            if handle is not None:  # the start and its handle were not written
                recorded.set_result(None)
                await self.executor.cancel(handle)
            raise
        finally:
            if not recorded.done():
                recorded.set_result(None)

    async def _fresh(self, launch: Launch) -> tuple[Execution, Step, dict[str, str]] | None:
        """The execution and step ``launch`` was recorded with, still pending, and the
        variables (a change through this process is in them at once, one made by another
        process within the snapshot's second); None: read them all in the launch's
        transaction (a launch made from the database, or one cancelled, deleted or started
        meanwhile, or a database whose read locks the row)."""
        if (self.transactions.row_locks or launch.recorded is None
                or launch.recorded.execution.status != t.PENDING):
            return None
        if await self.transactions.read(STATUS, launch.execution_id) != t.PENDING:
            return None
        # the variables as the warm workers get them (env_vars/snapshot.py)
        variables = dict(await self.environment.current())
        redactor.register(*variables.values())
        return launch.recorded.execution, launch.recorded.step, variables

    async def _launch_pod(self, launch: Launch, kubernetes: KubernetesExecutor) -> None:
        async with self.transactions() as session:
            context = await self._context(session, launch)
        spec = self._kubernetes_spec(launch, context)
        handle = await self._pool_pod(spec, launch)
        if handle is None:
            handle = await kubernetes.submit(spec)
        worker = str(handle["name"])
        try:
            async with self.transactions() as session:
                recorded = await ExecutionRepository(session).set_columns(
                    launch.execution_id, handle=handle, worker=worker)
        except Exception:
            if handle.get("pool"):
                await self._release_pool_pod(handle)
            raise
        if handle.get("pool"):
            if not recorded:  # deleted meanwhile: its pod claims nothing
                await self._release_pool_pod(handle)
            else:
                assert self.pool is not None
                self.pool.assigned(worker)
        if self.watcher is not None:
            # followed even if the execution was deleted meanwhile: its pod must go
            self.watcher.follow(handle)

    async def _pool_pod(self, spec: LaunchSpec, launch: Launch) -> Handle | None:
        """An idle pool pod given the execution, or None (a cold pod runs it). The pool
        is never a reason for an execution not to run: its failures take the cold path."""
        if self.pool is None:
            return None
        try:
            return await self.pool.take(spec, launch.step_id)
        except Exception:
            log.warning("the elastic pool failed to give %s a pod; a cold pod runs it",
                        launch.execution_id, exc_info=True)
            return None

    async def _release_pool_pod(self, handle: Handle) -> None:
        """A pool pod given an execution that was not recorded: stop it (its execution,
        if any, fails or was deleted), the watcher deletes it once ended."""
        assert self.kubernetes is not None
        try:
            await self.kubernetes.cancel(handle)
        except Exception:
            log.warning("could not stop pool pod %s", handle.get("name"), exc_info=True)

    async def _context(self, session: AsyncSession, launch: Launch) -> LaunchContext:
        step = await StepRepository(session).get(launch.step_id)
        variables = {v.name: v.value for v in await EnvVarRepository(session).list()}
        redactor.register(*variables.values())
        if self.kubernetes is None:  # the local backend reads nothing more
            return LaunchContext(step, None, None, variables)
        execution = await ExecutionRepository(session).get(launch.execution_id)
        deployment = (await DeploymentRepository(session).get(launch.deployment_id)
                      if launch.deployment_id else None)
        return LaunchContext(step, execution, deployment, variables)

    def _spec(self, launch: Launch, environment_key: str, variables: dict[str, str]
              ) -> LaunchSpec:
        """A local worker: the step's virtual environment, its code folder on disk."""
        code = self.steps.code_dir(launch.step_id)
        python = python_of(self.steps.environment_dir(environment_key))
        env = {
            **{k: v for k, v in os.environ.items() if k in PASSED_ENV},
            **runner_env(self.settings.environment_url, launch.sdk_token,
                         launch.execution_id, str(code),
                         str(self.executor.io_dir(launch.execution_id)), variables,
                         access_token=launch.access_token),
        }
        return LaunchSpec(
            execution_id=launch.execution_id, step_name="", pipeline_name="",
            language="", argv=(str(python), *RUNNER), env=env, timeout_s=launch.timeout_s,
        )

    def _kubernetes_spec(self, launch: Launch, context: LaunchContext) -> LaunchSpec:
        """A pod: the step's image, which holds the code in /app and its requirements.

        Nothing of the control service's own environment is passed (its PATH would hide
        the image's venv); the worker reaches the service at the internal URL.
        """
        assert self.kubernetes is not None
        step, execution, deployment = context.step, context.execution, context.deployment
        if step is None or execution is None:
            raise LaunchRefused("the execution or its step was deleted before it started")
        image = step_image(step)
        if image is None:
            raise LaunchRefused(
                f"the step {step.name!r} has no container image: it was built before this "
                "environment ran on Kubernetes, or its image build has not finished. Create "
                "the step (or pipeline) again.")
        file_io = (any(item.get("file") for item in execution.inputs)
                   or any(item["data_type"] == "file" for item in execution.outputs))
        resources = Resources()
        if deployment is not None:
            resources = Resources(
                memory_bytes=ram_bytes(deployment.ram_request) if deployment.ram_request
                else None,
                gpu=deployment.gpu_request or 0)
        # With file_io the pod gets a volume at cfg.io_dir and GRISTMILL_IO_DIR pointing
        # at it (manifests); without, the runner makes a temporary folder if ever needed.
        env = runner_env(self.settings.worker_url, launch.sdk_token,
                         launch.execution_id, IMAGE_STEP_DIR, None, context.variables)
        return LaunchSpec(
            execution_id=launch.execution_id, step_name=step.name,
            pipeline_name=execution.pipeline_name,
            language=str(step.container_config.get("language") or ""),
            argv=(IMAGE_PYTHON, *RUNNER), env=env, resources=resources, image=image,
            deployment_name=launch.deployment_name, timeout_s=execution.timeout_s,
            file_io=file_io,
        )

    # -- endings ------------------------------------------------------------------------------

    async def finished(self, execution_id: str, parent_id: str | None,
                       ending: ExecutionOutcome | None = None) -> None:
        """After a runner's finish committed: wake waiters (with the ending it committed:
        the outputs long-poll answers from it without reading the row again), and the
        graph the execution is a node of (parent_id: its parent, read with it) goes on."""
        if self.executor.has_worker(execution_id):
            self._reported.add(execution_id)  # popped when its process exits
        self.events.notify(execution_id, ending)
        await self.graphs.node_ended(execution_id, parent_id)

    async def _worker_exited(self, execution_id: str, outcome: PollResult,
                             tail: Sequence[LogLine]) -> None:
        if execution_id in self._reported:
            # Its finish committed the end (and woke waiters and its graph): failing it
            # would read it only to find it ended.
            self._reported.discard(execution_id)
        else:
            if outcome.state == WorkerState.SUCCEEDED:
                reason = "the worker exited without reporting a result"
            else:
                reason = outcome.reason or "the worker failed"
            await self._fail(execution_id, reason, [line.message for line in tail][-50:],
                             only_if_silent=outcome.state == WorkerState.SUCCEEDED)
        await self.executor.cleanup({"execution_id": execution_id})
        self._release(execution_id)  # its process is gone: the next one may start

    async def _pod_ended(self, execution_id: str, handle: Handle, outcome: PollResult) -> bool:
        """A pod ended (or is gone): keep its logs, delete it, and fail the execution with
        the outcome's reason unless the runner reported a result. True once the pod is
        deleted; False leaves it followed, to be tried again.

        The logs are kept first so that the last lines the worker printed come before
        the failure in the execution's logs.
        """
        assert self.kubernetes is not None
        try:
            await self.kubernetes.cleanup(handle)  # log sink first, then the delete
            cleaned = True
        except Exception:
            # the execution still gets its outcome; the pod (and its logs) wait for a retry
            log.warning("could not clean the pod of %s up", execution_id, exc_info=True)
            cleaned = False
        if outcome.state == WorkerState.SUCCEEDED:
            reason = "the worker exited without reporting a result"
        else:
            reason = outcome.reason or "the worker failed"
        await self._fail(execution_id, reason,
                         only_if_silent=outcome.state == WorkerState.SUCCEEDED)
        return cleaned

    async def _keep_pod_logs(self, handle: Handle, lines: Sequence[LogLine]) -> None:
        """The Kubernetes executor's log sink: called with the pod's whole log before the
        pod is deleted. Stores only what the runner did not send itself (pod_logs.py)."""
        execution_id = str(handle["execution_id"])
        async with self.transactions() as session:
            service = self.executions(session)
            if await service.repository.get(execution_id) is None:
                return  # deleted: nothing to keep them for
            stored = await service.repository.logs(execution_id, start=None, end=None,
                                                   limit=None)
            missing = unshipped(lines, [row.message for row in stored
                                        if row.stream != "system"])
            rows = [{"timestamp": line.timestamp.isoformat(), "stream": WORKER_STREAM,
                     "message": line.message} for line in missing]
            for first in range(0, len(rows), MAX_LOG_LINES_PER_CALL):
                await service.append_logs(execution_id,
                                          rows[first:first + MAX_LOG_LINES_PER_CALL],
                                          heartbeat=False)

    async def stop_worker(self, handle: Handle) -> None:
        """Stop the worker of an execution being deleted (or cancelled)."""
        if handle.get("backend") == GRAPH_BACKEND:
            return  # no worker: its nodes are stopped one by one
        if handle.get("backend") == LOW_LATENCY_BACKEND:
            # a warm worker others share: replaced, the call stopping with it
            self.low_latency.abandon(str(handle.get("execution_id")),
                                     "it was cancelled or deleted")
            return
        if handle.get("backend") == KUBERNETES:
            if self.kubernetes is None or self.watcher is None:
                log.warning("execution %s ran on Kubernetes, but this service is configured "
                            "for local workers: its pod %s is left as it is",
                            handle.get("execution_id"), handle.get("name"))
                return
            await self.kubernetes.cancel(handle)
            # followed here too, whoever launched it: the ended pod must be deleted
            self.watcher.follow(handle)
            return
        await self.executor.cancel(handle)

    async def _fail(self, execution_id: str, reason: str, tail: Sequence[str] = (),
                    *, only_if_silent: bool = False) -> None:
        parent_id: str | UnknownParent | None = UNKNOWN
        try:
            async with self.transactions() as session:
                service = self.executions(session)
                execution = await service.repository.get(execution_id)
                if execution is not None:
                    parent_id = execution.parent_id
                if execution is None or execution.status not in t.ACTIVE:
                    return
                if only_if_silent and execution.status == t.PENDING:
                    reason = "the worker exited before starting the step"
                await service.fail(execution_id, reason, tail)
                await service.auth.revoke_execution_tokens(execution_id)
        finally:
            self.events.notify(execution_id)
            if self.admission is not None and not self.executor.has_worker(execution_id):
                # failed before its worker started (a worker that did is released when
                # its process exits)
                self._release(execution_id)
            self._spawn(self.graphs.node_ended(execution_id, parent_id))

    # -- reconciling --------------------------------------------------------------------------

    def start(self) -> None:
        self._reconciler = asyncio.get_running_loop().create_task(self._reconcile_forever())
        if self.watcher is not None:
            self._spawn(self._adopt_pods())
            self.watcher.start()
        if self.sweeper is not None:
            self.sweeper.start()
        if self.pool is not None:
            self.pool.start()

    async def _live_executions(self, ids: Sequence[str]) -> set[str]:
        """The orphan sweeper's question: which of these executions are still live."""
        async with self.transactions() as session:
            return await ExecutionRepository(session).active_ids(ids)

    async def _adopt_pods(self) -> None:
        """At start-up, follow the pods of every active execution launched on Kubernetes:
        they may have ended while no control service was watching."""
        assert self.watcher is not None
        async with self.transactions() as session:
            active = await ExecutionRepository(session).active()
            handles = [e.handle for e in active if e.handle and is_pod(e.handle)]
        for handle in handles:
            self.watcher.follow(handle)

    async def _resume_waiting(self) -> None:
        """At start-up, queue again the elastic executions a previous control service
        accepted but had not started (Pending, no worker), oldest first, each with a fresh
        execution token: accepted work is never dropped for lack of a worker."""
        async with self.transactions() as session:
            waiting = await ExecutionRepository(session).waiting_elastic()
            service = self.executions(session)
            launches = []
            for execution in waiting:
                if execution.created_by is None or execution.step_id is None:
                    continue
                await service.auth.revoke_execution_tokens(execution.id)
                token = await service.auth.create_sdk_token(
                    execution.created_by, name=f"execution {execution.id}",
                    scope="execution", execution_id=execution.id)
                launches.append(Launch(execution_id=execution.id, step_id=execution.step_id,
                                       sdk_token=token.plaintext,
                                       deployment_id=execution.deployment_id,
                                       deployment_name=execution.deployment_name))
        for launch in launches:
            self.launch(launch)
        if launches:
            log.info("queued again %d elastic execution(s) accepted before a restart",
                     len(launches))

    async def _reconcile_forever(self) -> None:
        if self.admission is not None:
            # first: the reconciler would fail them as "no worker was started"
            try:
                await self._resume_waiting()
            except Exception:
                log.exception("could not queue the waiting executions again")
        while True:
            try:
                await self.reconcile()
            except Exception:
                log.exception("reconcile failed")
            await asyncio.sleep(RECONCILE_EVERY_S)

    async def reconcile(self) -> None:
        """Executions gone quiet: ask the backend, fail those whose worker is gone."""
        # Without the journal's barrier (it would write every warm call in flight, on the
        # event loop, every RECONCILE_EVERY_S): what the journal holds runs here, and is
        # left out instead.
        journal = self.low_latency.journal
        async with self.transactions.unfenced() as session:
            active = await ExecutionRepository(session).active()
            now = utcnow()
            quiet = [(e.id, e.handle) for e in active
                     if (e.heartbeat_at or e.created_at) < now - HEARTBEAT_TIMEOUT
                     and not (self.admission and self.admission.holds(e.id))
                     and not journal.holds(e.id)]
            overdue = [(e.id, e.handle) for e in active
                       if e.handle and e.handle.get("backend") == "local" and e.started_at
                       and timed_out(e.started_at, self.settings.execution_timeout_s, now)]
        for execution_id, running in overdue:
            await self._fail(execution_id, f"the execution ran longer than its timeout "
                             f"({self.settings.execution_timeout_s} s): its worker was stopped")
            await self.executor.cancel(running)
        for execution_id, handle in quiet:
            if handle is not None and handle.get("backend") == GRAPH_BACKEND:
                # its nodes are executions of their own; this resumes the graph (after a
                # restart) or ends it
                await self.graphs.advance(execution_id)
                continue
            if handle is None:
                await self._fail(execution_id, "no worker was started for this execution")
                continue
            if handle.get("backend") == LOW_LATENCY_BACKEND:
                await self._fail(execution_id, "the control service running it on a warm "
                                 "worker stopped before it ended")
                continue
            if is_pod(handle):
                await self._reconcile_pod(execution_id, handle)
                continue
            result = await self.executor.poll(handle)
            if result.state not in (WorkerState.RUNNING, WorkerState.PENDING):
                await self._fail(execution_id, result.reason or "the worker is gone")

    async def _reconcile_pod(self, execution_id: str, handle: Handle) -> None:
        """A quiet execution on Kubernetes: a pod still pending (a GPU node being added) or
        running (a step that prints nothing) is left to its watcher, and followed here if
        its control service went away; an ended, lost or unknown one is handled now."""
        if self.kubernetes is None or self.watcher is None:
            await self._fail(execution_id, "the execution ran on Kubernetes, but this "
                             "service is now configured for local workers")
            return
        # the watch's cache when it knows the pod: no GET per quiet execution
        result = self.watcher.outcome(handle) or await self.kubernetes.poll(handle)
        if result.state in (WorkerState.RUNNING, WorkerState.PENDING):
            self.watcher.follow(handle)
            return
        if not await self._pod_ended(execution_id, handle, result):
            self.watcher.follow(handle)

    async def shutdown(self) -> None:
        if self.pool is not None:
            await self.pool.shutdown()
        if self.sweeper is not None:
            await self.sweeper.shutdown()
        if self.watcher is not None:
            await self.watcher.shutdown()
        if self._reconciler is not None:
            self._reconciler.cancel()
            with contextlib.suppress(BaseException):
                await self._reconciler
        await self.executor.shutdown()
        for task in list(self._tasks):
            task.cancel()


def timed_out(started_at: datetime, timeout_s: int, now: datetime) -> bool:
    return started_at + timedelta(seconds=timeout_s) < now


def is_pod(handle: Mapping[str, Any]) -> bool:
    """A handle of an elastic execution's pod (KubernetesExecutor.submit)."""
    return handle.get("backend") == KUBERNETES and handle.get("kind") == "Pod"
