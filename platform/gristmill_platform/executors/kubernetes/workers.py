"""Low-latency deployments on Kubernetes: one Deployment of warm workers per deployment.

The WorkerPool of the Kubernetes backend (contract in executors/workers.py). Each
low-latency deployment is a Deployment and a Service named ``gm-ll-<name>``
(``KubernetesExecutor.apply_worker``) whose pods run the runner's server mode. The pool

* applies it (``ensure``) from the deployment's record, then judges the deployment's status
  from its pods (worker_pods.judge): ``up`` once a pod of the current generation is ready,
  ``creation_failed`` with the reason (image pull, configuration, crash at import, no node
  with a free GPU after ``unschedulable_timeout_s``), ``down_retrying`` while a worker that
  was up comes back. The status keeps following the pods: a worker that recovers is ``up``;
* carries executions to the pods directly, at their addresses, not through the Service:
  start(pod_id) must name the pod before the request is sent, each pod takes at most the
  deployment's parallelism (the others wait in line here), and once a pod of a new
  generation serves, the old one gets no new executions while it finishes what it runs
  (so does a pod given up because an execution ran past the deployment's execution
  timeout, ``replace``: it is deleted, and its ReplicaSet starts a new one).
  A ClusterIP Service balances connections, not requests, and would hide all three; it stays
  as the deployment's stable name (tools, metrics). Knative's activator routes to pod IPs
  for the same reasons;
* follows the pods of ALL its deployments with ONE list and watch (a ``PodInformer`` on
  the warm-worker labels, shared by every deployment: the API-server load does not grow
  with the number of pools); each event re-judges the deployments it concerns, from the
  cache, and every ``refresh_s`` all of them are judged again (an unschedulable pod fails
  after a while, with no event to say so), with no request to the API. ``pods()`` is
  synchronous: it reads that cache;
* copies what the workers print outside executions into the deployment's logs, every
  ``log_copy_s``: only what each pod printed since the last copy (``sinceTime``), at most
  ``log_cap_bytes`` of it per read (its end, after a line saying what was cut);
* gives the workers of a pipeline that only gets shadow copies (``ensure``'s
  ``background``) the shadow workers' PriorityClass and CPU request until it answers calls,
  and marks their Deployment so (manifests.ANNOTATION_SHADOW_ONLY): read back, the mark
  keeps any replica, or a restarted one, from lowering workers that answer calls;
* leaves the cluster alone at shutdown: workers outlive a restart of the control service,
  which adopts them again (``resume``).

Every control service replica can serve every deployment: what it needs is in the database
(the record) or derived from it (the worker secret, below), and a replica that never
ensured a deployment adopts it at its first execution.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from gristmill.languages import default_language
from gristmill_platform.db.models.deployments import DeploymentLog
from gristmill_platform.db.models.steps import Pipeline, Step
from gristmill_platform.db.transactions import Transactions
from gristmill_platform.env_vars.repository import EnvVarRepository
from gristmill_platform.executors.base import LogLine
from gristmill_platform.executors.deployment_logs import (
    DeploymentLogBuffer,
    DeploymentLogSink,
    DeploymentRecordsFor,
)
from gristmill_platform.executors.kubernetes import manifests
from gristmill_platform.executors.kubernetes.executor import KubernetesExecutor, _has_labels
from gristmill_platform.executors.kubernetes.watcher import PodInformer
from gristmill_platform.executors.kubernetes.worker_pods import (
    Verdict,
    WorkerPod,
    has_current,
    judge,
    read_pod,
)
from gristmill_platform.executors.spec import Resources, WorkerSpec
from gristmill_platform.executors.worker_client import WorkerClient, WorkerUnreachable
from gristmill_platform.executors.workers import (
    ExecutionLost,
    StartHook,
    Version,
    WorkerAnswer,
    node_step,
    split_key,
    variant_key,
)
from gristmill_platform.telemetry.metrics import WORKER_RESTARTS
from gristmill_platform.timeouts import within
from gristmill_platform.units import ram_bytes

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from gristmill_platform.settings import Settings

log = logging.getLogger("gristmill.workers.kubernetes")

WORKER_PORT = 8080  # every pod has its own IP: one fixed port is enough
WORKER_ARGV = ("python", "-m", "gristmill.runtime", "serve")
STEP_DIR = "/app"  # where step images hold the step's code (images.step_dockerfile)
REFRESH_S = 2.0  # how often every deployment is judged again from the watch's cache
# How long a refresh waits for the watch's first list (the API unreachable: the last known
# pods are kept, and the informer keeps trying in the background).
SYNC_WAIT_S = 5.0
# Every warm worker pod, whatever its deployment: what the pool's one watch follows.
WARM_WORKERS = {manifests.LABEL_ROLE: manifests.ROLE_WORKER,
                manifests.LABEL_MODE: manifests.MODE_LOW_LATENCY}
LOG_COPY_S = 5.0  # how often their output is copied into the deployment logs
HEALTH_TIMEOUT_S = 3.0
# After a connection broke mid-execution: how long the pod's status gets to explain it.
LOST_WAIT_S = 15.0
# An execution waits this long for a pod to take it (the local pool's START_TIMEOUT_S).
MAX_WAIT_S = 1800.0
TAIL_LINES = 50
MAX_LOG_LINE = 16_384
SHUTDOWN_WAIT_S = 10.0  # for the pool's own background tasks to end once cancelled
_SECRET_CONTEXT = b"gristmill low-latency worker secret v1\x00"
_POD_STATUS = {"pending": "starting", "starting": "starting", "ready": "running",
               "failed": "failed", "terminating": "stopped"}

PodAddress = Callable[[WorkerPod], tuple[str, int] | None]
Clock = Callable[[], datetime]


def worker_secret(secret_key: str, deployment_id: str) -> str:
    """The secret a deployment's workers require on every request.

    Derived, not stored: every replica of the control service, and one restarted, computes
    the same value from the environment's key, with nothing to read from the cluster. The
    deployment id (not its name) makes a re-created deployment a new secret. It does not
    change with the generation: during a rollout the old and the new pods serve at once.
    """
    return hmac.new(secret_key.encode("utf-8"), _SECRET_CONTEXT + deployment_id.encode("utf-8"),
                    hashlib.sha256).hexdigest()


def variant_generation(deployment_generation: int, pipeline_id: str, step_id: str) -> int:
    """The generation of a variant pipeline's (or a node pool's) workers.

    The deployment's own generation does not change when a variant's pipeline is deleted
    and created again under its name (new code, perhaps the same step name and image tag):
    with it, the re-created variant's pods would count as current while the old pod still
    serves, and take calls. This changes with the deployment's generation and with the
    pipeline's and step's ids, so the Deployment rolls and only the new pods take calls once
    ready. A hash, not a counter: no replica has to store it; 48 bits fit the annotation's
    digits and any Python int."""
    digest = hashlib.sha256(
        f"{deployment_generation}:{pipeline_id}:{step_id}".encode()).hexdigest()
    return int(digest[:12], 16)


def pod_address(pod: WorkerPod) -> tuple[str, int] | None:
    """Where the control service reaches a pod inside the cluster: its IP and port."""
    return (pod.ip, pod.port) if pod.ip and pod.port else None


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class _Record:
    """What a worker is built from, read in one transaction."""

    deployment_id: str
    name: str
    generation: int
    status: str
    status_reason: str | None
    max_parallel: int
    timeout_s: int
    step_name: str
    pipeline_name: str
    function_path: str
    function_name: str
    language: str
    image: str | None
    ram_request: str | None
    gpu_request: int | None
    variables: dict[str, str]


class _Lane:
    """A serving pod, as this control service dispatches to it."""

    def __init__(self, pod: WorkerPod, address: tuple[str, int], secret: str) -> None:
        self.pod = pod.name
        self.generation = pod.generation or 0
        self.restarts = pod.restarts  # a higher count later: its container crashed
        self.client = WorkerClient(address[1], secret, address[0])
        self.inflight = 0
        self.retired = False  # no longer picked; closed once its executions are answered


class _Tracked:
    """One low-latency deployment this pool knows of."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.deployment_id = ""
        self.generation = 0
        self.max_parallel = 1
        self.secret = ""
        self.lock = asyncio.Lock()  # ensure and adoption, one at a time
        self.refreshing = asyncio.Lock()
        self.pods: list[WorkerPod] = []
        self.lanes: dict[str, _Lane] = {}
        self.was_up = False  # the current generation served once
        self.recorded: Verdict | None = None  # the last status this pool wrote
        self.failed: str | None = None  # creation_failed: executions fail at once
        self.stopped = False
        self.adopted = False
        # pods as last seen, for the deployment log's events; None: say nothing of the pods
        # found at adoption (they were announced by whoever created them)
        self.seen: dict[str, WorkerPod] | None = None
        self.unreachable: set[str] = set()
        self.replaced: set[str] = set()  # pods given up (replace): never picked again
        self.marks: dict[str, tuple[datetime, int]] = {}  # log lines copied, per pod
        # one copy of the logs at a time: two (the background's and copy_logs) reading the
        # same mark across their awaits would both add the same lines
        self.copying = asyncio.Lock()
        self.changed = asyncio.Event()

    def pulse(self) -> None:
        """Wake the executions waiting for a place on a pod."""
        self.changed.set()
        self.changed = asyncio.Event()

    def pick(self) -> _Lane | None:
        """The pod to run on: of the current generation once one serves, else of the newest
        serving (older ones only finish what they run), the least busy, if it has a free
        place. A variant's generation is a hash (variant_generation), not ordered: the
        current one is asked for by value."""
        if not self.lanes:
            return None
        generations = {lane.generation for lane in self.lanes.values()}
        chosen = self.generation if self.generation in generations else max(generations)
        free = [lane for lane in self.lanes.values()
                if lane.generation == chosen and lane.inflight < self.max_parallel]
        return min(free, key=lambda lane: (lane.inflight, lane.pod), default=None)

    def drop(self, name: str) -> None:
        """Send nothing more to that pod. What it runs still gets its answer: an execution
        that has just been given this pod may not have sent its request yet."""
        lane = self.lanes.pop(name, None)
        if lane is not None:
            lane.retired = True
            if not lane.inflight:
                lane.client.close()


