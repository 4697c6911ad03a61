"""The elastic pool on the API emulator (kmock): its pods, the exactly-once hand-off, scale
to zero, restart adoption; and its pure parts (manifests, tokens, deadlines).

The emulator runs no pod: tests move a pool pod to Running as a kubelet would. The whole
path through the control service, with a kubelet double running the pods, is in
tests/platform/backends/test_elastic_pool.py.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from gristmill_platform.executors.kubernetes import manifests
from gristmill_platform.executors.kubernetes.config import KubernetesConfig
from gristmill_platform.executors.kubernetes.elastic_pool import (
    ANNOTATION_OWNER,
    ElasticPool,
    deadline_s,
    pool_key,
    pool_token,
    token_matches,
)
from gristmill_platform.executors.kubernetes.executor import KubernetesExecutor
from gristmill_platform.executors.kubernetes.pool_manifests import (
    MODE_POOL,
    PoolShape,
    assignment_env,
    assignment_patch,
    pool_env,
    pool_pod,
    pool_pod_name,
)
from gristmill_platform.executors.spec import LaunchSpec, Resources

from .conftest import NOW, Emulator

IMAGE = "registry.example/acme/gristmill-steps:abc"
SHAPE = PoolShape("step-1", "echo", "echo", "python:3.12-slim", IMAGE)
CFG = KubernetesConfig(namespace="gm", registry="registry.example/acme")


def launch(execution_id: str, step: PoolShape = SHAPE, **changes: Any) -> LaunchSpec:
    fields: dict[str, Any] = dict(
        execution_id=execution_id, step_name=step.step_name, pipeline_name=step.pipeline_name,
        language=step.language, argv=("python", "-m", "gristmill.runtime", "run"),
        env={"GRISTMILL_SDK_TOKEN": "gm_x_secret", "GRISTMILL_EXECUTION_ID": execution_id,
             "GRISTMILL_STEP_DIR": "/app", "API_KEY": "hush"},
        image=step.image, timeout_s=60)
    fields.update(changes)
    return LaunchSpec(**fields)


def pool_of(executor: KubernetesExecutor, owner: str = "replica-a", **changes: Any
            ) -> ElasticPool:
    options: dict[str, Any] = dict(secret_key="s3cret", size=1, idle_s=300.0,
                                   environment_url="http://gristmill:8765", owner=owner,
                                   clock=lambda: 0.0)
    options.update(changes)
    return ElasticPool(executor, **options)


def pool_pods(emulator: Emulator) -> dict[str, Any]:
    return {name: obj.raw for (resource, namespace, name), obj in emulator.objects.items()
            if resource.plural == "pods" and not obj.deleted
            and obj.raw["metadata"].get("labels", {}).get(manifests.LABEL_MODE) == MODE_POOL}


def run(emulator: Emulator, name: str) -> None:
    """As the kubelet starts the pod's container."""
    emulator.set_pod_status(name, {"phase": "Running", "startTime": "2026-11-23T11:59:00Z"},
                            node="node-1")


# --- pure parts -----------------------------------------------------------------------------


def test_pool_pod_carries_no_execution_and_only_its_pool_token() -> None:
    token = pool_token(pool_key("k"), "gm-pool-step-1-ab12", "step-1")
    env = pool_env("http://gristmill:8765", token, "step-1", 20, CFG.io_dir)
    pod = pool_pod(SHAPE, "gm-pool-step-1-ab12", env, CFG)
    container = pod["spec"]["containers"][0]
    names = {item["name"] for item in container["env"]}
    assert "GRISTMILL_SDK_TOKEN" not in names and "GRISTMILL_EXECUTION_ID" not in names
    assert {"GRISTMILL_POOL_TOKEN", "GRISTMILL_POOL_STEP_ID"} <= names
    assert container["command"] == ["python", "-m", "gristmill.runtime", "pool"]
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["automountServiceAccountToken"] is False
    labels = pod["metadata"]["labels"]
    # the workers' network policies select role=worker; the watcher and sweeper do not
    # select this mode
    assert labels[manifests.LABEL_ROLE] == manifests.ROLE_WORKER
    assert labels[manifests.LABEL_MODE] == MODE_POOL
    assert manifests.LABEL_EXECUTION not in labels


