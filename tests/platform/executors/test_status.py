"""Pod status -> execution outcome, table-driven over the states a kubelet reports."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

import pytest

from gristmill_platform.executors.kubernetes.status import (
    missing_pod_outcome,
    pod_outcome,
    worker_pod_problem,
    worker_pod_status,
)
from gristmill_platform.executors.spec import FailureCode, PollResult, WorkerState

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
IMAGE = "registry.example/acme/gristmill-steps:abc"


def pod(
    phase: str | None = None,
    *,
    state: dict[str, Any] | None = None,
    reason: str | None = None,
    message: str | None = None,
    conditions: list[dict[str, Any]] | None = None,
    annotations: dict[str, str] | None = None,
    gpu: bool = False,
    deadline: int | None = 600,
    memory: str = "1Gi",
    last_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    limits = {"memory": memory, **({"nvidia.com/gpu": "1"} if gpu else {})}
    status: dict[str, Any] = {}
    if phase:
        status["phase"] = phase
    if reason:
        status["reason"] = reason
    if message:
        status["message"] = message
    if conditions:
        status["conditions"] = conditions
    if state is not None:
        container = {"name": "runner", "image": IMAGE, "state": state}
        if last_state:
            container["lastState"] = last_state
        status["containerStatuses"] = [container]
    spec: dict[str, Any] = {
        "containers": [{"name": "runner", "image": IMAGE, "resources": {"limits": limits}}]
    }
    if deadline:
        spec["activeDeadlineSeconds"] = deadline
    return {
        "metadata": {"name": "gm-exec-x", "annotations": annotations or {}},
        "spec": spec,
        "status": status,
    }


def terminated(code: int, reason: str = "Error", message: str | None = None) -> dict[str, Any]:
    state: dict[str, Any] = {"exitCode": code, "reason": reason}
    if message:
        state["message"] = message
    return {"terminated": state}


def waiting(reason: str, message: str | None = None) -> dict[str, Any]:
    return {"waiting": {"reason": reason, **({"message": message} if message else {})}}


def unschedulable(message: str, since: datetime = NOW) -> list[dict[str, Any]]:
    return [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastTransitionTime": since.isoformat().replace("+00:00", "Z"),
        }
    ]


DAY = timedelta(days=1)
CANCELLED = {"gristmill.io/cancelled": "true"}
PREEMPTED = {
    "type": "DisruptionTarget",
    "status": "True",
    "reason": "PreemptionByScheduler",
    "message": "Preempted in order to admit critical pod",
}
NO_MATCH_MESSAGE = "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
GPU_MESSAGE = (
    "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are "
    "available: 3 No preemption victims found for incoming pod."
)


class Case(NamedTuple):
    pod: dict[str, Any]
    state: WorkerState
    code: FailureCode | None = None
    words: tuple[str, ...] = ()  # the reason must contain each
    exit_code: int | None = None
    now: datetime | None = NOW


F, P = WorkerState.FAILED, WorkerState.PENDING
CASES: dict[str, Case] = {
    "just created": Case({"metadata": {}}, P),
    "pending without status": Case(pod("Pending"), P),
    "container creating": Case(
        pod("Pending", state=waiting("ContainerCreating")), P, words=("ContainerCreating",)
    ),
    "running": Case(pod("Running", state={"running": {"startedAt": "x"}}), WorkerState.RUNNING),
    "succeeded": Case(
        pod("Succeeded", state=terminated(0, "Completed")), WorkerState.SUCCEEDED, exit_code=0
    ),
    "container done, phase lagging": Case(
        pod("Running", state=terminated(0, "Completed")), WorkerState.SUCCEEDED, exit_code=0
    ),
    "image pull backoff": Case(
        pod("Pending", state=waiting("ImagePullBackOff", 'Back-off pulling image "x"')),
        F,
        FailureCode.IMAGE_PULL,
        (IMAGE, "could not be pulled"),
    ),
    "invalid image name": Case(
        pod("Pending", state=waiting("InvalidImageName")),
        F,
        FailureCode.IMAGE_PULL,
        ("could not be pulled",),
    ),
    "first image pull error is retried": Case(
        pod("Pending", state=waiting("ErrImagePull", "i/o timeout")),
        P,
        FailureCode.IMAGE_PULL,
        ("retrying", "i/o timeout"),
    ),
    "missing secret": Case(
        pod("Pending", state=waiting("CreateContainerConfigError", 'secret "s" not found')),
        F,
        FailureCode.CONFIG,
        ('secret "s" not found',),
    ),
    "oom killed": Case(
        pod("Failed", state=terminated(137, "OOMKilled"), memory="512Mi"),
        F,
        FailureCode.OOM_KILLED,
        ("out of memory", "512Mi", "ram_request"),
        137,
    ),
    "oom while phase still running": Case(
        pod("Running", state=terminated(137, "OOMKilled")),
        F,
        FailureCode.OOM_KILLED,
        ("out of memory",),
        137,
    ),
    "evicted": Case(
        pod("Failed", reason="Evicted", message="The node was low on resource: memory."),
        F,
        FailureCode.EVICTED,
        ("evicted", "low on resource: memory"),
    ),
    "preempted": Case(
        pod("Failed", state=terminated(143), conditions=[PREEMPTED]),
        F,
        FailureCode.EVICTED,
        ("evicted", "Preempted"),
        143,
    ),
    "node shut down": Case(
        pod("Failed", reason="Terminated", message="Pod was terminated: node shutdown."),
        F,
        FailureCode.WORKER_LOST,
        ("node went away",),
    ),
    "unschedulable gpu, waiting for a node": Case(
        pod("Pending", gpu=True, conditions=unschedulable(GPU_MESSAGE)),
        P,
        FailureCode.UNSCHEDULABLE,
        ("no node with a free GPU",),
        now=NOW + timedelta(minutes=5),
    ),
    "unschedulable gpu, gave up": Case(
        pod("Pending", gpu=True, conditions=unschedulable(GPU_MESSAGE)),
        F,
        FailureCode.UNSCHEDULABLE,
        ("no node with a free GPU", "Insufficient nvidia.com/gpu"),
        now=NOW + timedelta(minutes=16),
    ),
    "unschedulable, gpu pool missing": Case(
        pod("Pending", gpu=True, conditions=unschedulable(NO_MATCH_MESSAGE)),
        P,
        FailureCode.UNSCHEDULABLE,
        ("no node with a free GPU",),
    ),
    "unschedulable memory": Case(
        pod("Pending", memory="64Gi", conditions=unschedulable("0/3: 3 Insufficient memory.")),
        F,
        FailureCode.UNSCHEDULABLE,
        ("64Gi of memory",),
        now=NOW + timedelta(hours=1),
    ),
    "unschedulable without a clock stays pending": Case(
        pod("Pending", conditions=unschedulable("0/3: 3 Insufficient cpu.", NOW - DAY)),
        P,
        FailureCode.UNSCHEDULABLE,
        ("enough free CPU",),
        now=None,
    ),
    "non-zero exit": Case(
        pod("Failed", state=terminated(3, "Error", "Traceback...\nValueError: bad input")),
        F,
        FailureCode.EXIT_CODE,
        ("exited with code 3", "bad input"),
        3,
    ),
    "killed by a signal": Case(
        pod("Failed", state=terminated(137)), F, FailureCode.EXIT_CODE, ("137", "SIGKILL"), 137
    ),
    "deadline exceeded": Case(
        pod("Failed", reason="DeadlineExceeded", deadline=5400, message="active too long"),
        F,
        FailureCode.DEADLINE_EXCEEDED,
        ("timeout of 90 min",),
    ),
    "cancelled": Case(
        pod("Failed", reason="DeadlineExceeded", state=terminated(143), annotations=CANCELLED),
        F,
        FailureCode.CANCELLED,
        ("cancelled",),
        143,
    ),
    "cancelled but finished first": Case(
        pod("Succeeded", state=terminated(0, "Completed"), annotations=CANCELLED),
        WorkerState.SUCCEEDED,
        exit_code=0,
    ),
    "failed without detail": Case(pod("Failed"), F, FailureCode.UNKNOWN, ("did not give",)),
    "node unreachable": Case(
        pod("Unknown"), WorkerState.UNKNOWN, FailureCode.WORKER_LOST, ("stopped reporting",)
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_pod_outcome(name: str) -> None:
    case = CASES[name]
    outcome = pod_outcome(case.pod, now=case.now, unschedulable_timeout_s=900)
    assert outcome.state == case.state
    assert outcome.code == case.code
    assert outcome.exit_code == case.exit_code
    for word in case.words:
        assert outcome.reason is not None and word in outcome.reason, (word, outcome.reason)
    if case.state == WorkerState.FAILED:
        assert outcome.reason  # every failure says why, in words


def test_long_runner_output_is_cut_to_its_end() -> None:
    message = "x" * 5000 + "THE END"
    outcome = pod_outcome(pod("Failed", state=terminated(1, "Error", message)))
    assert outcome.reason is not None
    assert outcome.reason.endswith("THE END") and len(outcome.reason) < 800


def test_missing_pod() -> None:
    assert missing_pod_outcome() == PollResult(
        WorkerState.FAILED,
        reason="The worker no longer exists: it was deleted before its outcome was recorded.",
        code=FailureCode.WORKER_LOST,
    )


READY = [{"type": "Ready", "status": "True"}]
NOT_READY = [{"type": "Ready", "status": "False"}]


@pytest.mark.parametrize(
    ("pod_", "expected"),
    [
        (pod("Pending"), "pending"),
        (pod("Pending", conditions=unschedulable(GPU_MESSAGE)), "pending"),
        (pod("Running", state={"running": {}}, conditions=NOT_READY), "starting"),
        (pod("Running", state={"running": {}}, conditions=READY), "ready"),
        (pod("Pending", state=waiting("ImagePullBackOff")), "failed"),
        (pod("Running", state=waiting("CrashLoopBackOff")), "failed"),
        (pod("Failed", reason="Evicted"), "failed"),
        (
            {**pod("Running", conditions=READY), "metadata": {"deletionTimestamp": "t"}},
            "terminating",
        ),
    ],
)
def test_worker_pod_status(pod_, expected) -> None:
    assert worker_pod_status(pod_) == expected


def test_worker_pod_problem_explains_why_a_worker_is_not_up() -> None:
    oom_loop = pod(
        "Running",
        state=waiting("CrashLoopBackOff"),
        last_state={"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
    )
    assert "out of memory" in (worker_pod_problem(oom_loop) or "")
    crash_loop = pod(
        "Running",
        state=waiting("CrashLoopBackOff"),
        last_state={"terminated": {"exitCode": 2, "reason": "Error"}},
    )
    assert "exit code 2" in (worker_pod_problem(crash_loop) or "")
    no_gpu = pod("Pending", gpu=True, conditions=unschedulable(GPU_MESSAGE))
    assert "GPU" in (worker_pod_problem(no_gpu) or "")
    assert worker_pod_problem(pod("Running", state={"running": {}}, conditions=READY)) is None