class KubernetesWorkerPool:
    """The WorkerPool of the Kubernetes backend (see workers.py for the contract).

    ``address`` says where a pod is reached (its IP inside a cluster; tests point it at
    127.0.0.1), ``clock`` is the time unschedulable pods are judged by."""

    def __init__(self, settings: Settings, transactions: Transactions,
                 deployments: DeploymentRecordsFor, logs: DeploymentLogSink,
                 executor: KubernetesExecutor, *,
                 address: PodAddress = pod_address, clock: Clock = _utcnow,
                 refresh_s: float = REFRESH_S, log_copy_s: float = LOG_COPY_S) -> None:
        self.settings = settings
        self.transactions = transactions
        self.deployments = deployments
        self.executor = executor
        self.address = address
        self.clock = clock
        self.refresh_s = refresh_s
        self.log_copy_s = log_copy_s
        self._tracked: dict[str, _Tracked] = {}
        self._informer: PodInformer | None = None
        self._dirty: set[str] = set()  # deployments an event concerned since the last pass
        self._wake = asyncio.Event()
        self.passes = 0  # full passes over every deployment, for the tests
        self._logs = DeploymentLogBuffer(logs)
        self._background: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    # -- WorkerPool ---------------------------------------------------------------------------

    async def ensure(self, deployment_name: str, *, wait_s: float,
                     restart: bool = False, background: bool = False) -> None:
        # restart: update_deployment bumped the generation, which is what rolls the pods.
        # background: the Deployment gets the shadow workers' PriorityClass (see _shadow_only)
        del restart
        if self._closing:
            return
        self._start_background()
        tracked = self._tracked.setdefault(deployment_name, _Tracked(deployment_name))
        async with tracked.lock:
            record = await self._load(deployment_name)
            if record is None or tracked.stopped:
                return
            if tracked.seen is None and not tracked.adopted:
                tracked.seen = {}  # created here: its pods are news
            self._take(tracked, record)
            try:
                shadow_only = background and await self._shadow_only(deployment_name)
                spec = self._spec(record, shadow_only=shadow_only)
                handle = await self.executor.apply_worker(spec)
            except Exception as exc:  # never leave a deployment creation_pending forever
                log.exception("applying the worker of %s failed", deployment_name)
                await self._record(tracked, Verdict(
                    "creation_failed", f"The worker could not be created in the cluster: {exc}"))
                return
            priority = manifests.worker_priority_class(spec, self.executor.cfg)
            self._event(tracked, "", f"Worker Deployment {handle['name']} applied "
                        f"(generation {record.generation}"
                        + (f", PriorityClass {priority}" if priority else "")
                        + (", shadow copies only)" if shadow_only else ")"))
        await self._wait_for_verdict(tracked, record.generation, wait_s)

    async def _shadow_only(self, deployment_name: str) -> bool:
        """Whether an ensure for shadow copies (background) applies the shadow workers'
        class: yes for a Deployment not applied yet, or applied for shadow copies too; no
        for one that answers calls. The dispatcher (low_latency.py warm) only knows what it
        asked since it started: after a restart, or on another replica, its first shadow
        copy must not lower the workers that answer calls (and roll them). As on the local
        backend, workers are never lowered once they answered: only promoted."""
        live = await self.executor.worker_is_shadow_only(deployment_name)
        return live is None or live

    async def stop(self, deployment_name: str) -> None:
        own = split_key(deployment_name)[1] is None
        keys = [deployment_name]
        if own:  # its variants' and node pools' workers go with it
            prefix = variant_key(deployment_name, "")
            keys += [key for key in self._tracked if key.startswith(prefix)]
        for key in keys:
            tracked = self._tracked.pop(key, None)
            if tracked is not None:
                tracked.stopped = True
                for name in list(tracked.lanes):
                    tracked.drop(name)
                tracked.pulse()
        try:
            await self.executor.delete_worker(deployment_name)
            if own:
                # by label, not by what this replica tracks: another replica may have
                # brought up a variant this one never served
                deleted = await self.executor.delete_workers_of(deployment_name)
                if deleted:
                    log.info("deleted the warm workers of %s: %s", deployment_name,
                             ", ".join(deleted))
        except Exception:
            log.exception("could not delete the worker of %s from the cluster", deployment_name)

    def deployment_names(self) -> list[str]:
        return list(self._tracked)

    def verdict(self, key: str) -> tuple[str, str | None]:
        tracked = self._tracked.get(key)
        if tracked is None or tracked.stopped:
            return "failed", "the worker is not running"
        if tracked.failed is not None:
            return "failed", tracked.failed
        # the current generation's verdict: a roll's new pods serve before it says up
        recorded = tracked.recorded
        if recorded is not None and recorded.status in ("up", "down_retrying") \
                and tracked.was_up:
            return "up", None
        return "starting", None

    def versions(self, deployment_name: str) -> set[Version]:
        return set()  # shared Deployments: rolled or removed wherever the change is made

    def pods(self, deployment_name: str) -> list[dict[str, Any]]:
        tracked = self._tracked.get(deployment_name)
        if tracked is None:
            return []
        return [{"pod_id": pod.name,
                 "status": "failed" if pod.finished else _POD_STATUS[pod.status]}
                for pod in tracked.pods]

    async def run(self, deployment_name: str, start: StartHook) -> WorkerAnswer | None:
        tracked = self._tracked.get(deployment_name) or await self._adopt(deployment_name)
        lane = await self._place(tracked)
        lane.inflight += 1
        try:
            body = await start(lane.pod)
            if body is None:
                return None
            try:
                status, content = await lane.client.request(
                    "POST", "/executions", json.dumps(body).encode("utf-8"))
            except WorkerUnreachable as exc:
                # no new executions on it until it proves healthy again
                tracked.drop(lane.pod)
                reason, tail = await self._lost(tracked, lane, exc)
                raise ExecutionLost(reason, tail) from exc
            report: Any = None
            if status == 200:
                with contextlib.suppress(ValueError):
                    report = json.loads(content)
            if not isinstance(report, dict) or report.get("status") not in ("succeeded",
                                                                             "failed"):
                raise ExecutionLost(
                    f"the low-latency worker pod {lane.pod} gave no usable result "
                    f"(HTTP {status}): {content[:500].decode('utf-8', 'replace')}")
            return WorkerAnswer(pod_id=lane.pod, report=report)
        finally:
            lane.inflight -= 1
            if lane.retired and not lane.inflight:
                lane.client.close()  # its keep-alive connections let a draining pod exit
            tracked.pulse()

    def replace(self, deployment_name: str, pod_id: str, reason: str) -> None:
        tracked = self._tracked.get(deployment_name)
        if tracked is None or pod_id in tracked.replaced or not (
                pod_id in tracked.lanes or any(pod.name == pod_id for pod in tracked.pods)):
            return  # replaced already, or gone
        tracked.replaced.add(pod_id)
        tracked.drop(pod_id)  # closed once the other executions on it have answered
        tracked.pulse()
        self._event(tracked, pod_id, f"Pod {pod_id} is replaced: {reason}")
        WORKER_RESTARTS.labels(tracked.name).inc()
        self._spawn(self._delete_pod(tracked, pod_id))

    async def _delete_pod(self, tracked: _Tracked, pod_id: str) -> None:
        """A graceful delete: the pod drains (GRISTMILL_WORKER_DRAIN_S, its termination grace
        period) and its ReplicaSet starts a new one at once."""
        try:
            await self.executor.delete_worker_pod(tracked.name, pod_id)
        except Exception:
            log.exception("could not delete pod %s of %s", pod_id, tracked.name)
        await self._refresh(tracked)

    async def resume(self) -> None:
        self._start_background()
        async with self.transactions() as session:
            names = [d.name for d in await self.deployments(session).low_latency()
                     if d.is_enabled]
        for name in names:
            # known at once: executions triggered meanwhile wait for its pods
            self._tracked.setdefault(name, _Tracked(name))
            self._spawn(self._resume_one(name))

    async def shutdown(self) -> None:
        # Not a word to the cluster: the workers keep running for the next control service.
        self._closing = True
        tasks = [*([self._background] if self._background else []), *self._tasks]
        for task in tasks:
            task.cancel()
        if self._informer is not None:
            await self._informer.stop()
        for tracked in self._tracked.values():
            for name in list(tracked.lanes):
                tracked.drop(name)
            tracked.pulse()
        if tasks:
            # let them end here, while the database and the API they may be using in a
            # transaction or a request are still there, rather than at the loop's close
            _, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_WAIT_S)
            if pending:
                log.warning("%d background tasks of the warm-worker pool did not stop "
                            "within %.0f s", len(pending), SHUTDOWN_WAIT_S)
        await self._flush_logs()

    async def refresh(self, deployment_name: str) -> None:
        """Judge the deployment from its pods now, as the watch shows them (the background
        does it at each event and every refresh_s)."""
        tracked = self._tracked.get(deployment_name)
        if tracked is not None:
            await self._refresh(tracked)

    async def copy_logs(self, deployment_name: str) -> None:
        """Copy the pods' new output into the deployment logs now (the background does it
        every log_copy_s)."""
        tracked = self._tracked.get(deployment_name)
        if tracked is not None and tracked.deployment_id:
            await self._copy_logs(tracked)
            await self._flush_logs()

    def cached_pods(self, deployment_name: str) -> list[WorkerPod]:
        """The deployment's pods as last read."""
        tracked = self._tracked.get(deployment_name)
        return list(tracked.pods) if tracked is not None else []

    # -- dispatching --------------------------------------------------------------------------

    async def _place(self, tracked: _Tracked) -> _Lane:
        """A pod with a free place, waiting while one starts or all are busy."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + MAX_WAIT_S
        while True:
            lane = tracked.pick()
            if lane is not None:
                return lane
            if tracked.failed is not None or tracked.stopped or self._closing:
                raise ExecutionLost(self._unavailable(tracked))
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ExecutionLost(f"no low-latency worker pod could take the execution "
                                    f"within {MAX_WAIT_S:.0f} s")
            changed = tracked.changed
            with contextlib.suppress(TimeoutError):
                await within(changed.wait(), remaining)

    def _unavailable(self, tracked: _Tracked) -> str:
        if self._closing:
            return "the control service stopped before the execution could run"
        if tracked.stopped:
            return "the deployment's low-latency worker is not running"
        return f"the deployment's low-latency worker could not be started: {tracked.failed}"

    async def _lost(self, tracked: _Tracked, lane: _Lane, exc: Exception
                    ) -> tuple[str, list[str]]:
        """Why the connection to a pod broke mid-execution, from what its status says."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LOST_WAIT_S
        while True:
            if self._closing:
                return "the control service stopped while the execution ran", []
            if tracked.stopped:
                return "the low-latency worker was stopped while the execution ran", []
            await self._refresh(tracked)
            pod = next((p for p in tracked.pods if p.name == lane.pod), None)
            if pod is None or pod.status == "terminating" or pod.finished:
                why = (pod.problem or pod.last_exit) if pod is not None else None
                return (f"the low-latency worker pod {lane.pod} was removed while the "
                        "execution ran (evicted, its node went away, or deleted)"
                        + (f": {why}" if why else ""),
                        list(pod.last_output[-TAIL_LINES:]) if pod is not None else [])
            if pod.restarts > lane.restarts:
                return (f"the low-latency worker crashed: {pod.last_exit}",
                        list(pod.last_output[-TAIL_LINES:]))
            if loop.time() > deadline:
                return (f"lost the connection to the low-latency worker pod {lane.pod}: "
                        f"{type(exc).__name__}: {exc}", [])
            await asyncio.sleep(min(0.2, self.refresh_s))

    # -- records ------------------------------------------------------------------------------

    async def _load(self, name: str) -> _Record | None:
        """The record of a deployment's workers, of a variant pipeline's
        (executors/workers.py variant_key): the deployment's, with that pipeline's step, or
        of a multi-step pipeline's node pool (node_key): the deployment's, with that step.
        A variant's or node pool's status starts afresh: the deployment's says nothing of
        it."""
        deployment_name, variant = split_key(name)
        node = node_step(name)
        async with self.transactions() as session:
            deployment = await self.deployments(session).by_name(deployment_name)
            if deployment is None or deployment.mode != "low_latency":
                return None
            pipeline_id: str | None = deployment.pipeline_id
            if node is not None:
                step = await session.scalar(select(Step).where(Step.name == node))
            else:
                # a multi-step pipeline has none: its nodes' pools serve it (graph_workers.py)
                pipeline_id = deployment.pipeline_id if variant is None else \
                    await session.scalar(select(Pipeline.id).where(Pipeline.name == variant))
                step = await _step_of(session, pipeline_id) if pipeline_id else None
            if step is None:
                return None
            variables = {v.name: v.value for v in await EnvVarRepository(session).list()}
            config = step.container_config or {}
            generation = deployment.generation if variant is None else variant_generation(
                deployment.generation, pipeline_id or "", step.id)
            return _Record(
                deployment_id=deployment.id, name=name,
                generation=generation,
                status=deployment.status if variant is None else "creation_pending",
                status_reason=deployment.status_reason if variant is None else None,
                max_parallel=(deployment.max_parallel_executions_per_pod
                              if deployment.enable_parallel_executions else 1),
                timeout_s=deployment.timeout_s, step_name=step.name,
                pipeline_name=variant or deployment.pipeline_name,
                function_path=step.function_path,
                function_name=step.function_name,
                language=str(config.get("language") or default_language()),
                # the step's built image; none yet: the runtime image alone (manifests)
                image=step.image or None,
                ram_request=deployment.ram_request, gpu_request=deployment.gpu_request,
                variables=variables,
            )

    def _take(self, tracked: _Tracked, record: _Record) -> None:
        """Follow the deployment's record (a new generation starts a new verdict)."""
        if record.generation != tracked.generation:
            tracked.was_up = record.status in ("up", "down_retrying")
            tracked.recorded = None
            tracked.failed = (record.status_reason or "the worker could not be started"
                              if record.status == "creation_failed" else None)
        tracked.deployment_id = record.deployment_id
        tracked.generation = record.generation
        tracked.max_parallel = record.max_parallel
        assert self.settings.secret_key
        tracked.secret = worker_secret(self.settings.secret_key, record.deployment_id)

    def _spec(self, record: _Record, *, shadow_only: bool = False) -> WorkerSpec:
        settings = self.settings
        # where workers reach the control service, when it differs from the public URL
        url = settings.internal_url or settings.environment_url
        assert settings.secret_key
        env = {
            **record.variables,
            "GRISTMILL_ENVIRONMENT_URL": url,
            "CRAFT_AI_ENVIRONMENT_URL": url,
            "CRAFT_AI_CONTROL_URL": url,
            "GRISTMILL_STEP_DIR": STEP_DIR,
            "SDK_VERBOSE_LOG": "false",
            "PYTHONUNBUFFERED": "1",
            # Readable by whoever may read Deployments in the workers' namespace, like the
            # environment variables above; workers have no API token to read it themselves.
            "GRISTMILL_WORKER_SECRET": worker_secret(settings.secret_key, record.deployment_id),
            "GRISTMILL_FUNCTION_PATH": record.function_path,
            "GRISTMILL_FUNCTION_NAME": record.function_name,
            "GRISTMILL_WORKER_ENV_NAMES": json.dumps(sorted(record.variables)),
            # a pod replaced by a rollout finishes its executions first (manifests turn it
            # into the pod's termination grace period)
            "GRISTMILL_WORKER_DRAIN_S": str(record.timeout_s),
        }
        return WorkerSpec(
            deployment_name=record.name, step_name=record.step_name,
            pipeline_name=record.pipeline_name, language=record.language, argv=WORKER_ARGV,
            env=env, port=WORKER_PORT, replicas=1,
            max_parallel_executions=record.max_parallel,
            resources=Resources(
                memory_bytes=ram_bytes(record.ram_request) if record.ram_request else None,
                gpu=record.gpu_request or 0),
            image=record.image, generation=record.generation, file_io=True,
            deployment_id=record.deployment_id, shadow_only=shadow_only,
        )

    async def _record(self, tracked: _Tracked, verdict: Verdict) -> None:
        """Write the deployment's status, unless this very verdict was written already, or
        the deployment was deleted or updated meanwhile (its new generation reports)."""
        if verdict == tracked.recorded:
            return
        tracked.recorded = verdict
        if verdict.status == "up":
            tracked.was_up = True
        tracked.failed = verdict.reason or "the worker could not be started" \
            if verdict.status == "creation_failed" else None
        await self._flush_logs()  # the import-time output is in before the status says up
        if split_key(tracked.name)[1] is not None:
            # a variant's or a node pool's workers say nothing of the deployment's status
            # (graph_workers.py judges a multi-step pipeline's from all its node pools)
            return
        try:
            async with self.transactions() as session:
                deployment = await self.deployments(session).get(tracked.deployment_id)
                if deployment is None or deployment.generation != tracked.generation:
                    return
                deployment.status = verdict.status
                deployment.status_reason = verdict.reason
        except Exception:
            log.exception("could not record the status of deployment %s", tracked.name)

    # -- following the pods -------------------------------------------------------------------

    async def _wait_for_verdict(self, tracked: _Tracked, generation: int, wait_s: float
                                ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        delay = 0.05
        while True:
            await self._refresh(tracked)
            verdict = tracked.recorded
            if (tracked.generation != generation or tracked.stopped or self._closing
                    or (verdict is not None and verdict.status in ("up", "creation_failed"))):
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            await asyncio.sleep(min(delay, remaining, self.refresh_s))
            delay *= 2

    async def _refresh(self, tracked: _Tracked) -> None:
        async with tracked.refreshing:
            if tracked.stopped or self._closing:
                return
            raws = await self._cached_pods(tracked.name)
            if raws is None:  # never listed yet: keep the last known pods
                return
            pods = sorted((read_pod(raw) for raw in raws), key=lambda pod: pod.name)
            self._announce(tracked, pods)
            tracked.pods = pods
            await self._sync_lanes(tracked)
            # no pod to judge: the Deployment may say why (refused at admission)
            refused = (None if has_current(pods, tracked.generation)
                       else await self.executor.worker_refusal(tracked.name))
            verdict = judge(pods, tracked.generation, was_up=tracked.was_up, now=self.clock(),
                            unschedulable_timeout_s=self.executor.cfg.unschedulable_timeout_s,
                            refused=refused)
            if verdict is not None:
                await self._record(tracked, verdict)
            tracked.pulse()

    async def _sync_lanes(self, tracked: _Tracked) -> None:
        """A lane per ready pod that answers its health check; none for the others."""
        serving = {pod.name: pod for pod in tracked.pods
                   if pod.status == "ready" and not pod.finished
                   and pod.name not in tracked.replaced}
        tracked.replaced.intersection_update(pod.name for pod in tracked.pods)  # gone: forgotten
        for name, lane in list(tracked.lanes.items()):
            pod = serving.get(name)
            if pod is None or pod.restarts != lane.restarts:
                tracked.drop(name)
        for pod in serving.values():
            if pod.name in tracked.lanes:
                continue
            address = self.address(pod)
            if address is None:
                continue
            lane = _Lane(pod, address, tracked.secret)
            problem = await _health_problem(lane)
            if problem is None:
                tracked.lanes[pod.name] = lane
                tracked.unreachable.discard(pod.name)
                continue
            lane.client.close()
            if pod.name not in tracked.unreachable:  # said once per pod
                tracked.unreachable.add(pod.name)
                self._event(tracked, pod.name, f"The control service cannot reach pod "
                            f"{pod.name} at {address[0]}:{address[1]}: {problem}")

    def _announce(self, tracked: _Tracked, pods: Sequence[WorkerPod]) -> None:
        """Deployment log lines for what happened to the pods since the last look."""
        before = tracked.seen
        tracked.seen = {pod.name: pod for pod in pods}
        if before is None:
            return
        for pod in pods:
            old = before.get(pod.name)
            if old is None:
                self._event(tracked, pod.name, f"Pod {pod.name} created (generation "
                            f"{pod.generation}); it imports the step module once started")
            if pod.problem and (old is None or old.problem != pod.problem):
                self._event(tracked, pod.name, pod.problem)
            if old is not None and pod.restarts > old.restarts:
                self._event(tracked, pod.name, f"The worker restarted: {pod.last_exit}")
                WORKER_RESTARTS.labels(tracked.name).inc(pod.restarts - old.restarts)
            if pod.status == "ready" and (old is None or old.status != "ready"):
                self._event(tracked, pod.name,
                            "Step module imported successfully; the worker is ready")
            if pod.status == "terminating" and old is not None and old.status != "terminating":
                self._event(tracked, pod.name, f"Pod {pod.name} is stopping")
        for name in sorted(before.keys() - tracked.seen.keys()):
            self._event(tracked, name, f"Pod {name} stopped")

    # -- adoption -------------------------------------------------------------------------------

    async def _adopt(self, name: str) -> _Tracked:
        """A deployment another replica (or a previous run of this one) brought up."""
        if self._closing:
            raise ExecutionLost("the control service stopped before the execution could run")
        self._start_background()
        tracked = self._tracked.setdefault(name, _Tracked(name))
        async with tracked.lock:
            if not tracked.adopted and not tracked.deployment_id:
                record = await self._load(name)
                if record is None:
                    self._tracked.pop(name, None)
                    raise ExecutionLost("the deployment's low-latency worker is not running")
                tracked.adopted = True
                self._take(tracked, record)
        await self._refresh(tracked)
        return tracked

    async def _resume_one(self, name: str) -> None:
        try:
            tracked = await self._adopt(name)
        except ExecutionLost:
            return
        if not tracked.pods:  # deleted from the cluster meanwhile, or never applied
            await self.ensure(name, wait_s=0)

    # -- deployment logs ----------------------------------------------------------------------

    def _event(self, tracked: _Tracked, pod_id: str, message: str) -> None:
        if tracked.deployment_id:
            self._logs.add(tracked.deployment_id, self.clock(), pod_id, message[:MAX_LOG_LINE])

    async def _copy_logs(self, tracked: _Tracked) -> None:
        """What the pods printed since the last copy (the runner's own output: module
        import, crash dumps; executions' output goes to the executions)."""
        async with tracked.copying:
            # the pods as the watch shows them: no list per deployment
            for pod in [pod.name for pod in tracked.pods]:
                mark = tracked.marks.get(pod) or await self._stored_mark(tracked, pod)
                try:
                    # only from the mark's second on (sinceTime), at most log_cap_bytes
                    lines = await self.executor.worker_pod_logs(
                        pod, since=mark[0] if mark is not None else None)
                except Exception as exc:
                    log.warning("could not read the logs of pod %s of %s: %s", pod,
                                tracked.name, exc)
                    continue
                new, mark = lines_after(lines, mark)
                if mark is not None:
                    tracked.marks[pod] = mark
                for line in new:
                    self._logs.add(tracked.deployment_id, line.timestamp, pod,
                                   line.message[:MAX_LOG_LINE])

    async def _stored_mark(self, tracked: _Tracked, pod: str) -> tuple[datetime, int] | None:
        """Where the copy of a pod's logs stopped, from the rows already stored (another
        replica, or this one before a restart): lines are never stored twice."""
        async with self.transactions() as session:
            rows = DeploymentLog.deployment_id == tracked.deployment_id, \
                DeploymentLog.pod_id == pod
            last = (await session.execute(select(func.max(DeploymentLog.timestamp))
                                          .where(*rows))).scalar_one_or_none()
            if last is None:
                return None
            count = (await session.execute(select(func.count()).select_from(DeploymentLog)
                                           .where(*rows, DeploymentLog.timestamp == last))
                     ).scalar_one()
        return last, int(count)

    async def _flush_logs(self) -> None:
        await self._logs.flush()

    # -- background ---------------------------------------------------------------------------

    async def _watch_forever(self) -> None:
        loop = asyncio.get_running_loop()
        next_full = next_copy = loop.time()
        while True:
            now = loop.time()
            full, copy = now >= next_full, now >= next_copy
            if full:
                next_full = now + self.refresh_s
                self.passes += 1
            if copy:
                next_copy = now + self.log_copy_s
            self._wake.clear()
            names = list(self._tracked) if full else sorted(self._dirty)
            self._dirty.difference_update(names)
            for name in names:
                tracked = self._tracked.get(name)
                if tracked is None:
                    continue
                try:
                    await self._refresh(tracked)
                except Exception:
                    log.exception("following the pods of %s failed", tracked.name)
            if copy:
                for tracked in list(self._tracked.values()):
                    if tracked.deployment_id:
                        try:
                            await self._copy_logs(tracked)
                        except Exception:
                            log.exception("copying the logs of %s failed", tracked.name)
            await self._flush_logs()
            if not self._dirty:
                with contextlib.suppress(TimeoutError):
                    await within(self._wake.wait(),
                                           max(min(next_full, next_copy) - loop.time(), 0.0))

    def _start_background(self) -> None:
        if self._closing:
            return
        if self._informer is None:
            self._informer = PodInformer(self.executor, self.executor.cfg.namespace,
                                         WARM_WORKERS, self._pod_changed)
            self._informer.start()
        if self._background is None:
            self._background = asyncio.get_running_loop().create_task(self._watch_forever())

    def _pod_changed(self, pod_name: str) -> None:
        """An event of the shared watch: the deployments that pod concerns are judged again
        (its deployment's label; a deleted pod, those that knew it)."""
        assert self._informer is not None
        raw = self._informer.pods.get(pod_name)
        for name, tracked in self._tracked.items():
            if (raw is not None and _has_labels(raw, manifests.worker_selector(name))) or \
                    any(pod.name == pod_name for pod in tracked.pods):
                self._dirty.add(name)
        if self._dirty:
            self._wake.set()

    async def _cached_pods(self, deployment_name: str) -> list[dict[str, Any]] | None:
        """The deployment's pods in the shared watch's cache (its labels are checked here,
        whatever the server did with the selector); None before the first list."""
        self._start_background()
        informer = self._informer
        if informer is None:
            return None
        if not informer.synced.is_set():
            try:
                await within(informer.synced.wait(), SYNC_WAIT_S)
            except TimeoutError:
                log.warning("the pods of %s are not listed yet (the API does not answer)",
                            deployment_name)
                return None
        selector = manifests.worker_selector(deployment_name)
        return [raw for raw in list(informer.pods.values()) if _has_labels(raw, selector)]

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def lines_after(lines: Sequence[LogLine], mark: tuple[datetime, int] | None
                ) -> tuple[list[LogLine], tuple[datetime, int] | None]:
    """The lines after ``mark`` (the last timestamp copied and how many lines of that
    timestamp were), and the new mark. Kubernetes returns a container's log in order."""
    last, copied_at_last = mark if mark is not None else (None, 0)
    new: list[LogLine] = []
    same = 0
    for line in lines:
        if last is not None and line.timestamp < last:
            continue
        if last is not None and line.timestamp == last:
            same += 1
            if same <= copied_at_last:
                continue
        new.append(line)
    if not lines:
        return new, mark
    end = lines[-1].timestamp
    return new, (end, sum(1 for line in lines if line.timestamp == end))


async def _health_problem(lane: _Lane) -> str | None:
    """None when the pod answers its health check with our secret, else what went wrong."""
    try:
        status, content = await within(lane.client.request("GET", "/healthz"),
                                                 HEALTH_TIMEOUT_S)
    except (WorkerUnreachable, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    if status != 200:
        return f"HTTP {status}: {content[:200].decode('utf-8', 'replace')}"
    return None


async def _step_of(session: AsyncSession, pipeline_id: str) -> Step | None:
    """The step of a one-step pipeline; None for a multi-step one."""
    pipeline = await session.get(Pipeline, pipeline_id)
    if pipeline is None or pipeline.graph is not None:
        return None
    return await session.get(Step, pipeline.step_id)
