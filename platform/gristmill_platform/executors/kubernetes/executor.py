"""The Kubernetes executor: the only module here that talks to a cluster (through kr8s).

Everything it sends comes from ``manifests``; everything it concludes about a pod comes
from ``status``. What is left is the order of calls and what to do with API errors.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import logging
import os
import random
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import httpx
import kr8s
import kr8s.asyncio
from kr8s.asyncio.objects import (
    APIObject,
    Deployment,
    Job,
    Pod,
    PodDisruptionBudget,
    Service,
)

from gristmill_platform.executors.base import Executor, LogLine
from gristmill_platform.executors.kubernetes import apply, build_status, manifests, status
from gristmill_platform.executors.kubernetes.config import KubernetesConfig
from gristmill_platform.executors.kubernetes.images import ImageBuild, step_image_ref
from gristmill_platform.executors.kubernetes.worker_pods import refusal
from gristmill_platform.executors.spec import (
    Handle,
    LaunchSpec,
    PollResult,
    WorkerSpec,
    WorkerState,
)

BACKEND = "kubernetes"
log = logging.getLogger("gristmill.executors.kubernetes")
T = TypeVar("T")

# A Retry-After longer than this is not waited for within one call (the caller retries).
MAX_RETRY_AFTER_S = 120.0
# "<replica> <ISO time>" on a pod being cleaned up: which control-service process keeps
# its log and deletes it (two replicas following the same pod must not both keep it).
ANNOTATION_CLEANING = "gristmill.io/cleaned-by"
CLAIM_ATTEMPTS = 3

LogSink = Callable[[Handle, Sequence[LogLine]], Awaitable[None]]
Clock = Callable[[], datetime]


class KubernetesExecutorError(RuntimeError):
    """The cluster refused or contradicted what the executor asked for."""


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --- credentials ----------------------------------------------------------------------------


def credentials_source(
    cfg: KubernetesConfig,
    environ: Mapping[str, str] = os.environ,
    exists: Callable[[str], bool] = os.path.exists,
) -> tuple[Literal["kubeconfig", "in-cluster"], str | None]:
    """Which credentials to use: an explicit kubeconfig, the pod's service account, or the
    default kubeconfig (``$KUBECONFIG`` or ``~/.kube/config``), in that order."""
    if cfg.kubeconfig:
        return "kubeconfig", cfg.kubeconfig
    in_cluster = cfg.in_cluster
    if in_cluster is None:
        in_cluster = "KUBERNETES_SERVICE_HOST" in environ and exists(
            str(Path(cfg.serviceaccount_dir) / "token")
        )
    if in_cluster:
        return "in-cluster", cfg.serviceaccount_dir
    return "kubeconfig", None


async def connect(cfg: KubernetesConfig) -> kr8s.asyncio.Api:
    source, path = credentials_source(cfg)
    if source == "in-cluster":
        # A pod has no kubeconfig: kr8s then reads the mounted service-account token.
        api = await kr8s.asyncio.api(serviceaccount=path, namespace=cfg.namespace)
    else:
        api = await kr8s.asyncio.api(kubeconfig=path, context=cfg.context, namespace=cfg.namespace)
    # kr8s waits forever by default; a stuck API server must not stall the control service.
    api.timeout = cfg.api_timeout_s
    return api


# --- retries (pure) -------------------------------------------------------------------------


def retry_after_s(response: httpx.Response | None, now: datetime | None = None) -> float | None:
    """The server's Retry-After, in seconds (delta-seconds or an HTTP date), if any."""
    if response is None:
        return None
    raw = response.headers.get("Retry-After")
    if not raw:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max((when - (now or _utcnow())).total_seconds(), 0.0)


