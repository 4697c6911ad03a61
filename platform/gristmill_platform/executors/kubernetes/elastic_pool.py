"""Pre-started pods for elastic executions: a pool per step, each pod taking exactly one
execution, then exiting (the pool starts another behind it).

A cold elastic execution waits for its pod to be scheduled, its image to be there and
its container to start before the runner asks for the execution. A pool pod has done all
of that already: its runner waits (``python -m gristmill.runtime pool``, long-polling
``POST /runtime/pool/claim``), and an execution given to it starts after the hand-off
only.

How a pod is given an execution, exactly once, with several control-service replicas:

1. ``take`` (the replica launching the execution) picks a Running pool pod of the
   execution's step from its cached list, and patches it with the execution's labels and
   annotations (pool_manifests.assignment_patch) *and the resourceVersion it saw*: the API
   server refuses the patch (409) if the pod changed meanwhile, so two replicas can never
   both take one pod. The pod is from then on that execution's pod (mode ``elastic``): the
   pod watcher, the reconciler, the sweeper, ``cancel`` and ``cleanup`` treat it as any.
2. The caller records the pod as the execution's worker and handle (one commit), then
   ``assigned`` wakes a claim waiting on this replica.
3. The pod's claim, on whichever replica it lands, finds the pending execution whose
   worker is the pod (a database read) and receives its environment and a freshly minted
   execution token (executions/pool_claims.py). Nothing of the execution is ever in the
   pool pod's spec.

Nothing here is kept only in memory that a restart would need: a pod's pool token is an
HMAC of its name and step under the environment's secret key, so after a restart the
idle pods of this replica (annotation ``gristmill.io/pool-owner``) are adopted as they
are (wanted for another idle period); an execution given to a pod but not yet claimed is
found in the database by the pod's next claim; a pod whose execution never got recorded
(a crash between 1 and 2) stays unclaimed, exits after its idle limit, and its
execution, which has no worker, is failed by the reconciler. Pool pods of another owner
are left to it; the pod's own idle limit ends them if that owner is gone, and any
replica deletes ended pool pods.

A pool is made on demand: the first execution of a step (a miss, which takes the cold
path) makes the pool start ``size`` pods for it; every execution of the step keeps it
wanted; ``idle_s`` after the last one, its idle pods are deleted (scale to zero).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import kr8s
from kr8s.asyncio.objects import Pod

from gristmill_platform.executors.kubernetes import manifests, status
from gristmill_platform.executors.kubernetes.executor import BACKEND, KubernetesExecutor
from gristmill_platform.executors.kubernetes.naming import label_value
from gristmill_platform.executors.kubernetes.pool_manifests import (
    ANNOTATION_STEP_ID,
    LABEL_POOL,
    MODE_POOL,
    PoolShape,
    assignment_patch,
    pool_env,
    pool_pod,
    pool_pod_name,
    pool_selector,
)
from gristmill_platform.executors.spec import Handle, LaunchSpec, Resources, WorkerState
from gristmill_platform.timeouts import within

log = logging.getLogger("gristmill.executors.kubernetes")

ANNOTATION_OWNER = "gristmill.io/pool-owner"
# A pool pod with no execution after this many times the idle period exits by itself:
# the end of the pods of a replica that went away for good.
POD_IDLE_LIMIT_FACTOR = 2
MIN_POD_IDLE_LIMIT_S = 60.0
EXIT_REFUSED = 3  # the pool runner's exit code when refused (sdk/gristmill/runtime/pool.py)
_TOKEN_CONTEXT = b"gristmill elastic pool token v1"


def pool_key(secret_key: str) -> bytes:
    """The key of pool tokens, derived from the environment's secret key (shared by every
    replica, kept across restarts), distinct from its other uses."""
    return hmac.new(secret_key.encode(), _TOKEN_CONTEXT, hashlib.sha256).digest()


def pool_token(key: bytes, pod_name: str, step_id: str) -> str:
    """The token of one pool pod: good for claiming an execution of ``step_id`` as
    ``pod_name``, and nothing else (not an SDK token: no other route accepts it)."""
    message = f"{pod_name}\n{step_id}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def token_matches(key: bytes, pod_name: str, step_id: str, token: str) -> bool:
    return hmac.compare_digest(pool_token(key, pod_name, step_id), token)


def deadline_s(timeout_s: int | None, started_at: datetime | None, now: datetime) -> int | None:
    """The pod's activeDeadlineSeconds for an execution given to it at ``now``: it counts
    from the pod's start, so the time the pod waited is added to the timeout (pure)."""
    if timeout_s is None:
        return None
    waited = (now - started_at).total_seconds() if started_at is not None else 0.0
    return timeout_s + max(math.ceil(waited), 0) + 1


