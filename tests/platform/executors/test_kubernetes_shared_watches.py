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
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import pytest

from gristmill_platform.deployments.worker_records import DeploymentLogWriter, deployment_records
from gristmill_platform.executors.kubernetes import manifests
from gristmill_platform.executors.kubernetes.config import KubernetesConfig
from gristmill_platform.executors.kubernetes.executor import KubernetesExecutor
from gristmill_platform.executors.kubernetes.workers import KubernetesWorkerPool
from gristmill_platform.state import AppState

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
    await pool.ensure("api", wait_s=0)
    await eventually(lambda: bool(pool.pods("api")), "the pod seen")
    # 100 lines of 80 bytes: 8,000 bytes, eight times the cap
    lines = [f"2026-11-23T12:00:{n % 60:02d}.{n:06d}Z line {n:04d} " + "x" * 47
             for n in range(100)]
    lines.sort()
    emulator.serve_logs("gm-ll-api-a", "".join(f"{line}\n" for line in lines))
    start = len(list(emulator))

    await pool.copy_logs("api")

    stored = await deployment_logs(state, deployment_id)
    copied = [message for message in stored if message.startswith("line ")]
    assert 0 < len(copied) < 100
    assert copied == [line.partition(" ")[2] for line in lines[-len(copied):]]  # the end
    sizes = [len(line.encode()) + 1 for line in lines]
    assert sum(sizes[-len(copied):]) <= 1000
    note = f"[gristmill] the pod log was truncated: its first {sum(sizes[:-len(copied)])} " \
           f"bytes ({100 - len(copied)} lines) of {sum(sizes)} were not kept"
    assert any(message.startswith(note) for message in stored)
    [first] = log_reads(emulator, start)
    assert "sinceTime" not in first.params  # nothing copied yet: from the start

    # the next copy reads from the second of the last line copied, and adds nothing twice
    await pool.copy_logs("api")
    [second] = log_reads(emulator, start)[1:]
    assert second.params["sinceTime"] == lines[-1][:19] + "Z"
    again = await deployment_logs(state, deployment_id)
    assert [m for m in again if m.startswith("line ")] == copied
