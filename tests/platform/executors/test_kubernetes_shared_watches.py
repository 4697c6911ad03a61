"""The warm-worker pools and the image builds on the shared watches, on the API emulator:

* every low-latency deployment's pods are followed by ONE list and watch, whatever the
  number of deployments (counted from the requests the emulator receives over many
  passes), resumed from its resourceVersion and listed again on 410 Gone;
* build Jobs and their pods likewise: one watch of each for all the builds that run;
* warm-worker and build logs are capped like the elastic executions' (their end, after a
  line saying what was cut), and a warm worker's log is read from where the last copy
  stopped (``sinceTime``), not whole at every copy.

Nothing here reads the wall clock for an assertion: waits are bounded loops on conditions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import pytest

from gristmill_platform.deployments.worker_records import DeploymentLogWriter, deployment_records
from gristmill_platform.executors.kubernetes import manifests
from gristmill_platform.executors.kubernetes.config import KubernetesConfig
from gristmill_platform.executors.kubernetes.executor import KubernetesExecutor
from gristmill_platform.executors.kubernetes.images import ImageBuild
from gristmill_platform.executors.kubernetes.workers import KubernetesWorkerPool
from gristmill_platform.executors.spec import WorkerState
from gristmill_platform.state import AppState
from gristmill_platform.steps.build_log import BuildLog
from gristmill_platform.steps.image_builds import StepImages

from .conftest import NAMESPACE, Emulator
from .test_kubernetes_workers import (  # noqa: F401  (fixtures)
    add_deployment,
    deployment_logs,
    migrated_db,
    state,
)

RUNNING = {"phase": "Running", "podIP": "10.0.0.9",
           "containerStatuses": [{"name": "runner", "state": {"running": {}}, "ready": False}]}
READY = {**RUNNING, "conditions": [{"type": "Ready", "status": "True"}],
         "containerStatuses": [{"name": "runner", "state": {"running": {}}, "ready": True}]}


async def eventually(condition: Callable[[], bool], what: str, tries: int = 1500) -> None:
    """Wait for a condition, a bounded number of short sleeps (not a time assertion)."""
    for _ in range(tries):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


def worker_labels(deployment: str) -> dict[str, str]:
    return {**manifests.worker_selector(deployment), manifests.LABEL_MANAGED_BY: "gristmill"}


def pod_requests(emulator: Emulator, start: int) -> list[Any]:
    """Requests about pods (lists, watches, GETs, not logs) since request ``start``."""
    return [r for r in list(emulator)[start:]
            if r.resource is not None and r.resource.plural == "pods"
            and not str(r.url.path).endswith("/log")]


def log_reads(emulator: Emulator, start: int = 0) -> list[Any]:
    return [r for r in list(emulator)[start:] if str(r.url.path).endswith("/log")]


@pytest.fixture()
def capped(k8s_config: KubernetesConfig) -> KubernetesConfig:
    return dataclasses.replace(k8s_config, api_backoff_s=0.01, api_backoff_max_s=0.05,
                               log_cap_bytes=1000)


@pytest.fixture()
async def pool(state: AppState, capped: KubernetesConfig,  # noqa: F811
               clock: list[datetime]) -> AsyncIterator[KubernetesWorkerPool]:
    worker_pool = KubernetesWorkerPool(
        state.settings, state.transactions, deployment_records,
        DeploymentLogWriter(state.transactions), KubernetesExecutor(capped),
        address=lambda pod: None,  # nothing answers here: no pod gets executions
        clock=lambda: clock[0], refresh_s=0.02, log_copy_s=3600.0)
    yield worker_pool
    await worker_pool.shutdown()


# --- warm-worker pools ----------------------------------------------------------------------


async def test_ten_pools_cost_one_list_and_one_watch_however_long_they_run(
    state: AppState, pool: KubernetesWorkerPool, emulator: Emulator  # noqa: F811
):
    names = [f"api-{number}" for number in range(10)]
    for name in names:
        await add_deployment(state, name)
        emulator.add_pod(f"gm-ll-{name}-a", worker_labels(name), RUNNING)
    start = len(list(emulator))
    for name in names:
        await pool.ensure(name, wait_s=0)
    await eventually(lambda: all(pool.pods(name) for name in names), "every pool sees its pod")
    assert pool.pods("api-3") == [{"pod_id": "gm-ll-api-3-a", "status": "starting"}]

    passes = pool.passes
    await eventually(lambda: pool.passes >= passes + 25, "25 full passes over the 10 pools")
    # a change reaches its pool through the watch, with no request about that pod
    emulator.set_pod_status("gm-ll-api-7-a", READY)
    await eventually(lambda: pool.pods("api-7") == [{"pod_id": "gm-ll-api-7-a",
                                                     "status": "running"}], "api-7 ready")
    # a pod created and one deleted by the Deployment controller
    emulator.add_pod("gm-ll-api-2-b", worker_labels("api-2"), RUNNING)
    emulator.remove("v1/pods", NAMESPACE, "gm-ll-api-5-a")
    await eventually(lambda: [p["pod_id"] for p in pool.pods("api-2")] == [
        "gm-ll-api-2-a", "gm-ll-api-2-b"] and pool.pods("api-5") == [], "the watch's news")
    assert [p["pod_id"] for p in pool.pods("api-3")] == ["gm-ll-api-3-a"]  # no one else's

    # Ten pools followed through 25+ passes: one list and one watch of pods in all (before
    # the shared watch: a list per pool per pass, 250 or more).
    requests = pod_requests(emulator, start)
    watches = [r for r in requests if r.params.get("watch") == "true"]
    lists = [r for r in requests if r.params.get("watch") != "true" and r.name is None]
    assert len(watches) == 1 and len(lists) == 1 and len(requests) == 2
    assert watches[0].params["labelSelector"] == \
        "gristmill.io/mode=low-latency,gristmill.io/role=worker"


async def test_the_pools_watch_resumes_and_lists_again_on_410(
    state: AppState, pool: KubernetesWorkerPool, emulator: Emulator  # noqa: F811
):
    await add_deployment(state, "api")
    emulator.add_pod("gm-ll-api-a", worker_labels("api"), RUNNING)
    await pool.ensure("api", wait_s=0)
    await eventually(lambda: emulator.open_watches == 1, "watching")
    informer = pool._informer
    assert informer is not None

    emulator.drop_watches()  # the server ends the watch: resumed, no list
    await eventually(lambda: informer.watches == 2, "watching again")
    emulator.set_pod_status("gm-ll-api-a", READY)
    await eventually(lambda: [p["status"] for p in pool.pods("api")] == ["running"], "ready")
    assert informer.lists == 1 and len(emulator.lists()) == 1

    emulator.compact()  # changes while the history is gone: 410, then a new list
    emulator.remove("v1/pods", NAMESPACE, "gm-ll-api-a")
    emulator.add_pod("gm-ll-api-b", worker_labels("api"), RUNNING)
    await eventually(lambda: [p["pod_id"] for p in pool.pods("api")] == ["gm-ll-api-b"],
                     "the new pod, seen after listing again")
    assert informer.lists == 2 and len(emulator.lists()) == 2


async def test_warm_worker_logs_are_read_since_the_last_copy_and_capped(
    state: AppState, pool: KubernetesWorkerPool, emulator: Emulator  # noqa: F811
):
    deployment_id = await add_deployment(state, "api")
    emulator.add_pod("gm-ll-api-a", worker_labels("api"), RUNNING)
    # 100 lines of 80 bytes: 8,000 bytes, eight times the cap
    lines = [f"2026-11-23T12:00:{n % 60:02d}.{n:06d}Z line {n:04d} " + "x" * 47
             for n in range(100)]
    lines.sort()
    emulator.serve_logs("gm-ll-api-a", "".join(f"{line}\n" for line in lines))
    await pool.ensure("api", wait_s=0)
    await eventually(lambda: bool(pool.pods("api")), "the pod seen")

    await pool.copy_logs("api")  # (the background may have made the first copy already)

    stored = await deployment_logs(state, deployment_id)
    copied = [message for message in stored if message.startswith("line ")]
    assert 0 < len(copied) < 100
    assert copied == [line.partition(" ")[2] for line in lines[-len(copied):]]  # the end
    sizes = [len(line.encode()) + 1 for line in lines]
    assert sum(sizes[-len(copied):]) <= 1000
    note = f"[gristmill] the pod log was truncated: its first {sum(sizes[:-len(copied)])} " \
           f"bytes ({100 - len(copied)} lines) of {sum(sizes)} were not kept"
    assert [message for message in stored if message.startswith(note)] != []

    # later copies read from the second of the last line copied, and add nothing twice
    await pool.copy_logs("api")
    first, *later = log_reads(emulator)
    assert "sinceTime" not in first.params  # nothing copied yet: from the start
    assert later and all(r.params["sinceTime"] == lines[-1][:19] + "Z" for r in later)
    assert await deployment_logs(state, deployment_id) == stored


# --- image builds ---------------------------------------------------------------------------


def builds_following(executor: KubernetesExecutor) -> StepImages:
    # only _follow is used here: no database, no data store
    return StepImages(None, None, executor.cfg, executor,  # type: ignore[arg-type]
                      poll_interval_s=0.02)


async def no_progress() -> None:
    return None


def build(number: int) -> ImageBuild:
    return ImageBuild(f"step-{number}", "python:3.12-slim", "s3://b/ctx.tar.gz",
                      hashlib.sha256(str(number).encode()).hexdigest())


def play_build_pod(emulator: Emulator, handle: Any, phase: str, log: str,
                   container: dict[str, Any]) -> str:
    """The Job controller's pod of a build: the template's labels, job-name, owned by the
    Job's uid; its log served as the kubelet would."""
    job = emulator.objects["batch/v1/jobs", NAMESPACE, handle["name"]]
    pod = f"{handle['name']}-p"
    emulator.serve_logs(pod, log)
    emulator.add_pod(pod, {**job["spec"]["template"]["metadata"]["labels"],
                           "job-name": handle["name"]},
                     {"phase": phase, "containerStatuses": [{"name": "buildkit", **container}]})
    emulator.update("v1/pods", NAMESPACE, pod, {"metadata": {"ownerReferences": [
        {"kind": "Job", "name": handle["name"], "uid": job["metadata"]["uid"],
         "controller": True}]}})
    return pod