@dataclass
class Demand:
    shape: PoolShape
    last_used: float


@dataclass
class PoolStats:
    hits: int = 0
    misses: int = 0
    created: int = 0
    retired: int = 0
    lost_races: int = 0


@dataclass
class _Waiters:
    events: dict[str, asyncio.Event] = field(default_factory=dict)
    claims: dict[str, int] = field(default_factory=dict)  # claims waiting, per pod

    def event(self, name: str) -> asyncio.Event:
        return self.events.setdefault(name, asyncio.Event())


class ElasticPool:
    """The pool pods of this control-service replica, per step (see the module doc)."""

    def __init__(
        self,
        executor: KubernetesExecutor,
        *,
        secret_key: str,
        size: int,
        idle_s: float,
        environment_url: str,
        owner: str,
        interval_s: float = 2.0,
        claim_wait_s: float = 20.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if size < 0:
            raise ValueError(f"the pool size must be >= 0, got {size}")
        if idle_s <= 0:
            raise ValueError(f"the pool's idle period must be > 0 s, got {idle_s}")
        self.executor = executor
        self.cfg = executor.cfg
        self.key = pool_key(secret_key)
        self.size = size
        self.idle_s = idle_s
        self.environment_url = environment_url
        self.owner = label_value(owner)
        self.interval_s = interval_s
        self.claim_wait_s = claim_wait_s
        self._clock = clock
        self.stats = PoolStats()
        self._demand: dict[str, Demand] = {}
        self._broken: dict[str, float] = {}  # step id -> when its pool pods failed
        self._pods: dict[str, dict[str, Any]] = {}  # pool pods as last listed, by name
        self._creating: dict[str, str] = {}  # pod name -> step id, created, not yet listed
        self._taken: set[str] = set()  # taken by this replica since the last list
        self._waiters = _Waiters()
        self._adopting = True  # the first pass after a start adopts this owner's pods
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- giving executions to pods -----------------------------------------------------------

    def serves(self, spec: LaunchSpec) -> bool:
        """Whether a pool pod can run ``spec``: one that asks for nothing a pool pod does
        not have (its resources, a GPU, labels of its own)."""
        if self.size <= 0 or not spec.image or spec.labels:
            return False
        if spec.resources != Resources():
            return False
        try:
            return manifests.gpu_count(spec.resources, spec.language) == 0
        except ValueError:
            return False

    async def take(self, spec: LaunchSpec, step_id: str) -> Handle | None:
        """Give ``spec``'s execution to an idle pool pod of its step: the pod's handle, or
        None (no pod ready: the caller starts a cold pod; the pool fills up behind)."""
        if not self.serves(spec):
            return None
        assert spec.image is not None
        shape = PoolShape(step_id, spec.step_name, spec.pipeline_name, spec.language,
                          spec.image)
        self._demand[step_id] = Demand(shape, self._clock())
        try:
            for raw in self._idle(shape):
                handle = await self._assign(raw, spec)
                if handle is not None:
                    self.stats.hits += 1
                    return handle
            self.stats.misses += 1
            return None
        finally:
            self._wake.set()  # a replacement for the pod taken, or a first pod

    def _idle(self, shape: PoolShape) -> list[dict[str, Any]]:
        """Running, untaken pool pods of the step and image, this replica's first."""
        found = [raw for name, raw in self._pods.items()
                 if self._takeable(name, raw, shape.step_id, shape.image)]
        found.sort(key=lambda raw: (raw["metadata"].get("annotations", {}).get(
            ANNOTATION_OWNER) != self.owner, raw["metadata"]["name"]))
        return found

    def _takeable(self, name: str, raw: Mapping[str, Any], step_id: str,
                  image: str | None) -> bool:
        """An untaken pool pod of the step (and of that image, unless None), Running as
        last listed: what a take may give."""
        metadata = raw.get("metadata") or {}
        labels = metadata.get("labels") or {}
        annotations = metadata.get("annotations") or {}
        container = ((raw.get("spec") or {}).get("containers") or [{}])[0]
        return not (name in self._taken or metadata.get("deletionTimestamp")
                    or labels.get(manifests.LABEL_MODE) != MODE_POOL
                    or annotations.get(ANNOTATION_STEP_ID) != step_id
                    or (image is not None and container.get("image") != image)
                    or (raw.get("status") or {}).get("phase") != "Running")

    async def _assign(self, raw: Mapping[str, Any], spec: LaunchSpec) -> Handle | None:
        name = str(raw["metadata"]["name"])
        self._taken.add(name)
        started = _parse_time((raw.get("status") or {}).get("startTime"))
        patch = assignment_patch(
            spec.execution_id, spec.deployment_name,
            deadline_s(spec.timeout_s, started, self.executor.now()))
        # The precondition: the API server refuses the patch if anyone (another replica's
        # take, the kubelet ending the pod) changed the pod since we listed it.
        patch["metadata"]["resourceVersion"] = raw["metadata"].get("resourceVersion")
        api = await self.executor.api()
        pod = Pod({"metadata": {"name": name, "namespace": self.cfg.namespace}}, api=api)
        try:
            await pod.patch(patch)
        except kr8s.NotFoundError:
            return None
        except kr8s.ServerError as error:
            code = error.response.status_code if error.response is not None else None
            if code == 409:
                self.stats.lost_races += 1
                return None
            log.warning("could not give execution %s to pool pod %s (%s): a cold pod "
                        "runs it", spec.execution_id, name, code)
            return None
        except Exception as error:  # timeout, broken connection: the cold path is safe
            log.warning("could not give execution %s to pool pod %s (%s): a cold pod runs it",
                        spec.execution_id, name, type(error).__name__)
            return None
        patched: dict[str, Any] = pod.to_dict()
        return {
            "backend": BACKEND,
            "kind": "Pod",
            "namespace": self.cfg.namespace,
            "name": name,
            "uid": (patched.get("metadata") or {}).get("uid"),
            "execution_id": spec.execution_id,
            "pool": True,
        }

    def assigned(self, pod_name: str) -> None:
        """The execution given to ``pod_name`` is committed: wake its claim if it waits
        on this replica."""
        self._waiters.event(pod_name).set()

    async def wait_assigned(self, pod_name: str, timeout_s: float) -> None:
        """Until ``assigned(pod_name)`` on this replica, or ``timeout_s``."""
        event = self._waiters.event(pod_name)
        self._waiters.claims[pod_name] = self._waiters.claims.get(pod_name, 0) + 1
        try:
            with contextlib.suppress(TimeoutError):
                await within(event.wait(), timeout_s)
        finally:
            self._waiters.claims[pod_name] -= 1
            if not self._waiters.claims[pod_name]:
                del self._waiters.claims[pod_name]
                # a pod gone for good leaves nothing behind
                if not event.is_set():
                    self._waiters.events.pop(pod_name, None)
        event.clear()

    def waiting(self, pod_name: str) -> bool:
        """Whether the pod's runner is waiting in a claim on this replica (it has started
        and reached the control service): for the bench and tests."""
        return self._waiters.claims.get(pod_name, 0) > 0

    def verify(self, pod_name: str, step_id: str, token: str) -> bool:
        return token_matches(self.key, pod_name, step_id, token)

    # -- keeping the pools -------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._forever())

    async def _forever(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("the elastic pool's pass failed")
            with contextlib.suppress(TimeoutError):
                await within(self._wake.wait(), self.interval_s)
            self._wake.clear()

    async def tick(self) -> None:
        """List the pool pods; delete the ended ones, the idle ones of steps no longer
        wanted (scale to zero); start pods where a wanted step has fewer than ``size``."""
        now = self._clock()
        for step_id, demand in list(self._demand.items()):
            if now - demand.last_used > self.idle_s:
                del self._demand[step_id]
        for step_id, since in list(self._broken.items()):
            if now - since > self.idle_s:
                del self._broken[step_id]
        items, _ = await self.executor.list_objects(Pod, self.cfg.namespace, pool_selector())
        self._pods = {str(raw["metadata"]["name"]): raw for raw in items}
        self._taken.clear()
        for name in list(self._waiters.events):
            # a wake-up no claim on this replica took (the pod claimed on another one)
            if name not in self._pods and not self._waiters.claims.get(name):
                del self._waiters.events[name]
        for name in list(self._creating):
            if name in self._pods:
                del self._creating[name]
        mine: dict[str, int] = {}
        for name, raw in list(self._pods.items()):
            metadata = raw.get("metadata") or {}
            if metadata.get("deletionTimestamp"):
                self._pods.pop(name)
                continue
            annotations = metadata.get("annotations") or {}
            step_id = str(annotations.get(ANNOTATION_STEP_ID) or "")
            outcome = status.pod_outcome(raw, now=self.executor.now(),
                                         unschedulable_timeout_s=self.cfg.unschedulable_timeout_s)
            if outcome.state in (WorkerState.SUCCEEDED, WorkerState.FAILED):
                # ended with no execution (an assigned pod is no longer in this list)
                # Exit 3: the control service refused or could not be reached (a restart,
                # a rotated key), not a fault of the step's pods, which would fail again.
                if (outcome.state == WorkerState.FAILED and outcome.exit_code != EXIT_REFUSED
                        and annotations.get(ANNOTATION_OWNER) == self.owner):
                    log.warning("pool pod %s of step %s failed before taking work (%s); the "
                                "step's pool pauses for %g s", name, step_id, outcome.reason,
                                self.idle_s)
                    self._broken[step_id] = now
                await self._delete(name)
                continue
            if annotations.get(ANNOTATION_OWNER) != self.owner:
                continue  # another replica's, which keeps it
            if self._adopting and step_id not in self._demand:
                # ours from before a restart: wanted for another idle period
                self._demand[step_id] = Demand(_shape_of(raw, step_id), now)
            if step_id not in self._demand or step_id in self._broken:
                await self._delete(name)  # scale to zero, or a step whose pods fail
                continue
            mine[step_id] = mine.get(step_id, 0) + 1
        self._adopting = False
        for step_id in self._creating.values():
            mine[step_id] = mine.get(step_id, 0) + 1
        for step_id, demand in list(self._demand.items()):
            if step_id in self._broken:
                continue
            for _ in range(self.size - mine.get(step_id, 0)):
                await self._create(demand.shape)

    async def _create(self, shape: PoolShape) -> None:
        name = pool_pod_name(shape.step_id, secrets.token_hex(4))
        env = pool_env(self.environment_url, pool_token(self.key, name, shape.step_id),
                       shape.step_id, self.claim_wait_s, self.cfg.io_dir)
        env["GRISTMILL_POOL_IDLE_LIMIT_S"] = f"{self.pod_idle_limit_s():g}"
        manifest = pool_pod(shape, name, env, self.cfg)
        manifest["metadata"]["annotations"][ANNOTATION_OWNER] = self.owner
        self._creating[name] = shape.step_id
        api = await self.executor.api()
        try:
            await self.executor._retrying(Pod(manifest, api=api).create,
                                          f"create pool pod {name}")
        except Exception:
            self._creating.pop(name, None)
            raise
        self.stats.created += 1

    def pod_idle_limit_s(self) -> float:
        return max(self.idle_s * POD_IDLE_LIMIT_FACTOR, MIN_POD_IDLE_LIMIT_S)

    async def _delete(self, name: str) -> None:
        self._pods.pop(name, None)
        await self.executor.delete_object(Pod, self.cfg.namespace, name)
        self.stats.retired += 1

    def takeable_pods(self, step_id: str) -> list[str]:
        """The pool pods a take for the step may give now, as last listed: Running in this
        replica's listing, not only on the node (for tests and the bench)."""
        return sorted(name for name, raw in self._pods.items()
                      if self._takeable(name, raw, step_id, None))

    def idle_pods(self, step_id: str | None = None) -> list[str]:
        """This replica's untaken pool pods as last listed (for tests and the bench)."""
        return sorted(
            name for name, raw in self._pods.items()
            if name not in self._taken
            and (raw["metadata"].get("annotations") or {}).get(ANNOTATION_OWNER) == self.owner
            and (step_id is None
                 or (raw["metadata"].get("labels") or {}).get(LABEL_POOL)
                 == label_value(step_id)))

    async def shutdown(self) -> None:
        """Stop keeping the pools; idle pods stay (a restart adopts them, or they end on
        their own idle limit)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


def _shape_of(raw: Mapping[str, Any], step_id: str) -> PoolShape:
    """The shape of a pool pod found in the cluster (adopted after a restart)."""
    metadata = raw.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    container = ((raw.get("spec") or {}).get("containers") or [{}])[0]
    return PoolShape(step_id, str(annotations.get(manifests.ANNOTATION_STEP) or ""),
                     str(annotations.get(manifests.ANNOTATION_PIPELINE) or ""), "",
                     str(container.get("image") or ""))


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
