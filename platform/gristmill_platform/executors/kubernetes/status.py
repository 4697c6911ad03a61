"""Pure mapping from a pod's status to an execution outcome a user can act on.

A pod's ``phase`` alone is not enough and can lag behind its container: the container can
be terminated while the phase still says Running; an evicted pod may have no container
status at all; an unschedulable or image-less pod stays Pending forever. So the outcome is
read from, in order: our cancellation mark, the pod-level reason (deadline, eviction,
node loss), the container's terminated state, the container's waiting reason, the
scheduling condition, and only then the phase.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from gristmill_platform.executors.kubernetes.manifests import ANNOTATION_CANCELLED, CONTAINER
from gristmill_platform.executors.spec import FailureCode, PollResult, WorkerState

Pod = Mapping[str, Any]

# Permanent: kubelet keeps retrying, but the same image name will not start to exist.
_IMAGE_FAILURES = frozenset({"ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
# ErrImagePull is the first failed attempt; a registry hiccup clears on the next one.
_IMAGE_RETRYING = frozenset({"ErrImagePull"})
_CONFIG_FAILURES = frozenset(
    {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
)
_NODE_LOST = frozenset(
    {"NodeLost", "NodeShutdown", "Shutdown", "Terminated", "UnexpectedAdmissionError"}
)
_SIGNALS = {137: "SIGKILL", 143: "SIGTERM", 139: "SIGSEGV", 134: "SIGABRT"}
_MESSAGE_TAIL = 600  # characters of the runner's last output quoted in a failure reason


def pod_outcome(
    pod: Pod, now: datetime | None = None, unschedulable_timeout_s: int = 900
) -> PollResult:
    """The outcome of the elastic execution this pod runs.

    ``now`` enables the one time-based rule: a pod unschedulable for longer than
    ``unschedulable_timeout_s`` is failed (a GPU pool scaling up from zero needs minutes,
    so a short wait is normal). Without ``now`` such a pod stays pending, with its reason.
    """
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    container = _runner_status(status.get("containerStatuses") or [])
    state = (container or {}).get("state") or {}
    terminated = state.get("terminated")
    waiting = state.get("waiting")
    cancelled = (metadata.get("annotations") or {}).get(ANNOTATION_CANCELLED) == "true"

    if phase == "Succeeded" or (
        terminated and terminated.get("exitCode") == 0 and phase != "Failed"
    ):
        return PollResult(WorkerState.SUCCEEDED, exit_code=0)

    if phase == "Failed" or terminated:
        if cancelled:
            return _failed(FailureCode.CANCELLED, "The execution was cancelled.", terminated)
        return _failure(status, spec, terminated)

    if waiting:
        reason = waiting.get("reason") or ""
        image = (container or {}).get("image") or _runner_image(spec)
        detail = _sentence(waiting.get("message"))
        if reason in _IMAGE_FAILURES:
            return _failed(
                FailureCode.IMAGE_PULL,
                f"The worker image {image} could not be pulled ({reason}).{detail} "
                "Check that the step was built and that the cluster can read the registry.",
            )
        if reason in _IMAGE_RETRYING:
            return PollResult(
                WorkerState.PENDING,
                reason=f"Pulling the worker image {image} failed once; retrying.{detail}",
                code=FailureCode.IMAGE_PULL,
            )
        if reason in _CONFIG_FAILURES:
            return _failed(
                FailureCode.CONFIG, f"The worker container could not be created ({reason}).{detail}"
            )

    if phase == "Pending":
        unscheduled = _condition(status, "PodScheduled")
        if (
            unscheduled
            and unscheduled.get("status") == "False"
            and unscheduled.get("reason") == "Unschedulable"
        ):
            reason = _unschedulable_reason(unscheduled.get("message") or "", spec)
            since = _parse_time(unscheduled.get("lastTransitionTime"))
            if (
                now is not None
                and since is not None
                and now - since > timedelta(seconds=unschedulable_timeout_s)
            ):
                return _failed(FailureCode.UNSCHEDULABLE, reason)
            return PollResult(WorkerState.PENDING, reason=reason, code=FailureCode.UNSCHEDULABLE)
        return PollResult(WorkerState.PENDING, reason=_waiting_note(waiting))

    if phase == "Running":
        return PollResult(WorkerState.RUNNING)

    # "Unknown": the node stopped reporting. The reconciler decides how long to wait.
    return PollResult(
        WorkerState.UNKNOWN,
        reason="The worker's node stopped reporting; its state is unknown.",
        code=FailureCode.WORKER_LOST,
    )


def missing_pod_outcome() -> PollResult:
    """The outcome when the pod no longer exists (deleted outside the executor, or GC'd)."""
    return _failed(
        FailureCode.WORKER_LOST,
        "The worker no longer exists: it was deleted before its outcome was recorded.",
    )


def worker_pod_status(pod: Pod) -> str:
    """A low-latency worker pod's status for ``get_deployment``'s ``pods`` list.

    One of: ``pending``, ``starting``, ``ready``, ``failed``, ``terminating``.
    """
    metadata = pod.get("metadata") or {}
    status = pod.get("status") or {}
    if metadata.get("deletionTimestamp"):
        return "terminating"
    phase = status.get("phase") or "Pending"
    if phase in ("Failed", "Succeeded", "Unknown"):
        return "failed"
    container = _runner_status(status.get("containerStatuses") or [])
    waiting = ((container or {}).get("state") or {}).get("waiting") or {}
    if waiting.get("reason") in _IMAGE_FAILURES | _CONFIG_FAILURES | {"CrashLoopBackOff"}:
        return "failed"
    ready = _condition(status, "Ready")
    if phase == "Running" and ready and ready.get("status") == "True":
        return "ready"
    return "starting" if phase == "Running" else "pending"


def worker_pod_problem(pod: Pod) -> str | None:
    """Why a low-latency worker pod is not coming up, in words, or None."""
    status = pod.get("status") or {}
    container = _runner_status(status.get("containerStatuses") or [])
    if container:
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason in _IMAGE_FAILURES | _IMAGE_RETRYING:
            return f"The worker image {container.get('image')} could not be pulled ({reason})."
        if reason in _CONFIG_FAILURES:
            return f"The worker container could not be created ({reason})."
        if reason == "CrashLoopBackOff":
            last = (container.get("lastState") or {}).get("terminated") or {}
            if last.get("reason") == "OOMKilled":
                return "The worker keeps running out of memory and is restarted."
            code = last.get("exitCode")
            return f"The worker keeps exiting (last exit code {code}) and is restarted."
    unscheduled = _condition(status, "PodScheduled")
    if unscheduled and unscheduled.get("reason") == "Unschedulable":
        return _unschedulable_reason(unscheduled.get("message") or "", pod.get("spec") or {})
    return None


# --- helpers --------------------------------------------------------------------------------


def _failed(
    code: FailureCode, reason: str, terminated: Mapping[str, Any] | None = None
) -> PollResult:
    exit_code = (terminated or {}).get("exitCode")
    return PollResult(WorkerState.FAILED, reason=reason, exit_code=exit_code, code=code)


def _failure(
    status: Mapping[str, Any], spec: Mapping[str, Any], terminated: Mapping[str, Any] | None
) -> PollResult:
    pod_reason = status.get("reason") or ""
    pod_message = status.get("message") or ""
    if pod_reason == "DeadlineExceeded":
        limit = spec.get("activeDeadlineSeconds")
        within = f" of {_duration(limit)}" if isinstance(limit, int) else ""
        return _failed(
            FailureCode.DEADLINE_EXCEEDED,
            f"The execution ran longer than its timeout{within} and was stopped.",
            terminated,
        )
    disruption = _condition(status, "DisruptionTarget")
    if pod_reason == "Evicted" or (disruption and disruption.get("status") == "True"):
        why = pod_message or (disruption or {}).get("message") or ""
        return _failed(
            FailureCode.EVICTED,
            "The worker was evicted from its node before the execution finished."
            + (f" Kubernetes says: {why}" if why else ""),
            terminated,
        )
    if terminated and terminated.get("reason") == "OOMKilled":
        limit = _memory_limit(spec)
        return _failed(
            FailureCode.OOM_KILLED,
            f"The execution ran out of memory{f' (limit {limit})' if limit else ''} and was "
            "killed. Ask for more memory (ram_request) or process the data in smaller parts.",
            terminated,
        )
    if pod_reason in _NODE_LOST:
        return _failed(
            FailureCode.WORKER_LOST,
            "The worker's node went away before the execution finished."
            + (f" Kubernetes says: {pod_message}" if pod_message else ""),
            terminated,
        )
    if terminated and terminated.get("exitCode") not in (None, 0):
        code = int(terminated["exitCode"])
        signal = f" (killed by {_SIGNALS[code]})" if code in _SIGNALS else ""
        tail = _tail(terminated.get("message"))
        return _failed(
            FailureCode.EXIT_CODE,
            f"The step's process exited with code {code}{signal}."
            + (f" Last output: {tail}" if tail else ""),
            terminated,
        )
    detail = ": ".join(part for part in (pod_reason, pod_message) if part)
    return _failed(
        FailureCode.UNKNOWN,
        "The worker failed"
        + (f" ({detail})." if detail else " for a reason Kubernetes did not give."),
        terminated,
    )


def _runner_status(statuses: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    for status in statuses:
        if status.get("name") == CONTAINER:
            return status
    return statuses[0] if statuses else None


def _runner_image(spec: Mapping[str, Any]) -> str:
    containers = spec.get("containers") or [{}]
    image: str = containers[0].get("image") or "(unknown image)"
    return image


def _condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == kind:
            return condition  # type: ignore[no-any-return]
    return None


def _unschedulable_reason(message: str, spec: Mapping[str, Any]) -> str:
    wants_gpu = any(
        key.endswith("/gpu")
        for container in spec.get("containers") or []
        for key in ((container.get("resources") or {}).get("limits") or {})
    )
    if "gpu" in message.lower() or (wants_gpu and "node affinity/selector" in message):
        why = "no node with a free GPU is available"
    elif "Insufficient memory" in message:
        why = f"no node has {_memory_limit(spec) or 'the requested memory'} of memory free"
    elif "Insufficient cpu" in message:
        why = "no node has enough free CPU"
    elif "node affinity/selector" in message:
        why = "no node matches the worker's node selector"
    else:
        why = "no node can take it"
    suffix = f" Kubernetes says: {message}" if message else ""
    return f"The worker cannot be scheduled: {why}.{suffix}"


def _memory_limit(spec: Mapping[str, Any]) -> str | None:
    for container in spec.get("containers") or []:
        if container.get("name") in (CONTAINER, None):
            memory = ((container.get("resources") or {}).get("limits") or {}).get("memory")
            return str(memory) if memory is not None else None
    return None


def _waiting_note(waiting: Mapping[str, Any] | None) -> str | None:
    if not waiting or not waiting.get("reason"):
        return None
    return f"The worker is starting ({waiting['reason']})."


def _sentence(message: object) -> str:
    return f" {str(message).strip()}" if message else ""


def _tail(message: object) -> str:
    text = str(message or "").strip()
    if len(text) > _MESSAGE_TAIL:
        text = "…" + text[-_MESSAGE_TAIL:]
    return text


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