def finish_job(emulator: Emulator, handle: Any, pod: str, code: int) -> None:
    ended = {"terminated": {"exitCode": code, "reason": "Error" if code else "Completed"}}
    emulator.set_pod_status(pod, {"phase": "Failed" if code else "Succeeded",
                                  "containerStatuses": [{"name": "buildkit", "state": ended}]})
    emulator.update("batch/v1/jobs", NAMESPACE, handle["name"], {"status": (
        {"failed": 1, "conditions": [{"type": "Failed", "status": "True",
                                      "reason": "BackoffLimitExceeded"}]}
        if code else {"succeeded": 1})})


def build_requests(emulator: Emulator, start: int) -> list[Any]:
    """Requests about build Jobs and pods since ``start``, but log reads and the creates."""
    return [r for r in list(emulator)[start:]
            if r.resource is not None and r.resource.plural in ("jobs", "pods")
            and r.method.value.lower() == "get" and not str(r.url.path).endswith("/log")]


async def test_ten_builds_are_followed_by_one_watch_of_jobs_and_one_of_pods(
    capped: KubernetesConfig, emulator: Emulator
):
    executor = KubernetesExecutor(capped)
    images = builds_following(executor)
    handles = [await executor.submit_build(build(n)) for n in range(10)]
    start = len(list(emulator))
    logs = [BuildLog() for _ in handles]
    follows = [asyncio.create_task(images._follow(handle, log, no_progress))
               for handle, log in zip(handles, logs, strict=True)]
    watcher = images.watcher
    try:
        await eventually(lambda: emulator.open_watches == 2, "watching Jobs and pods")
        pods = [play_build_pod(emulator, handle, "Running",
                               f"2026-11-23T12:00:01Z step {n}\n", {"state": {"running": {}}})
                for n, handle in enumerate(handles)]
        await eventually(lambda: all(f"step {n}" in log.lines for n, log in enumerate(logs)),
                         "each running build's log copied in")
        passes = watcher.pods.watches
        for handle, pod in zip(handles, pods, strict=True):
            finish_job(emulator, handle, pod, code=0)
        outcomes = await asyncio.gather(*follows)
    finally:
        for follow in follows:
            follow.cancel()

    assert [outcome.state for outcome, _ in outcomes] == [WorkerState.SUCCEEDED] * 10
    assert [lines for _, lines in outcomes] == [[f"step {n}"] for n in range(10)]
    # Ten builds followed to their end: one list and one watch of Jobs, one of pods, and
    # not one GET of a Job or list of one build's pods (before: both, every poll, per build).
    requests = build_requests(emulator, start)
    watches = [r for r in requests if r.params.get("watch") == "true"]
    lists = [r for r in requests if r.params.get("watch") != "true" and r.name is None]
    assert sorted(r.resource.plural for r in watches) == ["jobs", "pods"]
    assert sorted(r.resource.plural for r in lists) == ["jobs", "pods"]
    assert len(requests) == 4 and watcher.pods.watches == passes
    assert {r.params["labelSelector"] for r in requests} == {
        "app.kubernetes.io/managed-by=gristmill,gristmill.io/role=builder"}
    # the watches end with the last build followed
    await eventually(lambda: emulator.open_watches == 0, "no watch left once all ended")