def retry_delay(
    error: BaseException,
    attempt: int,
    base_s: float,
    max_s: float,
    draw: Callable[[], float] = random.random,
) -> float | None:
    """How long to wait before trying a failed API call again, or None if it must not be.

    Retried: 429 Too Many Requests (at least its Retry-After), any 5xx, a timeout, and a
    connection that failed or broke. Exponential backoff with full jitter: a uniform draw
    in [0, min(max_s, base_s * 2**attempt)], so that many callers refused together do not
    come back together. Anything else (4xx: our request is wrong, 404, 409) is an answer.
    """
    backoff = float(draw() * min(max_s, base_s * 2**attempt))
    if isinstance(error, kr8s.ServerError):
        response: httpx.Response | None = error.response
        code = response.status_code if response is not None else None
        if code == 429:
            after = retry_after_s(response)
            if after is not None and after > MAX_RETRY_AFTER_S:
                return None
            return max(after or 0.0, backoff)
        if code is not None and code >= 500:
            return backoff
        return None
    if isinstance(error, (kr8s.APITimeoutError, httpx.TransportError)):
        return backoff
    return None


# --- log lines ------------------------------------------------------------------------------


def parse_log_line(line: str, previous: datetime | None = None) -> LogLine:
    """One line of ``GET .../log?timestamps=true``: an RFC 3339 time, a space, the text.

    Kubernetes merges stdout and stderr into one stream, so every line is "stdout".
    """
    stamp, _, message = line.partition(" ")
    parsed = _parse_rfc3339(stamp)
    if parsed is None:  # not a timestamped line: keep it whole, at the previous time
        return LogLine(previous or datetime.fromtimestamp(0, timezone.utc), "stdout", line)
    return LogLine(parsed, "stdout", message)