def test_pool_pod_is_refused_without_an_image_or_with_another_name() -> None:
    with pytest.raises(ValueError, match="image"):
        pool_pod(PoolShape("s", "n", "p", "python:3.12-slim", ""), "gm-pool-s-1", {}, CFG)
    with pytest.raises(ValueError, match="gm-pool-"):
        pool_pod(SHAPE, "gm-exec-1", {}, CFG)
    with pytest.raises(ValueError, match="suffix"):
        pool_pod_name("step-1", "NOT/ok")


def test_assignment_makes_the_pool_pod_an_execution_pod() -> None:
    patch = assignment_patch("exec-1", "dep", 90)
    assert patch["metadata"]["labels"][manifests.LABEL_MODE] == manifests.MODE_ELASTIC
    assert patch["metadata"]["labels"][manifests.LABEL_EXECUTION] == "exec-1"
    assert patch["metadata"]["annotations"][manifests.ANNOTATION_EXECUTION] == "exec-1"
    assert patch["metadata"]["annotations"][manifests.ANNOTATION_SAFE_TO_EVICT] == "false"
    assert patch["spec"] == {"activeDeadlineSeconds": 90}
    assert "spec" not in assignment_patch("exec-1", None, None)
    with pytest.raises(ValueError, match="deadline"):
        assignment_patch("exec-1", None, 0)


def test_deadline_adds_the_time_the_pod_waited() -> None:
    assert deadline_s(60, NOW - timedelta(seconds=100.2), NOW) == 60 + 101 + 1
    assert deadline_s(None, NOW, NOW) is None


def test_assignment_env_sends_only_what_the_pod_lacks() -> None:
    sent = assignment_env({"A": "1", "GRISTMILL_STEP_DIR": "/app", "T": "secret"},
                          {"GRISTMILL_STEP_DIR": "/app", "A": "0"})
    assert sent == {"A": "1", "T": "secret"}


def test_a_pool_token_is_good_for_one_pod_and_one_step() -> None:
    key = pool_key("environment secret")
    token = pool_token(key, "gm-pool-a", "step-1")
    assert token_matches(key, "gm-pool-a", "step-1", token)
    assert not token_matches(key, "gm-pool-b", "step-1", token)
    assert not token_matches(key, "gm-pool-a", "step-2", token)
    assert not token_matches(pool_key("another secret"), "gm-pool-a", "step-1", token)


def test_the_pool_serves_only_executions_a_pool_pod_fits(executor: KubernetesExecutor) -> None:
    pool = pool_of(executor)
    assert pool.serves(launch("e1"))
    assert not pool.serves(launch("e1", resources=Resources(memory_bytes=2 * 1024**3)))
    assert not pool.serves(launch("e1", language="python-cuda:3.12-12.4"))
    assert not pool.serves(launch("e1", image=None))
    assert not pool_of(executor, size=0).serves(launch("e1"))
    with pytest.raises(ValueError, match="size"):
        pool_of(executor, size=-1)
    with pytest.raises(ValueError, match="idle"):
        pool_of(executor, idle_s=0)


# --- on the emulator ------------------------------------------------------------------------


async def test_a_miss_starts_the_pool_and_a_hit_takes_its_pod(
        emulator: Emulator, executor: KubernetesExecutor) -> None:
    pool = pool_of(executor)
    assert await pool.take(launch("e1"), "step-1") is None  # nothing yet: the cold path
    await pool.tick()
    pods = pool_pods(emulator)
    assert len(pods) == 1
    name = next(iter(pods))
    assert await pool.take(launch("e2"), "step-1") is None  # not running yet
    run(emulator, name)
    await pool.tick()
    handle = await pool.take(launch("e3"), "step-1")
    assert handle is not None and handle["name"] == name and handle["execution_id"] == "e3"
    pod = emulator.pod(name).raw
    assert pod["metadata"]["labels"][manifests.LABEL_MODE] == manifests.MODE_ELASTIC
    assert pod["metadata"]["annotations"][manifests.ANNOTATION_EXECUTION] == "e3"
    assert pod["spec"]["activeDeadlineSeconds"] >= 60
    # taken: a second execution does not get it, and a replacement is started
    assert await pool.take(launch("e4"), "step-1") is None
    await pool.tick()
    assert set(pool_pods(emulator)) - {name}
    assert pool.stats.hits == 1 and pool.stats.misses == 3


