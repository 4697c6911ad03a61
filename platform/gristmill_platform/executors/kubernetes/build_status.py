"""What a step image build's Job and pod say of the build (pure).

Shared by ``KubernetesExecutor.poll_build`` (one build, read from the API) and the build
watch (build_watch.py: every build, read from one watch's cache), so that both judge a
build the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from gristmill_platform.executors.kubernetes import manifests, status
from gristmill_platform.executors.spec import FailureCode, PollResult, WorkerState

# Every build Job, and every build pod (the Job controller copies the template's labels,
# and adds job-name): what the build watch follows.
BUILDS: Mapping[str, str] = {manifests.LABEL_MANAGED_BY: "gristmill",
                             manifests.LABEL_ROLE: manifests.ROLE_BUILDER}
JOB_NAME_LABEL = "job-name"


def build_outcome(job: Mapping[str, Any] | None, pod: Mapping[str, Any] | None, *,
                  now: datetime, build_timeout_s: int,
                  unschedulable_timeout_s: int) -> PollResult:
    """The build's state from its Job (None: gone) and its newest pod (None: none yet)."""
    if job is None:
        return status.missing_pod_outcome()
    job_status = job.get("status") or {}
    if job_status.get("succeeded"):
        return PollResult(WorkerState.SUCCEEDED, exit_code=0)
    failed = next(
        (
            condition
            for condition in job_status.get("conditions") or []
            if condition.get("type") == "Failed" and condition.get("status") == "True"
        ),
        None,
    )
    if failed is not None and failed.get("reason") == "DeadlineExceeded":
        return PollResult(
            WorkerState.FAILED,
            reason=f"The image build took longer than {build_timeout_s} s.",
            code=FailureCode.DEADLINE_EXCEEDED,
        )
    if failed is not None or job_status.get("failed"):
        fetch_code = fetch_failure(pod) if pod is not None else None
        if fetch_code is not None:
            return PollResult(
                WorkerState.FAILED,
                reason=("its first container, which fetches the step's code from the data "
                        "store (and logs in to ECR), exited with code "
                        f"{fetch_code}: check that the builder's service account may read "
                        "the bucket and push to the registry."),
                exit_code=fetch_code,
                code=FailureCode.CONFIG,
            )
        outcome = status.pod_outcome(pod) if pod is not None else None
        if outcome is not None and outcome.state == WorkerState.FAILED:
            return PollResult(
                WorkerState.FAILED,
                reason=f"The image build failed. {outcome.reason}",
                exit_code=outcome.exit_code,
                code=outcome.code,
            )
        return PollResult(
            WorkerState.FAILED,
            reason="The image build failed; its logs say why.",
            code=FailureCode.UNKNOWN,
        )
    if pod is None:
        return PollResult(WorkerState.PENDING)
    return status.pod_outcome(pod, now=now, unschedulable_timeout_s=unschedulable_timeout_s)


def newest_build_pod(pods: Iterable[Mapping[str, Any]], job_name: str,
                     job_uid: str | None) -> Mapping[str, Any] | None:
    """The newest pod of the build Job. A Job replaced under the same name (a new attempt
    after a failure) may still have the old Job's pods around until the garbage collector
    removes them: a pod owned by another Job uid is not this one's."""
    mine = [
        pod for pod in pods
        if ((pod.get("metadata") or {}).get("labels") or {}).get(JOB_NAME_LABEL) == job_name
        and owned_by(pod, job_uid)
    ]
    return max(mine, key=lambda pod: (pod.get("metadata") or {}).get("creationTimestamp", ""),
               default=None)


def owned_by(raw: Mapping[str, Any], job_uid: str | None) -> bool:
    owners = (raw.get("metadata") or {}).get("ownerReferences") or []
    jobs = [owner for owner in owners if owner.get("kind") == "Job"]
    if job_uid is None or not jobs:  # nothing to tell them apart by
        return True
    return any(owner.get("uid") == job_uid for owner in jobs)


def fetch_failure(pod: Mapping[str, Any]) -> int | None:
    """The exit code of the build pod's context fetcher when it failed (then BuildKit never
    started and has no log: the fetcher's says why), else None."""
    for container in (pod.get("status") or {}).get("initContainerStatuses") or []:
        if container.get("name") == manifests.BUILD_FETCH_CONTAINER:
            terminated = (container.get("state") or {}).get("terminated") or {}
            code = terminated.get("exitCode")
            return code if isinstance(code, int) and code != 0 else None
    return None


def log_container(pod: Mapping[str, Any]) -> str | None:
    """Which container's log says how the build went: the fetcher's when it failed, else
    the default (BuildKit's, the pod's only container)."""
    return manifests.BUILD_FETCH_CONTAINER if fetch_failure(pod) is not None else None


def container_running(pod: Mapping[str, Any]) -> bool:
    """Whether a container of the pod runs (so its log may have grown since last read)."""
    pod_status = pod.get("status") or {}
    return any("running" in (container.get("state") or {})
               for container in [*(pod_status.get("initContainerStatuses") or []),
                                 *(pod_status.get("containerStatuses") or [])]) \
        or (pod_status.get("phase") == "Running" and not pod_status.get("containerStatuses"))