async def test_a_build_watch_lists_again_on_410_and_sees_the_end(
    capped: KubernetesConfig, emulator: Emulator
):
    executor = KubernetesExecutor(capped)
    images = builds_following(executor)
    handle = await executor.submit_build(build(1))
    follow = asyncio.create_task(images._follow(handle, BuildLog(), no_progress))
    try:
        await eventually(lambda: emulator.open_watches == 2, "watching")
        jobs = images.watcher.jobs
        emulator.drop_watches()  # resumed from the last version, not listed again
        await eventually(lambda: jobs.watches == 2, "watching again")
        assert jobs.lists == 1

        emulator.compact()  # the end comes while the history is gone: 410, then a new list
        pod = play_build_pod(emulator, handle, "Running", "", {"state": {"running": {}}})
        finish_job(emulator, handle, pod, code=1)
        outcome, _ = await asyncio.wait_for(follow, 30)
    finally:
        follow.cancel()
    assert outcome.state == WorkerState.FAILED
    assert outcome.reason is not None and outcome.reason.startswith("The image build failed.")
    assert jobs.lists == 2 and len(emulator.lists("jobs")) == 2


async def test_a_huge_build_log_keeps_its_end_after_a_line_saying_what_was_cut(
    capped: KubernetesConfig, emulator: Emulator
):
    executor = KubernetesExecutor(capped)  # log_cap_bytes=1000
    handle = await executor.submit_build(build(2))
    lines = [f"2026-11-23T12:00:{n % 60:02d}.{n:06d}Z #{n:04d} " + "y" * 50 for n in range(100)]
    lines.sort()
    pod = play_build_pod(emulator, handle, "Running", "".join(f"{line}\n" for line in lines),
                         {"state": {"running": {}}})
    finish_job(emulator, handle, pod, code=1)

    outcome, kept = await builds_following(executor)._follow(handle, BuildLog(), no_progress)

    assert outcome.state == WorkerState.FAILED
    sizes = [len(line.encode()) + 1 for line in lines]
    tail = kept[1:]
    assert 0 < len(tail) < 100 and sum(sizes[-len(tail):]) <= 1000
    assert tail == [line.partition(" ")[2] for line in lines[-len(tail):]]
    assert kept[0] == (
        f"[gristmill] the build log was truncated: its first {sum(sizes[:-len(tail)])} "
        f"bytes ({100 - len(tail)} lines) of {sum(sizes)} were not kept (the cap is 1000 "
        "bytes, GRISTMILL_KUBERNETES_LOG_CAP_BYTES)")
    # the executor's own read (a build followed again after a restart) is capped as well
    assert [line.message for line in await executor.build_logs(handle)] == kept