def _parse_rfc3339(stamp: str) -> datetime | None:
    if not stamp.endswith("Z") or "T" not in stamp:
        return None
    body = stamp[:-1]
    if "." in body:  # nanoseconds: Python keeps microseconds
        whole, fraction = body.split(".", 1)
        body = f"{whole}.{(fraction + '000000')[:6]}"
    try:
        return datetime.fromisoformat(body).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def since_time(moment: datetime) -> str:
    """``sinceTime`` of a log read: RFC 3339 to the second (what the API takes), rounded
    down, so the lines of that second come again and the caller drops those it has."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)
    return aware.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_logs(text_lines: Sequence[str]) -> list[LogLine]:
    lines: list[LogLine] = []
    previous: datetime | None = None
    for raw in text_lines:
        if raw == "":
            continue
        line = parse_log_line(raw, previous)
        previous = line.timestamp
        lines.append(line)
    return lines


class LogTail:
    """The last ``cap_bytes`` of a log read as a stream, line by line, and what was cut.

    Memory stays within the cap (plus one line) whatever the log's size: lines are
    dropped from the front as new ones come. The kubelet serves at most the container's
    current log file (containerLogMaxSize, 10 MiB by default), so the read ends.
    """

    def __init__(self, cap_bytes: int, what: str = "the pod log") -> None:
        self.cap_bytes = cap_bytes
        self.what = what
        self.lines: collections.deque[str] = collections.deque()
        self.kept_bytes = 0
        self.dropped_bytes = 0
        self.dropped_lines = 0

    def add(self, line: str) -> None:
        size = len(line.encode()) + 1
        self.lines.append(line)
        self.kept_bytes += size
        while self.kept_bytes > self.cap_bytes and self.lines:
            dropped = self.lines.popleft()
            cost = len(dropped.encode()) + 1
            self.kept_bytes -= cost
            self.dropped_bytes += cost
            self.dropped_lines += 1

    def result(self) -> list[LogLine]:
        lines = parse_logs(list(self.lines))
        if not self.dropped_bytes:
            return lines
        total = self.dropped_bytes + self.kept_bytes
        note = (
            f"[gristmill] {self.what} was truncated: its first {self.dropped_bytes} bytes "
            f"({self.dropped_lines} lines) of {total} were not kept (the cap is "
            f"{self.cap_bytes} bytes, GRISTMILL_KUBERNETES_LOG_CAP_BYTES)"
        )
        first = lines[0].timestamp if lines else datetime.fromtimestamp(0, timezone.utc)
        return [LogLine(first, "stdout", note), *lines]


# --- the executor ---------------------------------------------------------------------------


class KubernetesExecutor:
    """Runs elastic executions as pods and low-latency deployments as Deployments.

    ``log_sink`` receives an execution's logs in ``cleanup`` before its pod is deleted,
    so the platform keeps them once the cluster no longer has them.
    """

    def __init__(
        self,
        cfg: KubernetesConfig,
        *,
        api: kr8s.asyncio.Api | None = None,
        log_sink: LogSink | None = None,
        clock: Clock = _utcnow,
    ) -> None:
        self.cfg = cfg
        self._api = api
        self._log_sink = log_sink
        self._clock = clock
        self._connecting = asyncio.Lock()
        # this process, in the cleanup claims it writes (unique; a fresh one per start)
        self.replica = uuid.uuid4().hex[:12]

    def now(self) -> datetime:
        return self._clock()

    async def api(self) -> kr8s.asyncio.Api:
        if self._api is None:
            # one connection for all: a hundred concurrent first calls must not each
            # connect (and ask the server its version)
            async with self._connecting:
                if self._api is None:
                    self._api = await connect(self.cfg)
        return self._api

    # -- elastic executions ------------------------------------------------------------------

    async def submit(self, spec: LaunchSpec) -> Handle:
        """Create the execution's pod; if it already exists, return its handle instead."""
        manifest = manifests.execution_pod(spec, self.cfg)
        pod = await self._create_or_get(Pod, manifest)
        annotations = _raw(pod).get("metadata", {}).get("annotations") or {}
        owner = annotations.get(manifests.ANNOTATION_EXECUTION)
        if owner != spec.execution_id:
            raise KubernetesExecutorError(
                f"pod {pod.name} already exists for execution {owner!r}, not {spec.execution_id!r}"
            )
        return {
            "backend": BACKEND,
            "kind": "Pod",
            "namespace": self.cfg.namespace,
            "name": pod.name,
            "uid": _raw(pod).get("metadata", {}).get("uid"),
            "execution_id": spec.execution_id,
        }

    async def poll(self, handle: Handle) -> PollResult:
        pod = await self._get(Pod, handle)
        if pod is None:
            return status.missing_pod_outcome()
        return status.pod_outcome(
            _raw(pod), now=self._clock(), unschedulable_timeout_s=self.cfg.unschedulable_timeout_s
        )

    async def logs(self, handle: Handle) -> Sequence[LogLine]:
        """The lines the runner wrote so far, with the times the node recorded: the last
        ``log_cap_bytes`` of them, after a line saying how much was cut, if any."""
        return await self._read_logs(handle["namespace"], handle["name"], self.cfg.log_cap_bytes)

    async def cancel(self, handle: Handle) -> None:
        """Stop the execution.

        A worker already on a node gets its deadline lowered to one second: the kubelet
        stops it as for a timeout, and the pod stays, with its logs, until ``cleanup``.
        A worker not yet placed has no logs and no process: its pod is simply deleted.
        """
        pod = await self._get(Pod, handle)
        if pod is None:
            return
        outcome = status.pod_outcome(_raw(pod))
        if outcome.state in (WorkerState.SUCCEEDED, WorkerState.FAILED):
            return
        if not (_raw(pod).get("spec") or {}).get("nodeName"):
            await self._delete(pod)
            return
        await self._retrying(
            lambda: pod.patch(
                {
                    "metadata": {"annotations": {manifests.ANNOTATION_CANCELLED: "true"}},
                    "spec": {"activeDeadlineSeconds": 1},
                }
            ),
            f"cancel pod {pod.name}",
        )

    async def cleanup(self, handle: Handle) -> None:
        """Hand the logs to the log sink, then delete the pod.

        The log is read as a stream, of which the last ``log_cap_bytes`` are kept (and a
        first line saying how much was cut). If the sink fails the pod is kept, so the logs
        can still be read on a retry. A pod another replica is cleaning up is left to it
        (``cleanup_claimed``).
        """
        await self.cleanup_claimed(handle)

    async def cleanup_claimed(self, handle: Handle) -> bool:
        """``cleanup``; False when another control-service replica claimed the pod first.

        Several replicas may follow the same pod (each adopts every active execution at
        start-up; the orphan sweepers of all see every pod), so before its log is kept the
        pod is claimed: annotated with this replica's name by a patch carrying the
        resourceVersion just read, which the API server refuses (409) if the pod changed
        since. A fresh claim of another replica (younger than ``sweep_grace_s``) is left
        alone; an older one is of a replica that died mid-cleanup, and is taken over.
        """
        pod = await self._get(Pod, handle)
        if pod is None:
            return True
        if self._log_sink is not None:
            if not await self._claim_cleanup(pod, handle):
                return False
            lines = await self._read_logs(
                handle["namespace"], handle["name"], self.cfg.log_cap_bytes
            )
            await self._log_sink(handle, lines)
        await self._delete(pod)
        return True

    async def _claim_cleanup(self, pod: APIObject, handle: Handle) -> bool:
        for _ in range(CLAIM_ATTEMPTS):
            metadata = _raw(pod).get("metadata") or {}
            now = self._clock()
            held = parse_claim((metadata.get("annotations") or {}).get(ANNOTATION_CLEANING))
            if held is not None and held[0] == self.replica:
                return True  # ours: a retry after a failed sink
            if held is not None and claim_is_fresh(held, now, self.cfg.sweep_grace_s):
                return False
            if await self.claim(Pod, handle["namespace"], handle["name"],
                                str(metadata.get("resourceVersion") or ""),
                                {ANNOTATION_CLEANING: f"{self.replica} {now.isoformat()}"}):
                return True
            fresh = await self._get(Pod, handle)  # changed meanwhile: look again
            if fresh is None:
                return False
            pod = fresh
        return False

    # -- low-latency deployments -------------------------------------------------------------

    async def apply_worker(self, spec: WorkerSpec) -> Handle:
        """Create or update a low-latency deployment's Deployment and Service.

        Applying the same spec again changes nothing; a new ``generation`` (or any other
        change) patches the Deployment and Kubernetes rolls its pods.
        """
        deployment = await self._apply(Deployment, manifests.worker_deployment(spec, self.cfg))
        service = await self._apply(Service, manifests.worker_service(spec, self.cfg))
        await self._apply(
            PodDisruptionBudget, manifests.worker_disruption_budget(spec, self.cfg)
        )
        return {
            "backend": BACKEND,
            "kind": "Deployment",
            "namespace": self.cfg.namespace,
            "name": deployment.name,
            "service": service.name,
            "deployment_name": spec.deployment_name,
            "generation": spec.generation,
            "port": spec.port,
        }

    async def worker_is_shadow_only(self, deployment_name: str) -> bool | None:
        """Whether the deployment's warm-worker Deployment was applied for shadow copies
        only (manifests.ANNOTATION_SHADOW_ONLY); None when there is no such Deployment."""
        obj = await self._get(Deployment, {"name": manifests.worker_name(deployment_name),
                                           "namespace": self.cfg.namespace})
        return None if obj is None else manifests.is_shadow_only(_raw(obj))

    async def worker_refusal(self, deployment_name: str) -> str | None:
        """Why Kubernetes creates no pod for the deployment's warm workers, from their
        Deployment's conditions (worker_pods.refusal); None when it says nothing."""
        obj = await self._get(Deployment, {"name": manifests.worker_name(deployment_name),
                                           "namespace": self.cfg.namespace})
        return None if obj is None else refusal(_raw(obj))

    async def delete_worker(self, deployment_name: str) -> None:
        """Delete the Deployment (its ReplicaSets and pods follow), the Service and the
        PodDisruptionBudget."""
        name = manifests.worker_name(deployment_name)
        api = await self.api()
        for kind in (Deployment, Service, PodDisruptionBudget):
            obj = kind({"metadata": {"name": name, "namespace": self.cfg.namespace}}, api=api)
            await self._delete(obj, propagation_policy="Background")

    async def delete_workers_of(self, deployment_name: str) -> list[str]:
        """Delete every warm-worker object labelled as the deployment's (its own pipeline's,
        its variant pipelines', its node pools'), whichever control service replica applied
        them: what one replica remembers is not what the cluster holds. The names of the
        Deployments deleted."""
        selector = manifests.deployment_workers_selector(deployment_name)
        deleted: list[str] = []
        for kind in (Deployment, Service, PodDisruptionBudget):
            for obj in await self._list(kind, self.cfg.namespace, selector):
                # checked again here, as for pods: never another deployment's objects
                if _has_labels(_raw(obj), selector):
                    await self._delete(obj, propagation_policy="Background")
                    if kind is Deployment:
                        deleted.append(obj.name)
        return sorted(deleted)

    async def delete_worker_pod(self, deployment_name: str, pod_name: str) -> None:
        """Delete one pod of a low-latency deployment's workers, gracefully (its termination
        grace period lets it finish what it runs); its ReplicaSet starts another. Only a pod
        of that deployment: another name is left alone."""
        for pod in await self._worker_pod_objects(deployment_name):
            if pod.name == pod_name:
                await self._delete(pod)

    async def worker_pods(self, deployment_name: str) -> list[dict[str, str]]:
        """``[{"pod_id", "status"}]`` for a low-latency deployment, ordered by pod name."""
        pods = await self._worker_pod_objects(deployment_name)
        return [{"pod_id": pod.name, "status": status.worker_pod_status(_raw(pod))} for pod in pods]

    async def worker_problems(self, deployment_name: str) -> dict[str, str]:
        """Why each worker pod that is not coming up is stuck, by pod name."""
        pods = await self._worker_pod_objects(deployment_name)
        problems = {pod.name: status.worker_pod_problem(_raw(pod)) for pod in pods}
        return {name: problem for name, problem in problems.items() if problem}

    async def worker_logs(self, deployment_name: str) -> dict[str, list[LogLine]]:
        """The logs of each current worker pod, by pod name (for deployment logs); of
        each, its last ``log_cap_bytes`` (``LogTail``)."""
        pods = await self._worker_pod_objects(deployment_name)
        return {pod.name: await self.worker_pod_logs(pod.name) for pod in pods}

    async def worker_pod_logs(self, pod_name: str, since: datetime | None = None
                              ) -> list[LogLine]:
        """One warm worker pod's log: from the second of ``since`` on (``sinceTime``, so
        that a pod's whole log is not read again at every copy), at most its last
        ``log_cap_bytes``, after a line saying how much was cut, if any."""
        return await self._read_logs(self.cfg.namespace, pod_name, self.cfg.log_cap_bytes,
                                     since=since)

    # -- step image builds -------------------------------------------------------------------

    async def submit_build(self, build: ImageBuild, *, replace_failed: bool = False) -> Handle:
        """Start the build Job for a step image, or join the one already building it.

        A Job of the same image that already failed is joined as well (its failure is the
        answer), unless ``replace_failed``: then it is deleted and the image built again.
        A new attempt of the same step wants that (the registry may be back, the missing
        package published); a control service resuming its watch after a restart does not.
        """
        manifest = manifests.image_build_job(build, self.cfg)
        job = await self._create_or_get(Job, manifest)
        if replace_failed and _job_failed(_raw(job)):
            await self._delete(job, propagation_policy="Background")
            job = await self._create_or_get(Job, manifest)
            if _job_failed(_raw(job)):
                raise KubernetesExecutorError(
                    f"the failed build Job {job.name} is still being deleted; retry"
                )
        return {
            "backend": BACKEND,
            "kind": "Job",
            "namespace": manifest["metadata"]["namespace"],
            "name": job.name,
            "uid": _raw(job).get("metadata", {}).get("uid"),
            "image": step_image_ref(self.cfg, build.digest),
        }

    async def poll_build(self, handle: Handle) -> PollResult:
        """One build's state, read from the API (the build watch reads every build's from
        its cache instead); judged by ``build_status.build_outcome``."""
        job = await self._get(Job, handle)
        if job is None:
            return status.missing_pod_outcome()
        if (_raw(job).get("status") or {}).get("succeeded"):
            return PollResult(WorkerState.SUCCEEDED, exit_code=0)
        pod = await self._build_pod(handle, _raw(job).get("metadata", {}).get("uid"))
        return build_status.build_outcome(
            _raw(job), _raw(pod) if pod is not None else None, now=self._clock(),
            build_timeout_s=self.cfg.build_timeout_s,
            unschedulable_timeout_s=self.cfg.unschedulable_timeout_s)

    async def build_logs(self, handle: Handle) -> Sequence[LogLine]:
        """The build pod's log: its last ``log_cap_bytes``, after a line saying how much
        was cut (a build's failure is at its end)."""
        job = await self._get(Job, handle)
        uid = _raw(job).get("metadata", {}).get("uid") if job is not None else handle.get("uid")
        pod = await self._build_pod(handle, uid)
        if pod is None:
            return []
        return await self.build_pod_logs(handle["namespace"], pod.name,
                                         container=build_status.log_container(_raw(pod)))

    async def build_pod_logs(self, namespace: str, pod_name: str, *,
                             container: str | None = None) -> list[LogLine]:
        """A build pod's log, capped as ``build_logs`` says (the pod named by the watch);
        ``container``: another container's than BuildKit's (``log_container``)."""
        return await self._read_logs(namespace, pod_name, self.cfg.log_cap_bytes,
                                     what="the build log", container=container)

    # -- kr8s plumbing -----------------------------------------------------------------------

    async def _retrying(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        """``call()``, tried again on 429, 5xx, timeouts and broken connections
        (``retry_delay``), at most ``api_retries`` more times."""
        attempt = 0
        while True:
            try:
                return await call()
            except Exception as error:
                delay = retry_delay(
                    error, attempt, self.cfg.api_backoff_s, self.cfg.api_backoff_max_s
                )
                if delay is None or attempt >= self.cfg.api_retries:
                    raise
                attempt += 1
                log.info("%s failed (%s); try %d of %d in %.2f s", what,
                         _describe(error), attempt + 1, self.cfg.api_retries + 1, delay)
                await asyncio.sleep(delay)

    async def _create_or_get(self, kind: type[APIObject], manifest: dict[str, Any]) -> APIObject:
        """Create the object; on 409 AlreadyExists, return the one that is already there.

        Names are deterministic (one per execution, deployment or image), so a create
        tried again after a timeout or a 5xx, whose first attempt did reach the server,
        meets 409 and adopts what it created. An object of that name that does not carry
        ``app.kubernetes.io/managed-by=gristmill`` is not ours: refused, never adopted.
        """
        api = await self.api()
        name = manifest["metadata"]["name"]
        obj = kind(manifest, api=api)
        try:
            await self._retrying(obj.create, f"create {kind.kind} {name}")
            return obj
        except kr8s.ServerError as error:
            if _status_code(error) != 409:
                raise
        existing = await self._get(
            kind, {"namespace": manifest["metadata"]["namespace"], "name": name}
        )
        if existing is None:  # deleted between our create and our read
            raise KubernetesExecutorError(f"{kind.kind} {name} conflicted but is gone; retry")
        if not _has_labels(_raw(existing), {manifests.LABEL_MANAGED_BY: "gristmill"}):
            raise KubernetesExecutorError(
                f"{kind.kind} {name} exists but was not created by Gristmill (no "
                f"{manifests.LABEL_MANAGED_BY}=gristmill label); delete it or choose "
                "another name"
            )
        return existing

    async def _apply(self, kind: type[APIObject], manifest: dict[str, Any]) -> APIObject:
        sent = apply.with_applied_annotation(manifest)
        obj = await self._create_or_get(kind, sent)
        if (
            _raw(obj).get("metadata", {}).get("annotations", {}).get(apply.ANNOTATION_APPLIED)
            == (sent["metadata"]["annotations"][apply.ANNOTATION_APPLIED])
        ):
            return obj  # just created, or already exactly this
        patch = apply.update_patch(_raw(obj), manifest)
        if patch is None:
            raise KubernetesExecutorError(
                f"{kind.kind} {obj.name} exists but was not created by Gristmill; "
                "delete it or choose another deployment name"
            )
        if patch:
            await self._retrying(lambda: obj.patch(patch), f"update {kind.kind} {obj.name}")
        return obj

    async def _get(self, kind: type[APIObject], ref: Mapping[str, Any]) -> APIObject | None:
        api = await self.api()
        obj = kind({"metadata": {"name": ref["name"], "namespace": ref["namespace"]}}, api=api)
        try:
            await self._retrying(obj.refresh, f"read {kind.kind} {ref['name']}")
        except kr8s.NotFoundError:
            return None
        return obj

    async def _delete(self, obj: APIObject, propagation_policy: str | None = None) -> None:
        with contextlib.suppress(kr8s.NotFoundError):  # already gone: what we wanted
            await self._retrying(
                lambda: obj.delete(propagation_policy=propagation_policy),
                f"delete {obj.kind} {obj.name}",
            )

    async def _read_logs(
        self, namespace: str, pod_name: str, cap_bytes: int | None = None, *,
        since: datetime | None = None, what: str = "the pod log",
        container: str | None = None,
    ) -> list[LogLine]:
        """The pod's log, read as a stream; with ``cap_bytes``, only its last bytes are
        kept (``LogTail``); with ``since``, only from that second on; with ``container``,
        that container's (else the pod's only one)."""
        params = {"timestamps": "true"}
        if since is not None:
            params["sinceTime"] = since_time(since)
        if container is not None:
            params["container"] = container

        async def read() -> list[LogLine]:
            api = await self.api()
            tail = LogTail(cap_bytes, what) if cap_bytes is not None else None
            raw: list[str] = []
            async with api.call_api(
                "GET",
                version="v1",
                namespace=namespace,
                url=f"pods/{pod_name}/log",
                params=params,
                stream=True,
            ) as response:
                async for line in response.aiter_lines():
                    line = line.rstrip("\r\n")
                    if tail is not None:
                        tail.add(line)
                    else:
                        raw.append(line)
            return tail.result() if tail is not None else parse_logs(raw)

        try:
            return await self._retrying(read, f"read the log of pod {pod_name}")
        except kr8s.ServerError as error:
            # 404: the pod is gone. 400: its container has not started, so no logs yet.
            if _status_code(error) in (400, 404):
                return []
            raise

    # -- the executions' pods, for the watch and the sweeper ---------------------------------

    async def list_objects(
        self, kind: type[APIObject], namespace: str, selector: Mapping[str, str]
    ) -> tuple[list[dict[str, Any]], str]:
        """Every object of ``kind`` matching ``selector`` (pages of 500), and the
        resourceVersion of the list, from which a watch starts."""
        api = await self.api()
        params: dict[str, Any] = {"labelSelector": _selector_text(selector), "limit": 500}
        items: list[dict[str, Any]] = []
        version = ""
        async def page(query: dict[str, Any]) -> dict[str, Any]:
            async with api.call_api(
                "GET", version=kind.version, namespace=namespace, url=kind.endpoint,
                params=query,
            ) as response:
                body: dict[str, Any] = response.json()
                return body

        while True:
            body = await self._retrying(
                functools.partial(page, dict(params)), f"list {kind.endpoint} in {namespace}"
            )
            metadata = body.get("metadata") or {}
            version = str(metadata.get("resourceVersion") or version)
            # asked of the server and checked again here, whatever it does with selectors
            items.extend(
                item for item in body.get("items") or [] if _has_labels(item, selector)
            )
            if not metadata.get("continue"):
                return items, version
            params["continue"] = metadata["continue"]

    async def claim(self, kind: type[APIObject], namespace: str, name: str,
                    resource_version: str, annotations: Mapping[str, str]) -> bool:
        """Annotate an object only if it is still at ``resource_version`` (optimistic
        concurrency: the API server refuses with 409 Conflict a patch whose
        resourceVersion is not the object's). False when it changed, or is gone: someone
        else (another replica) may have claimed it."""
        api = await self.api()
        obj = kind({"metadata": {"name": name, "namespace": namespace}}, api=api)
        patch = {"metadata": {"resourceVersion": resource_version,
                              "annotations": dict(annotations)}}
        try:
            await self._retrying(lambda: obj.patch(patch), f"claim {kind.kind} {name}")
        except kr8s.NotFoundError:
            return False
        except kr8s.ServerError as error:
            if _status_code(error) in (404, 409):
                return False
            raise
        return True

    async def delete_object(self, kind: type[APIObject], namespace: str, name: str) -> None:
        """Delete one object (and, in the background, what it owns); gone already is fine."""
        api = await self.api()
        obj = kind({"metadata": {"name": name, "namespace": namespace}}, api=api)
        await self._delete(obj, propagation_policy="Background")

    async def watch_objects(
        self,
        kind: type[APIObject],
        namespace: str,
        selector: Mapping[str, str],
        since: str,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The events (``{"type", "object"}``) of one watch from ``since``, until the
        server ends it (``watch_timeout_s``). Not retried: the caller decides (410 Gone:
        list again; anything else: back off, then list again)."""
        api = await self.api()
        params = {
            "watch": "true",
            "labelSelector": _selector_text(selector),
            "resourceVersion": since,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self.cfg.watch_timeout_s),
        }
        # No read timeout beyond the server's own end of the watch (and a margin): a quiet
        # namespace sends nothing for minutes.
        timeout = httpx.Timeout(self.cfg.api_timeout_s, read=self.cfg.watch_timeout_s + 30)
        async with api.call_api(
            "GET", version=kind.version, namespace=namespace, url=kind.endpoint,
            params=params, stream=True, timeout=timeout,
        ) as response:
            async for line in response.aiter_lines():
                if line.strip():
                    yield json.loads(line)

    async def _list_pods(self, namespace: str, selector: Mapping[str, str]) -> list[APIObject]:
        """The pods matching ``selector`` as kr8s objects (a list, retried as any call)."""
        return await self._list(Pod, namespace, selector)

    async def _list(
        self, kind: type[APIObject], namespace: str, selector: Mapping[str, str]
    ) -> list[APIObject]:
        """The objects of a kind matching ``selector`` (a list, retried as any call)."""
        api = await self.api()

        async def listed() -> list[APIObject]:
            return [
                obj
                async for obj in api.async_get(
                    kind, namespace=namespace, label_selector=dict(selector)
                )
                if isinstance(obj, APIObject)
            ]

        return await self._retrying(listed, f"list {kind.endpoint} in {namespace}")

    async def _worker_pod_objects(self, deployment_name: str) -> list[APIObject]:
        selector = manifests.worker_selector(deployment_name)
        pods = await self._list_pods(self.cfg.namespace, selector)
        # The selector is asked of the server and checked again here: a list must never
        # show another deployment's pods, whatever the server does with the selector.
        matching = [pod for pod in pods if _has_labels(_raw(pod), selector)]
        return sorted(matching, key=lambda pod: pod.name)

    async def _build_pod(self, handle: Handle, job_uid: str | None) -> APIObject | None:
        """The newest pod of the build Job (``build_status.newest_build_pod``)."""
        pods = {pod.name: pod for pod in await self._list_pods(
            handle["namespace"], {build_status.JOB_NAME_LABEL: handle["name"]})}
        newest = build_status.newest_build_pod(
            [_raw(pod) for pod in pods.values()], handle["name"], job_uid)
        return pods[newest["metadata"]["name"]] if newest is not None else None


def _job_failed(raw: Mapping[str, Any]) -> bool:
    job_status = raw.get("status") or {}
    return bool(job_status.get("failed")) or any(
        condition.get("type") == "Failed" and condition.get("status") == "True"
        for condition in job_status.get("conditions") or []
    )


def parse_claim(value: object) -> tuple[str, datetime] | None:
    """A cleanup claim (``ANNOTATION_CLEANING``): the replica and when, or None."""
    if not isinstance(value, str):
        return None
    who, _, when = value.partition(" ")
    if not who or not when:
        return None
    try:
        moment = datetime.fromisoformat(when.replace("Z", "+00:00"))
    except ValueError:
        return None
    return who, moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def claim_is_fresh(claim: tuple[str, datetime], now: datetime, grace_s: float) -> bool:
    """Whether the replica that claimed a cleanup may still be doing it (pure)."""
    return now - claim[1] < timedelta(seconds=grace_s)


def _raw(obj: APIObject) -> dict[str, Any]:
    raw: dict[str, Any] = obj.to_dict()
    return raw


def _status_code(error: kr8s.ServerError) -> int | None:
    return error.response.status_code if error.response is not None else None


def _selector_text(selector: Mapping[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(selector.items()))


def _describe(error: BaseException) -> str:
    if isinstance(error, kr8s.ServerError) and error.response is not None:
        return f"HTTP {error.response.status_code}"
    return type(error).__name__


def _has_labels(raw: Mapping[str, Any], wanted: Mapping[str, str]) -> bool:
    labels = (raw.get("metadata") or {}).get("labels") or {}
    return all(labels.get(key) == value for key, value in wanted.items())


if TYPE_CHECKING:

    def _implements_the_protocol(executor: KubernetesExecutor) -> Executor:
        return executor  # mypy checks KubernetesExecutor against the Executor protocol
