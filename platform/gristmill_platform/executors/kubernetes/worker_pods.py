"""What the Kubernetes worker pool reads from a low-latency deployment's pods (pure).

``read_pod`` turns a pod as the API returns it into the few facts the pool acts on;
``judge`` turns the pods of a deployment into the deployment's status (``up``,
``down_retrying``, ``creation_failed``, or no verdict yet while they start). Nothing here
calls the cluster or reads the clock: the pool passes ``now``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gristmill_platform.executors.kubernetes import status
from gristmill_platform.executors.kubernetes.manifests import (
    ANNOTATION_GENERATION,
    CONTAINER,
    PORT_NAME,
)

# A worker that was up and keeps crashing is given up on after this many restarts in a
# crash loop (the local pool's MAX_RESTARTS_IN_A_ROW); the kubelet keeps trying anyway,
# and the status comes back to "up" if it ever serves again.
MAX_RESTARTS = 3
_SIGNALS = {137: "SIGKILL", 143: "SIGTERM", 139: "SIGSEGV", 134: "SIGABRT"}
# serve's exit code when the step module cannot be imported (runtime-protocol.md)
_EXIT_IMPORT_FAILED = 1


@dataclass(frozen=True)
class WorkerPod:
    """One warm worker pod, as last read from the API."""

    name: str
    status: str  # pending | starting | ready | failed | terminating (status.worker_pod_status)
    generation: int | None  # the deployment generation its template was applied for
    problem: str | None  # why it is not coming up (status.worker_pod_problem)
    restarts: int
    ip: str | None
    port: int | None
    unschedulable_since: datetime | None
    last_exit: str | None  # why its container last stopped, in words
    last_exit_code: int | None
    last_output: tuple[str, ...] = ()  # the end of what that container printed
    # Failed/Succeeded: evicted or its node lost; its ReplicaSet starts another one
    finished: bool = False


def read_pod(raw: Mapping[str, Any]) -> WorkerPod:
    metadata = raw.get("metadata") or {}
    spec = raw.get("spec") or {}
    pod_status = raw.get("status") or {}
    container = _runner(pod_status.get("containerStatuses") or [])
    terminated = ((container.get("lastState") or {}).get("terminated")
                  or (container.get("state") or {}).get("terminated") or {})
    generation = (metadata.get("annotations") or {}).get(ANNOTATION_GENERATION)
    code = terminated.get("exitCode")
    return WorkerPod(
        name=str(metadata.get("name") or ""),
        status=status.worker_pod_status(raw),
        generation=int(str(generation)) if str(generation or "").isdigit() else None,
        problem=status.worker_pod_problem(raw),
        restarts=int(container.get("restartCount") or 0),
        ip=pod_status.get("podIP") or None,
        port=_port(spec),
        unschedulable_since=_unschedulable_since(pod_status),
        last_exit=_exit_words(terminated, spec) if terminated else None,
        last_exit_code=int(code) if isinstance(code, int) else None,
        # FallbackToLogsOnError: a failed container's last lines are its termination message
        last_output=tuple(line for line in str(terminated.get("message") or "").splitlines()
                          if line.strip()),
        finished=pod_status.get("phase") in ("Failed", "Succeeded"),
    )


@dataclass(frozen=True)
class Verdict:
    status: str  # up | down_retrying | creation_failed
    reason: str | None = None


def refusal(deployment: Mapping[str, Any]) -> str | None:
    """Why Kubernetes does not create a worker Deployment's pods, from its conditions: a
    pod refused at admission (the namespace's ResourceQuota or LimitRange, Pod Security)
    is never created, so no pod can tell it; the Deployment controller copies its
    ReplicaSet's ReplicaFailure (FailedCreate) onto the Deployment. None: nothing said."""
    conditions = (deployment.get("status") or {}).get("conditions") or []
    for condition in conditions:
        if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
            message = str(condition.get("message") or condition.get("reason") or "")
            return f"Kubernetes did not create the worker pod: {message}".rstrip(": ")
    for condition in conditions:
        if (condition.get("type") == "Progressing" and condition.get("status") == "False"
                and condition.get("reason") == "ProgressDeadlineExceeded"):
            message = str(condition.get("message") or "")
            return f"The worker's rollout made no progress: {message}".rstrip(": ")
    return None


def has_current(pods: Sequence[WorkerPod], generation: int) -> bool:
    """Whether a pod of this generation exists, live or failed (not one being deleted)."""
    return any(p.generation == generation and p.status != "terminating" for p in pods)


def judge(pods: Sequence[WorkerPod], generation: int, *, was_up: bool, now: datetime,
          unschedulable_timeout_s: float, refused: str | None = None) -> Verdict | None:
    """The deployment's status from its pods, or None while the current generation's pod
    is still on its way (the status stays creation_pending).

    Only pods of the current generation count: during a rollout the old pod still serves,
    but the update is what the status reports on. Before the generation was ever up, a
    definite failure (image, configuration, a crash at import) is final at once, like a
    failed local start; Kubernetes keeps retrying, and the status turns "up" if a retry
    works. Once up, a worker that stops serving is "down_retrying" until it is back, or
    until it has crashed MAX_RESTARTS times in a loop. refused: why Kubernetes creates no
    pod of the generation (``refusal``), final as a definite failure is when none exists."""
    current = [p for p in pods if p.generation == generation
               and p.status != "terminating" and not p.finished]
    if any(p.status == "ready" for p in current):
        return Verdict("up")
    for pod in current:
        if pod.unschedulable_since is not None and pod.problem:
            waited = (now - pod.unschedulable_since).total_seconds()
            if waited > unschedulable_timeout_s:
                return Verdict("creation_failed",
                               f"{pod.problem} Waited {_duration(waited)} for a node.")
            if was_up:
                return Verdict("down_retrying", pod.problem)
            continue  # a GPU pool scaled to zero takes minutes to add a node
        crashed = pod.restarts > 0 and pod.last_exit is not None
        if pod.status != "failed" and not crashed:
            if was_up:
                return Verdict("down_retrying", pod.problem or
                               f"The worker pod {pod.name} is starting again.")
            continue
        reason = explain(pod)
        if not was_up or pod.restarts > MAX_RESTARTS:
            return Verdict("creation_failed", reason if not was_up
                           else f"The worker keeps failing: {reason}")
        return Verdict("down_retrying", reason)
    if refused is not None and not current:
        return Verdict("down_retrying" if was_up else "creation_failed", refused)
    if was_up:
        return Verdict("down_retrying", "The worker pod is being replaced.")
    return None


def explain(pod: WorkerPod) -> str:
    """Why a worker pod does not serve, for the deployment's status_reason."""
    last = pod.last_output[-1].strip() if pod.last_output else None
    if pod.last_exit_code == _EXIT_IMPORT_FAILED and last:
        # serve prints the import traceback and exits 1: its last line is the error
        return f"Importing the step module failed: {last}"
    parts = [pod.problem or ""]
    if pod.last_exit:
        parts.append(f"Its last exit: {pod.last_exit}.")
    if last:
        parts.append(f"Its last output: {last}")
    text = " ".join(part for part in parts if part)
    return text or f"The worker pod {pod.name} does not serve."


def _runner(statuses: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    for container in statuses:
        if container.get("name") == CONTAINER:
            return container
    return statuses[0] if statuses else {}


def _port(spec: Mapping[str, Any]) -> int | None:
    for container in spec.get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == PORT_NAME and isinstance(port.get("containerPort"), int):
                return int(port["containerPort"])
    return None


def _unschedulable_since(pod_status: Mapping[str, Any]) -> datetime | None:
    for condition in pod_status.get("conditions") or []:
        if (condition.get("type") == "PodScheduled" and condition.get("status") == "False"
                and condition.get("reason") == "Unschedulable"):
            stamp = condition.get("lastTransitionTime")
            if isinstance(stamp, str):
                try:
                    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
                except ValueError:
                    return None
    return None


def _exit_words(terminated: Mapping[str, Any], spec: Mapping[str, Any]) -> str:
    if terminated.get("reason") == "OOMKilled":
        limit = next((str(limits["memory"]) for container in spec.get("containers") or []
                      if (limits := (container.get("resources") or {}).get("limits") or {})
                      and "memory" in limits), None)
        within = f" (limit {limit})" if limit else ""
        return (f"it ran out of memory{within} and was killed; ask for more memory with "
                "ram_request")
    code = terminated.get("exitCode")
    killed = f" (killed by {_SIGNALS[code]})" if code in _SIGNALS else ""
    return f"it exited with code {code}{killed}"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"