async def test_a_pod_of_one_step_is_never_given_another_steps_execution(
        emulator: Emulator, executor: KubernetesExecutor) -> None:
    pool = pool_of(executor)
    await pool.take(launch("e1"), "step-1")
    await pool.tick()
    (name,) = pool_pods(emulator)
    run(emulator, name)
    await pool.tick()
    other = PoolShape("step-2", "other", "other", "python:3.12-slim", IMAGE)
    assert await pool.take(launch("e2", other), "step-2") is None
    assert emulator.pod(name).raw["metadata"]["labels"][manifests.LABEL_MODE] == MODE_POOL


async def test_two_replicas_cannot_both_take_one_pod(
        emulator: Emulator, executor: KubernetesExecutor, k8s_config: KubernetesConfig
        ) -> None:
    first = pool_of(executor, owner="replica-a")
    second = pool_of(KubernetesExecutor(k8s_config), owner="replica-b", size=0)
    await first.take(launch("e1"), "step-1")
    await first.tick()
    (name,) = pool_pods(emulator)
    run(emulator, name)
    await first.tick()
    second.size = 1  # it serves, but keeps no pods of its own
    second._demand.clear()
    await second.tick()
    taken = await asyncio.gather(first.take(launch("e2"), "step-1"),
                                 second.take(launch("e3"), "step-1"))
    winners = [handle for handle in taken if handle is not None]
    assert len(winners) == 1
    assert first.stats.lost_races + second.stats.lost_races == 1
    owner = emulator.pod(name).raw["metadata"]["annotations"][manifests.ANNOTATION_EXECUTION]
    assert owner == winners[0]["execution_id"]


async def test_the_pool_scales_to_zero_when_its_step_is_idle(
        emulator: Emulator, executor: KubernetesExecutor) -> None:
    now = [0.0]
    pool = pool_of(executor, size=2, idle_s=60.0, clock=lambda: now[0])
    await pool.take(launch("e1"), "step-1")
    await pool.tick()
    assert len(pool_pods(emulator)) == 2
    now[0] = 59.0
    await pool.tick()
    assert len(pool_pods(emulator)) == 2
    now[0] = 61.0
    await pool.tick()
    assert pool_pods(emulator) == {}
    await pool.tick()
    assert pool_pods(emulator) == {}  # and it stays at zero


async def test_after_a_restart_idle_pods_are_adopted_and_ended_ones_deleted(
        emulator: Emulator, executor: KubernetesExecutor, k8s_config: KubernetesConfig
        ) -> None:
    before = pool_of(executor, size=2)
    await before.take(launch("e1"), "step-1")
    await before.tick()
    first, second = sorted(pool_pods(emulator))
    run(emulator, first)
    emulator.set_pod_status(second, {"phase": "Failed", "containerStatuses": [{
        "name": "runner", "state": {"terminated": {"exitCode": 3, "reason": "Error"}}}]})
    # another replica's idle pod: not this one's to adopt or delete
    emulator.add_pod("gm-pool-else-1", {manifests.LABEL_MANAGED_BY: "gristmill",
                                        manifests.LABEL_MODE: MODE_POOL},
                     {"phase": "Running"}, annotations={ANNOTATION_OWNER: "replica-b"})
    await before.shutdown()

    after = pool_of(KubernetesExecutor(k8s_config), size=1)  # same owner, same key
    await after.tick()
    assert set(pool_pods(emulator)) == {first, "gm-pool-else-1"}  # adopted; ended: deleted
    await after.tick()
    assert set(pool_pods(emulator)) == {first, "gm-pool-else-1"}  # not doubled
    handle = await after.take(launch("e2"), "step-1")
    assert handle is not None and handle["name"] == first


async def test_a_step_whose_pool_pods_fail_is_not_refilled_in_a_loop(
        emulator: Emulator, executor: KubernetesExecutor) -> None:
    now = [0.0]
    pool = pool_of(executor, idle_s=60.0, clock=lambda: now[0])
    await pool.take(launch("e1"), "step-1")
    await pool.tick()
    (name,) = pool_pods(emulator)
    emulator.set_pod_status(name, {"phase": "Failed", "containerStatuses": [{
        "name": "runner", "state": {"terminated": {"exitCode": 2, "reason": "Error"}}}]})
    await pool.tick()
    await pool.take(launch("e2"), "step-1")
    await pool.tick()
    assert pool_pods(emulator) == {}
    now[0] = 61.0
    await pool.take(launch("e3"), "step-1")
    await pool.tick()
    assert len(pool_pods(emulator)) == 1

