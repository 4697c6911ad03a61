"""The Kubernetes executor at cluster scale, on the API emulator (kmock on 127.0.0.1):

* the pod watcher follows any number of pods with ONE list and watch per namespace, and
  no request per pod while they run (counted from the requests the emulator receives);
* it resumes a watch from its resourceVersion, lists again on 410 Gone and after errors;
* API calls are retried on 429 (Retry-After), 5xx and timeouts, and a create that went
  through before its answer was lost adopts what it made (never a foreign object);
* the orphan sweeper; the byte cap on kept pod logs; the PodDisruptionBudget of warm
  workers.

Nothing here reads the wall clock for an assertion: waits are bounded loops on conditions.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import kr8s
import pytest
from kr8s.asyncio.objects import Pod

from gristmill_platform.executors.kubernetes import manifests
from gristmill_platform.executors.kubernetes.config import KubernetesConfig
from gristmill_platform.executors.kubernetes.executor import (
    ANNOTATION_CLEANING,
    KubernetesExecutor,
    KubernetesExecutorError,
    retry_after_s,
    retry_delay,
)
from gristmill_platform.executors.kubernetes.sweeper import (
    OrphanSweeper,
    candidate,
    claimed_by_another,
    due,
)
from gristmill_platform.executors.kubernetes.watcher import (
    MAX_ATTEMPTS,
    PodWatcher,
    relist_delay,
)
from gristmill_platform.executors.spec import (
    FailureCode,
    LaunchSpec,
    PollResult,
    Resources,
    WorkerSpec,
    WorkerState,
)

from .conftest import NAMESPACE, NOW, Emulator, LogKeeper

ELASTIC = manifests.execution_pods_selector()


def launch(execution_id: str) -> LaunchSpec:
    return LaunchSpec(
        execution_id=execution_id, step_name="train", pipeline_name="churn",
        language="python:3.12-slim", argv=("python", "-m", "gristmill.runtime", "run"),
        env={}, resources=Resources(memory_bytes=512 * 1024**2), timeout_s=600,
    )


def terminated(code: int) -> dict[str, Any]:
    return {
        "phase": "Failed" if code else "Succeeded",
        "containerStatuses": [{
            "name": "runner", "image": "img",
            "state": {"terminated": {"exitCode": code, "reason": "Error" if code else
                                     "Completed", "finishedAt": "2026-11-23T12:00:05Z"}},
        }],
    }


RUNNING = {"phase": "Running",
           "containerStatuses": [{"name": "runner", "state": {"running": {}}}]}


async def eventually(condition: Callable[[], bool], what: str, tries: int = 600) -> None:
    """Wait for a condition, a bounded number of short sleeps (not a time assertion)."""
    for _ in range(tries):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


@pytest.fixture()
def fast_config(k8s_config: KubernetesConfig) -> KubernetesConfig:
    return dataclasses.replace(k8s_config, api_backoff_s=0.01, api_backoff_max_s=0.05)


@pytest.fixture()
def fast(fast_config: KubernetesConfig, log_keeper: LogKeeper,
         clock: list[datetime]) -> KubernetesExecutor:
    return KubernetesExecutor(fast_config, log_sink=log_keeper, clock=lambda: clock[0])


class Ends:
    """An on_end hook that records the outcomes, and fails the first ``failures`` calls."""

    def __init__(self, failures: int = 0, raises: bool = False) -> None:
        self.seen: list[tuple[str, PollResult]] = []
        self.failures = failures
        self.raises = raises

    async def __call__(self, execution_id: str, _handle: Any, outcome: PollResult) -> bool:
        self.seen.append((execution_id, outcome))
        if self.raises:
            raise OSError("database down")
        if self.failures > 0:
            self.failures -= 1
            return False
        return True

    def ids(self) -> set[str]:
        return {execution_id for execution_id, _ in self.seen}


def pod_gets(emulator: Emulator, start: int) -> list[Any]:
    """GETs of one pod by name (not a list, not a watch, not a log) since request ``start``."""
    return [r for r in list(emulator)[start:]
            if r.method.value.lower() == "get" and r.resource is not None
            and r.resource.plural == "pods" and r.name is not None
            and not str(r.url.path).endswith("/log")]


# --- one watch for any number of pods -------------------------------------------------------


async def test_a_thousand_followed_pods_cost_one_watch_and_no_per_pod_request(
    fast: KubernetesExecutor, emulator: Emulator
):
    ids = [f"run-{number:04d}" for number in range(1000)]
    handles = []
    for first in range(0, len(ids), 100):  # 100 creates at a time: kr8s's connection pool
        handles += await asyncio.gather(*(fast.submit(launch(i)) for i in ids[first:first + 100]))
    ends = Ends()
    watcher = PodWatcher(fast, ends, interval_s=0.05)
    start = len(list(emulator))
    for handle in handles:
        watcher.follow(handle)
    watcher.start()
    try:
        informer = watcher.informers[NAMESPACE]
        await eventually(lambda: len(informer.pods) == 1000, "the list shows all pods")
        for handle in handles:  # the kubelet starts them all
            emulator.set_pod_status(handle["name"], RUNNING, node="node-a")
        await eventually(lambda: all(
            (p.get("status") or {}).get("phase") == "Running" for p in informer.pods.values()),
            "every pod seen running through the watch")
        passes = watcher.passes
        await eventually(lambda: watcher.passes >= passes + 5, "five full passes in steady state")
        steady = list(emulator)[start:]
        assert ends.seen == [] and len(watcher.following()) == 1000

        half = handles[:500]
        for handle in half:
            emulator.set_pod_status(handle["name"], terminated(0))
        await eventually(lambda: len(ends.seen) == 500, "the ended pods handed over")
    finally:
        await watcher.shutdown()

    assert ends.ids() == {h["execution_id"] for h in half}
    assert {outcome.state for _, outcome in ends.seen} == {WorkerState.SUCCEEDED}
    assert len(watcher.following()) == 500
    # What the API server received while following 1,000 pods: one list, one watch for the
    # namespace and selector, and not a single request about one pod.
    requests = list(emulator)[start:]
    watches = [r for r in requests if r.params.get("watch") == "true"]
    lists = [r for r in requests if r.params.get("watch") != "true" and r.name is None]
    assert len(watches) == 1 and len(lists) == 1
    assert watches[0].params["labelSelector"] == \
        "app.kubernetes.io/managed-by=gristmill,gristmill.io/mode=elastic"
    assert pod_gets(emulator, start) == []
    assert len(requests) == 2 and len(steady) == 2
    assert informer.watches == 1 and informer.lists == 1


async def test_the_watcher_hands_ended_pods_over_until_they_are_cleaned(
    fast: KubernetesExecutor, emulator: Emulator
):
    a, b = [await fast.submit(launch(i)) for i in ("a", "b")]
    ends = Ends(failures=1)  # the first cleanup fails, the second works
    watcher = PodWatcher(fast, ends, interval_s=0.05)
    watcher.follow(a)
    watcher.follow(b)
    watcher.start()
    try:
        await eventually(lambda: watcher.informers[NAMESPACE].synced.is_set(), "listed")
        emulator.set_pod_status(a["name"], {"phase": "Failed", "reason": "Evicted"})
        await eventually(lambda: len(ends.seen) == 2, "handed over twice")
        await eventually(lambda: watcher.following() == ["b"], "a forgotten once cleaned")
    finally:
        await watcher.shutdown()
    assert [outcome.code for _, outcome in ends.seen] == [FailureCode.EVICTED] * 2


async def test_the_watcher_gives_up_on_a_pod_it_can_never_clean(
    fast: KubernetesExecutor, emulator: Emulator
):
    a = await fast.submit(launch("a"))
    emulator.set_pod_status(a["name"], terminated(0))
    ends = Ends(raises=True)
    watcher = PodWatcher(fast, ends, interval_s=0.01)
    watcher.follow(a)
    watcher.start()
    try:
        await eventually(lambda: watcher.following() == [], "given up")
    finally:
        await watcher.shutdown()
    assert len(ends.seen) == MAX_ATTEMPTS


async def test_a_pod_deleted_outside_is_a_lost_worker(
    fast: KubernetesExecutor, emulator: Emulator
):
    a = await fast.submit(launch("a"))
    ends = Ends()
    watcher = PodWatcher(fast, ends, interval_s=0.05)
    watcher.follow(a)
    watcher.start()
    try:
        await eventually(lambda: a["name"] in watcher.informers[NAMESPACE].pods, "seen")
        emulator.remove("v1/pods", NAMESPACE, a["name"])
        await eventually(lambda: len(ends.seen) == 1, "handed over")
    finally:
        await watcher.shutdown()
    assert ends.seen[0][1].code == FailureCode.WORKER_LOST


async def test_a_dropped_watch_resumes_and_a_410_lists_again(
    fast: KubernetesExecutor, emulator: Emulator
):
    a, b, c = [await fast.submit(launch(i)) for i in ("a", "b", "c")]
    ends = Ends()
    watcher = PodWatcher(fast, ends, interval_s=0.05)
    for handle in (a, b, c):
        watcher.follow(handle)
    watcher.start()
    try:
        informer = watcher.informers[NAMESPACE]
        await eventually(lambda: emulator.open_watches == 1, "watching")

        # The server ends the watch (its timeout, a restart): resumed from the last version,
        # no new list, and no change missed.
        version = informer.resource_version
        emulator.drop_watches()
        await eventually(lambda: informer.watches == 2, "watching again")
        emulator.set_pod_status(a["name"], terminated(0))
        await eventually(lambda: ends.ids() == {"a"}, "a ended, seen by the resumed watch")
        resumed = emulator.watches()[-1]
        assert resumed.params["resourceVersion"] == version
        assert informer.lists == 1 and len(emulator.lists()) == 1

        # The history is compacted while nobody watches: changes happen, then the resumed
        # watch gets 410 Gone; the informer lists again and sees them.
        emulator.compact()
        emulator.set_pod_status(b["name"], terminated(3))
        emulator.remove("v1/pods", NAMESPACE, c["name"])
        await eventually(lambda: ends.ids() == {"a", "b", "c"}, "b and c seen after a re-list")
    finally:
        await watcher.shutdown()
    assert informer.lists == 2 and len(emulator.lists()) == 2
    outcomes = dict(ends.seen)
    assert outcomes["b"].code == FailureCode.EXIT_CODE
    assert outcomes["c"].code == FailureCode.WORKER_LOST


async def test_a_failing_watch_backs_off_and_lists_again(
    fast: KubernetesExecutor, emulator: Emulator
):
    a = await fast.submit(launch("a"))
    emulator.fail("get", "/pods", 503, times=2)  # the first list and its retry... and more
    ends = Ends()
    watcher = PodWatcher(fast, ends, interval_s=0.05)
    watcher.follow(a)
    watcher.start()
    try:
        informer = watcher.informers[NAMESPACE]
        await eventually(lambda: emulator.open_watches == 1, "listed despite two 503s")
        emulator.fail("get", "/pods", 500, times=1)  # the next watch fails outright
        emulator.drop_watches()
        await eventually(lambda: informer.lists == 2, "listed again after the failed watch")
        emulator.set_pod_status(a["name"], terminated(0))
        await eventually(lambda: ends.ids() == {"a"}, "a ended")
    finally:
        await watcher.shutdown()


async def test_reconcile_reads_the_watch_cache_not_the_pod(
    fast: KubernetesExecutor, emulator: Emulator
):
    a = await fast.submit(launch("a"))
    watcher = PodWatcher(fast, Ends(), interval_s=0.05)
    assert watcher.outcome(a) is None  # nothing listed yet: unknown, not lost
    watcher.follow(a)
    watcher.start()
    try:
        await eventually(lambda: watcher.outcome(a) is not None, "known from the list")
        start = len(list(emulator))
        outcome = watcher.outcome(a)
        assert outcome is not None and outcome.state == WorkerState.PENDING
        assert pod_gets(emulator, start) == []
    finally:
        await watcher.shutdown()


def test_relist_backoff_grows_with_jitter_and_is_bounded():
    assert relist_delay(1, lambda: 1.0) == 0.5
    assert relist_delay(3, lambda: 1.0) == 2.0
    assert relist_delay(30, lambda: 1.0) == 30.0
    assert relist_delay(3, lambda: 0.25) == 0.5


# --- retries and idempotent creates ---------------------------------------------------------


def response(code: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(code, headers=headers or {},
                          request=httpx.Request("GET", "http://api/x"))


def server_error(code: int, headers: dict[str, str] | None = None) -> kr8s.ServerError:
    return kr8s.ServerError("refused", response=response(code, headers))


def test_retry_delay_honours_retry_after_and_backs_off_with_jitter():
    too_many = server_error(429, {"Retry-After": "7"})
    assert retry_delay(too_many, 0, 0.25, 10.0, lambda: 1.0) == 7.0
    assert retry_delay(server_error(429), 0, 0.25, 10.0, lambda: 1.0) == 0.25
    assert retry_delay(server_error(503), 3, 0.25, 10.0, lambda: 1.0) == 2.0
    assert retry_delay(server_error(500), 10, 0.25, 10.0, lambda: 1.0) == 10.0
    assert retry_delay(server_error(502), 2, 0.25, 10.0, lambda: 0.5) == 0.5
    assert retry_delay(kr8s.APITimeoutError("slow"), 0, 0.25, 10.0, lambda: 1.0) == 0.25
    assert retry_delay(httpx.ConnectError("refused"), 1, 0.25, 10.0, lambda: 1.0) == 0.5
    # answers, not failures: never retried
    for code in (400, 403, 404, 409, 422):
        assert retry_delay(server_error(code), 0, 0.25, 10.0) is None
    assert retry_delay(ValueError("bug"), 0, 0.25, 10.0) is None
    # a server asking for more than two minutes is not waited for inside one call
    assert retry_delay(server_error(429, {"Retry-After": "600"}), 0, 0.25, 10.0) is None


def test_retry_after_as_a_date():
    now = datetime(2026, 11, 23, 12, 0, 0, tzinfo=timezone.utc)
    later = response(429, {"Retry-After": "Mon, 23 Nov 2026 12:00:09 GMT"})
    assert retry_after_s(later, now) == 9.0
    assert retry_after_s(response(429, {"Retry-After": "soon"}), now) is None
    assert retry_after_s(response(429), now) is None


async def test_a_429_with_retry_after_then_success(
    fast: KubernetesExecutor, emulator: Emulator
):
    handle = await fast.submit(launch("a"))
    emulator.fail("get", f"/pods/{handle['name']}", 429, headers={"Retry-After": "1"})
    outcome = await fast.poll(handle)
    assert outcome.state == WorkerState.PENDING
    assert len(pod_gets(emulator, 0)) == 2  # refused once, then answered


async def test_5xx_on_create_then_success(fast: KubernetesExecutor, emulator: Emulator):
    emulator.fail("post", "/pods", 503, times=2)
    handle = await fast.submit(launch("a"))
    assert emulator.has("v1/pods", handle["name"])
    assert len(emulator.sent("POST", "pods")) == 3


async def test_a_create_that_went_through_but_timed_out_adopts_its_pod(
    fast_config: KubernetesConfig, emulator: Emulator
):
    executor = KubernetesExecutor(dataclasses.replace(fast_config, api_timeout_s=0.3))
    # the server stores the pod, then answers too late: the client times out and retries
    emulator.fail("post", "/pods", 0, serve_first=True, delay_s=1.0)
    handle = await executor.submit(launch("a"))
    assert handle["execution_id"] == "a"
    assert handle["uid"] == emulator.pod(handle["name"])["metadata"]["uid"]
    assert len(emulator.sent("POST", "pods")) == 2  # the retry met 409 and adopted it


async def test_a_create_answered_500_after_it_went_through_adopts_its_pod(
    fast: KubernetesExecutor, emulator: Emulator
):
    emulator.fail("post", "/pods", 500, serve_first=True)
    handle = await fast.submit(launch("a"))
    assert emulator.has("v1/pods", handle["name"])
    assert len(emulator.sent("POST", "pods")) == 2


async def test_a_list_refused_with_503_is_tried_again(
    fast: KubernetesExecutor, emulator: Emulator
):
    await fast.apply_worker(worker_spec())
    emulator.add_pod("gm-ll-churn-api-a", manifests.worker_selector("churn-api"), RUNNING)
    emulator.fail("get", "/pods", 503)
    assert [pod["pod_id"] for pod in await fast.worker_pods("churn-api")] == [
        "gm-ll-churn-api-a"]
    assert len(emulator.lists()) == 2


async def test_retries_stop_after_the_configured_number(
    fast: KubernetesExecutor, emulator: Emulator
):
    emulator.fail("post", "/pods", 503, times=100)
    with pytest.raises(kr8s.ServerError):
        await fast.submit(launch("a"))
    assert len(emulator.sent("POST", "pods")) == fast.cfg.api_retries + 1


async def test_a_400_is_not_retried(fast: KubernetesExecutor, emulator: Emulator):
    emulator.fail("post", "/pods", 400, times=100)
    with pytest.raises(kr8s.ServerError):
        await fast.submit(launch("a"))
    assert len(emulator.sent("POST", "pods")) == 1


async def test_a_build_job_of_someone_else_is_never_adopted(
    fast: KubernetesExecutor, emulator: Emulator
):
    from gristmill_platform.executors.kubernetes.images import ImageBuild

    build = ImageBuild("train", "python:3.12-slim", "s3://b/ctx.tar.gz", "c" * 64)
    name = manifests.build_job_name(build.digest)
    emulator.objects["batch/v1/jobs", NAMESPACE, name] = {
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"team": "x"}}}
    with pytest.raises(KubernetesExecutorError, match="not created by Gristmill"):
        await fast.submit_build(build)


# --- the orphan sweeper ---------------------------------------------------------------------


def sweeper_for(executor: KubernetesExecutor, live: set[str],
                followed: tuple[str, ...] = ()) -> OrphanSweeper:
    async def live_ids(ids: Any) -> set[str]:
        return {i for i in ids if i in live}

    return OrphanSweeper(executor, live_ids, lambda: followed)


def elastic_labels(execution_id: str) -> dict[str, str]:
    return {**ELASTIC, "gristmill.io/role": "worker", "gristmill.io/execution-id": execution_id}


async def test_the_sweeper_deletes_orphans_after_the_grace_only(
    fast: KubernetesExecutor, emulator: Emulator, clock: list[datetime], log_keeper: LogKeeper
):
    live = await fast.submit(launch("live"))
    ended = await fast.submit(launch("ended"))
    emulator.set_pod_status(ended["name"], terminated(0))
    emulator.serve_logs(ended["name"], "2026-11-23T12:00:01Z last words\n")
    running = await fast.submit(launch("deleted"))  # its execution was deleted
    followed = await fast.submit(launch("followed"))  # this replica is cleaning it up
    # a warm worker's pod, and a build Job's pod: never the sweeper's
    emulator.add_pod("gm-ll-churn-api-x", manifests.worker_selector("churn-api") | {
        "app.kubernetes.io/managed-by": "gristmill"}, RUNNING)
    emulator.add_pod("gm-build-abc-x", {"app.kubernetes.io/managed-by": "gristmill",
                                        "gristmill.io/role": "builder"}, RUNNING)
    # an execution Job whose execution is unknown to the database
    emulator.objects["batch/v1/jobs", NAMESPACE, "gm-exec-job-1"] = {
        "metadata": {"name": "gm-exec-job-1", "namespace": NAMESPACE,
                     "labels": elastic_labels("job-1"),
                     "annotations": {"gristmill.io/execution-id": "job-1"}}}

    sweeper = sweeper_for(fast, live={"live"}, followed=("followed",))
    clock[0] = NOW + timedelta(seconds=10)
    assert await sweeper.sweep() == []  # found, but not orphans for long enough

    clock[0] = NOW + timedelta(seconds=10 + fast.cfg.sweep_grace_s)
    removed = await sweeper.sweep()
    assert sorted(removed) == sorted([f"Pod/{ended['name']}", f"Pod/{running['name']}",
                                      "Job/gm-exec-job-1"])
    assert emulator.has("v1/pods", live["name"]) and emulator.has("v1/pods", followed["name"])
    assert emulator.has("v1/pods", "gm-ll-churn-api-x")
    assert emulator.has("v1/pods", "gm-build-abc-x")
    assert not emulator.has("v1/pods", ended["name"])
    assert not emulator.has("batch/v1/jobs", "gm-exec-job-1")
    # deleted through cleanup: the log sink had the pod's last lines first
    assert [line.message for line in log_keeper.kept["ended"]] == ["last words"]
    assert await sweeper.sweep() == []


async def test_the_sweeper_at_start_up_deletes_a_pod_that_finished_long_ago(
    fast: KubernetesExecutor, emulator: Emulator, clock: list[datetime]
):
    old = await fast.submit(launch("old"))
    emulator.set_pod_status(old["name"], terminated(1))  # finished at NOW + 5 s
    clock[0] = NOW + timedelta(seconds=5 + fast.cfg.sweep_grace_s)
    assert await sweeper_for(fast, live=set()).sweep() == [f"Pod/{old['name']}"]


async def test_a_pod_live_again_is_forgotten_by_the_sweeper(
    fast: KubernetesExecutor, emulator: Emulator, clock: list[datetime]
):
    pod = await fast.submit(launch("a"))
    live: set[str] = set()
    sweeper = sweeper_for(fast, live=live)
    assert await sweeper.sweep() == []  # an orphan since NOW
    live.add("a")  # the database said otherwise: e.g. it was being created
    clock[0] = NOW + timedelta(seconds=fast.cfg.sweep_grace_s + 1)
    assert await sweeper.sweep() == []
    live.clear()
    assert await sweeper.sweep() == []  # its grace starts again
    assert emulator.has("v1/pods", pod["name"])


def test_sweeper_candidates_and_grace_are_pure():
    pod = {"metadata": {"name": "p", "namespace": "n", "labels": dict(ELASTIC),
                        "annotations": {"gristmill.io/execution-id": "e"}}}
    assert candidate("Pod", pod) is not None
    owned = {**pod, "metadata": {**pod["metadata"],
                                 "ownerReferences": [{"kind": "ReplicaSet"}]}}
    assert candidate("Pod", owned) is None
    warm = {**pod, "metadata": {**pod["metadata"], "labels": {
        **ELASTIC, "gristmill.io/mode": "low-latency"}}}
    assert candidate("Pod", warm) is None
    orphan = candidate("Pod", pod)
    assert orphan is not None
    assert not due(orphan, NOW, NOW + timedelta(seconds=59), 60)
    assert due(orphan, NOW, NOW + timedelta(seconds=60), 60)


# --- the log cap ----------------------------------------------------------------------------


async def test_cleanup_keeps_the_end_of_a_long_log_and_says_what_was_cut(
    fast_config: KubernetesConfig, emulator: Emulator, log_keeper: LogKeeper
):
    executor = KubernetesExecutor(dataclasses.replace(fast_config, log_cap_bytes=1000),
                                  log_sink=log_keeper)
    handle = await executor.submit(launch("a"))
    lines = [f"2026-11-23T12:00:{n % 60:02d}Z line {n:04d} " + "x" * 60 for n in range(100)]
    emulator.serve_logs(handle["name"], "".join(f"{line}\n" for line in lines))

    await executor.cleanup(handle)

    kept = log_keeper.kept["a"]
    note, rest = kept[0].message, [line.message for line in kept[1:]]
    sizes = [len(line.encode()) + 1 for line in lines]
    kept_count = len(rest)
    assert rest == [line.partition(" ")[2] for line in lines[-kept_count:]]
    assert sum(sizes[-kept_count:]) <= 1000 < sum(sizes[-kept_count - 1:])
    dropped = sum(sizes[:-kept_count])
    assert note == (
        f"[gristmill] the pod log was truncated: its first {dropped} bytes "
        f"({100 - kept_count} lines) of {sum(sizes)} were not kept (the cap is 1000 bytes, "
        "GRISTMILL_KUBERNETES_LOG_CAP_BYTES)")
    assert not emulator.has("v1/pods", handle["name"])


async def test_a_log_under_the_cap_is_kept_whole(
    fast: KubernetesExecutor, emulator: Emulator, log_keeper: LogKeeper
):
    handle = await fast.submit(launch("a"))
    emulator.serve_logs(handle["name"], "2026-11-23T12:00:01Z one\n2026-11-23T12:00:02Z two\n")
    await fast.cleanup(handle)
    assert [line.message for line in log_keeper.kept["a"]] == ["one", "two"]


# --- warm workers: disruption budget and priority -------------------------------------------


def worker_spec(**changes: Any) -> WorkerSpec:
    values: dict[str, Any] = {
        "deployment_name": "churn-api", "step_name": "score", "pipeline_name": "churn",
        "language": "python:3.12-slim", "argv": ("python", "-m", "gristmill.runtime", "serve"),
        "env": {}, "port": 8080, "generation": 1, "replicas": 3,
    }
    values.update(changes)
    return WorkerSpec(**values)


async def test_warm_workers_get_a_disruption_budget_that_goes_with_them(
    fast: KubernetesExecutor, emulator: Emulator
):
    await fast.apply_worker(worker_spec())
    name = manifests.worker_name("churn-api")
    budget = emulator.objects["policy/v1/poddisruptionbudgets", NAMESPACE, name]
    assert budget["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": manifests.worker_selector("churn-api")},
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }
    deployment = emulator.objects["apps/v1/deployments", NAMESPACE, name]
    assert deployment["spec"]["template"]["spec"]["priorityClassName"] == "gristmill-warm-worker"
    await fast.apply_worker(worker_spec())
    assert emulator.sent("PATCH") == []  # applying again changes nothing

    await fast.delete_worker("churn-api")
    assert not emulator.has("policy/v1/poddisruptionbudgets", name)


def test_priority_classes_are_those_the_infra_program_creates():
    infra = pytest.importorskip("gristmill_infra.platform_service")
    cfg = KubernetesConfig()
    assert {cfg.step_priority_class, cfg.warm_worker_priority_class,
            cfg.build_priority_class, cfg.shadow_worker_priority_class} == set(
        infra.WORKER_PRIORITY_CLASSES)
    pod = manifests.execution_pod(launch("a"), cfg)
    assert pod["spec"]["priorityClassName"] == "gristmill-step"
    # warm workers outrank steps, which outrank builds, which outrank shadow-only workers
    ranks = infra.WORKER_PRIORITY_CLASSES
    assert ranks[cfg.warm_worker_priority_class] > ranks[cfg.step_priority_class] > \
        ranks[cfg.build_priority_class] > ranks[cfg.shadow_worker_priority_class]
    unset = dataclasses.replace(cfg, step_priority_class=None)
    assert "priorityClassName" not in manifests.execution_pod(launch("a"), unset)["spec"]



# --- settings -------------------------------------------------------------------------------


def test_the_settings_reach_the_executor(monkeypatch: pytest.MonkeyPatch):
    from gristmill_platform.executors.kubernetes.config import kubernetes_config
    from gristmill_platform.settings import Settings

    for name, value in {"GRISTMILL_KUBERNETES_API_RETRIES": "2",
                        "GRISTMILL_KUBERNETES_API_BACKOFF_S": "0.5",
                        "GRISTMILL_KUBERNETES_API_BACKOFF_MAX_S": "4",
                        "GRISTMILL_KUBERNETES_WATCH_TIMEOUT_S": "120",
                        "GRISTMILL_KUBERNETES_SWEEP_INTERVAL_S": "0",
                        "GRISTMILL_KUBERNETES_SWEEP_GRACE_S": "30",
                        "GRISTMILL_KUBERNETES_LOG_CAP_BYTES": "65536",
                        "GRISTMILL_KUBERNETES_STEP_PRIORITY_CLASS": "",
                        "GRISTMILL_KUBERNETES_SHADOW_WORKER_PRIORITY_CLASS": "",
                        "GRISTMILL_KUBERNETES_SHADOW_WORKER_CPU": "0.2",
                        "GRISTMILL_KUBERNETES_BUILD_PRIORITY_CLASS": "batch-low"}.items():
        monkeypatch.setenv(name, value)
    cfg = kubernetes_config(Settings(executor="kubernetes", registry="r.example/a").resolve())
    assert (cfg.api_retries, cfg.api_backoff_s, cfg.api_backoff_max_s) == (2, 0.5, 4.0)
    assert (cfg.watch_timeout_s, cfg.sweep_interval_s, cfg.sweep_grace_s) == (120, 0.0, 30.0)
    assert cfg.log_cap_bytes == 65536
    assert cfg.step_priority_class is None  # "": the cluster's default priority
    assert cfg.warm_worker_priority_class == "gristmill-warm-worker"
    assert cfg.build_priority_class == "batch-low"
    assert cfg.shadow_worker_priority_class is None
    assert cfg.shadow_worker_cpu == 0.2
    monkeypatch.delenv("GRISTMILL_KUBERNETES_SHADOW_WORKER_PRIORITY_CLASS")
    monkeypatch.delenv("GRISTMILL_KUBERNETES_SHADOW_WORKER_CPU")
    default = kubernetes_config(Settings(executor="kubernetes", registry="r").resolve())
    assert default.shadow_worker_priority_class == "gristmill-shadow-worker"
    assert default.shadow_worker_cpu == 0.1


@pytest.mark.parametrize("name, value", [
    ("kubernetes_api_retries", -1),
    ("kubernetes_api_backoff_s", 0),
    ("kubernetes_api_backoff_max_s", 0),
    ("kubernetes_watch_timeout_s", 5),
    ("kubernetes_sweep_interval_s", -1),
    ("kubernetes_sweep_grace_s", -1),
    ("kubernetes_log_cap_bytes", 100),
    ("kubernetes_shadow_worker_cpu", 0),
])
def test_bad_settings_are_refused_with_their_name(name: str, value: Any):
    from pydantic import ValidationError

    from gristmill_platform.settings import Settings

    with pytest.raises(ValidationError, match=name):
        Settings(executor="kubernetes", registry="r.example/a", **{name: value})


async def test_the_sweeper_runs_at_start_up_unless_turned_off(
    fast_config: KubernetesConfig, fast: KubernetesExecutor, emulator: Emulator
):
    off = sweeper_for(KubernetesExecutor(dataclasses.replace(fast_config, sweep_interval_s=0)),
                      live=set())
    off.start()
    await asyncio.sleep(0.2)  # time it would have had to list
    await off.shutdown()
    assert emulator.lists() == [] and emulator.lists("jobs") == []

    on = sweeper_for(fast, live=set())
    on.start()
    try:
        await eventually(lambda: len(emulator.lists("jobs")) == 1, "a sweep at start-up")
    finally:
        await on.shutdown()


# --- two replicas ---------------------------------------------------------------------------


async def test_two_replicas_sweeping_at_once_spare_live_pods_and_clean_an_orphan_once(
    fast_config: KubernetesConfig, emulator: Emulator, clock: list[datetime]
):
    keepers = [LogKeeper(), LogKeeper()]
    # two control-service replicas: their own API clients, their own followed pods, one
    # database (the live executions)
    a, b = [KubernetesExecutor(fast_config, log_sink=keeper, clock=lambda: clock[0])
            for keeper in keepers]
    a.replica, b.replica = "replica-a", "replica-b"
    launched_by_a = await a.submit(launch("running-on-a"))
    launched_by_b = await b.submit(launch("pending-on-b"))
    emulator.set_pod_status(launched_by_a["name"], RUNNING, node="node-a")
    orphans = [await a.submit(launch(f"ended-{n}")) for n in range(5)]
    for orphan in orphans:
        emulator.set_pod_status(orphan["name"], terminated(0))
        emulator.serve_logs(orphan["name"], "2026-11-23T12:00:01Z last words\n")
    live = {"running-on-a", "pending-on-b"}
    sweepers = [sweeper_for(a, live, followed=("running-on-a",)),
                sweeper_for(b, live, followed=("pending-on-b",))]
    clock[0] = NOW + timedelta(seconds=5 + fast_config.sweep_grace_s)

    removed: list[str] = []
    for _ in range(3):  # both at once, again and again
        for found in await asyncio.gather(*(sweeper.sweep() for sweeper in sweepers)):
            removed += found

    # every orphan cleaned up once, by one replica or the other, its log kept once
    assert sorted(removed) == sorted(f"Pod/{orphan['name']}" for orphan in orphans)
    kept = [execution_id for keeper in keepers for execution_id in keeper.kept]
    assert sorted(kept) == sorted(f"ended-{n}" for n in range(5))
    assert not any(emulator.has("v1/pods", orphan["name"]) for orphan in orphans)
    # the live executions' pods stay, whichever replica launched them
    assert emulator.has("v1/pods", launched_by_a["name"])
    assert emulator.has("v1/pods", launched_by_b["name"])


async def test_two_replicas_following_the_same_ended_pod_keep_its_log_once(
    fast_config: KubernetesConfig, emulator: Emulator, clock: list[datetime]
):
    # after a restart every replica adopts every active execution: both see its pod end
    keepers = [LogKeeper(), LogKeeper()]
    a, b = [KubernetesExecutor(fast_config, log_sink=keeper, clock=lambda: clock[0])
            for keeper in keepers]
    handles = [await a.submit(launch(f"e-{n}")) for n in range(5)]
    for handle in handles:
        emulator.set_pod_status(handle["name"], terminated(0))
        emulator.serve_logs(handle["name"], "2026-11-23T12:00:01Z last words\n")

    await asyncio.gather(*(replica.cleanup(handle) for handle in handles for replica in (a, b)))

    kept = [execution_id for keeper in keepers for execution_id in keeper.kept]
    assert sorted(kept) == [f"e-{n}" for n in range(5)]
    assert not any(emulator.has("v1/pods", handle["name"]) for handle in handles)


async def test_a_cleanup_claim_holds_through_a_retry_and_expires_with_its_replica(
    fast_config: KubernetesConfig, emulator: Emulator, clock: list[datetime]
):
    keepers = [LogKeeper(), LogKeeper()]
    a, b = [KubernetesExecutor(fast_config, log_sink=keeper, clock=lambda: clock[0])
            for keeper in keepers]
    handle = await a.submit(launch("e"))
    emulator.set_pod_status(handle["name"], terminated(0))
    emulator.serve_logs(handle["name"], "2026-11-23T12:00:01Z last words\n")
    keepers[0].fail = True  # a's database is down: a claimed the pod, kept nothing
    with pytest.raises(OSError):
        await a.cleanup(handle)
    assert emulator.pod(handle["name"])["metadata"]["annotations"][ANNOTATION_CLEANING] \
        .startswith(f"{a.replica} ")
    assert not await b.cleanup_claimed(handle)  # a is on it: b leaves the pod to a
    assert emulator.has("v1/pods", handle["name"]) and keepers[1].kept == {}
    keepers[0].fail = False
    assert await a.cleanup_claimed(handle)  # a's retry: its own claim
    assert list(keepers[0].kept) == ["e"] and not emulator.has("v1/pods", handle["name"])

    # a replica that claimed a pod and died: after the grace, another takes it over
    other = await a.submit(launch("f"))
    emulator.update("v1/pods", NAMESPACE, other["name"], {"metadata": {"annotations": {
        ANNOTATION_CLEANING: f"replica-gone {NOW.isoformat()}"}}})
    assert not await b.cleanup_claimed(other)
    clock[0] = NOW + timedelta(seconds=fast_config.sweep_grace_s)
    assert await b.cleanup_claimed(other)
    assert "f" in keepers[1].kept


async def test_the_sweeper_leaves_a_pod_another_replica_is_cleaning_up(
    fast: KubernetesExecutor, emulator: Emulator, clock: list[datetime], log_keeper: LogKeeper
):
    pod = await fast.submit(launch("ended"))
    emulator.set_pod_status(pod["name"], terminated(0))
    grace = fast.cfg.sweep_grace_s
    now = NOW + timedelta(seconds=5 + grace)
    clock[0] = now
    emulator.update("v1/pods", NAMESPACE, pod["name"], {"metadata": {"annotations": {
        ANNOTATION_CLEANING: f"replica-b {(now - timedelta(seconds=1)).isoformat()}"}}})
    sweeper = sweeper_for(fast, live=set())
    start = len(list(emulator))
    assert await sweeper.sweep() == [] and emulator.has("v1/pods", pod["name"])
    # not even tried: no claim was sent
    assert [r for r in list(emulator)[start:] if r.method.value.lower() == "patch"] == []
    # ... and died: past the grace, its claim no longer holds
    clock[0] = now + timedelta(seconds=grace)
    assert await sweeper.sweep() == [f"Pod/{pod['name']}"]
    assert "ended" in log_keeper.kept

    orphan = candidate("Pod", {"metadata": {"name": "p", "labels": dict(ELASTIC), "annotations": {
        "gristmill.io/execution-id": "e", ANNOTATION_CLEANING: f"b {NOW.isoformat()}"}}})
    assert orphan is not None
    assert claimed_by_another(orphan, "a", NOW + timedelta(seconds=59), 60)
    assert not claimed_by_another(orphan, "a", NOW + timedelta(seconds=60), 60)
    assert not claimed_by_another(orphan, "b", NOW, 60)  # its own claim
    garbled = candidate("Pod", {"metadata": {"name": "p", "labels": dict(ELASTIC), "annotations": {
        "gristmill.io/execution-id": "e", ANNOTATION_CLEANING: "not a claim"}}})
    assert garbled is not None and garbled.cleaned_by is None


async def test_a_claim_fails_when_the_pod_changed_since_it_was_listed(
    fast: KubernetesExecutor, emulator: Emulator
):
    pod = await fast.submit(launch("a"))
    listed = emulator.pod(pod["name"])["metadata"]["resourceVersion"]
    assert await fast.claim(Pod, NAMESPACE, pod["name"], listed, {"x": "1"})
    # the first claim changed it: a second one from the same listing loses
    assert not await fast.claim(Pod, NAMESPACE, pod["name"], listed, {"x": "2"})
    assert emulator.pod(pod["name"])["metadata"]["annotations"]["x"] == "1"
    assert not await fast.claim(Pod, NAMESPACE, "gm-exec-gone", "1", {"x": "1"})
