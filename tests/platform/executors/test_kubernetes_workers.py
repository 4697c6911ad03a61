"""Low-latency deployments on Kubernetes: the worker pool against the kmock emulator, with
a double of the cluster's controllers and kubelet that runs each worker pod as a real
``python -m gristmill.runtime serve`` process (worker_cluster.py).

The control service's side is real: the database (SQLite, migrated), the deployment
records, the executor and its manifests, the HTTP client. Ordering and concurrency are
proven from what the pool asks (start hooks) and what the workers answer, never from
durations; waits only bound how long a test may take to fail.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gristmill.runtime._control import ConfigError
from gristmill.runtime.serve import ServeConfig
from gristmill_platform.app import build_state
from gristmill_platform.db import migrate
from gristmill_platform.db.models.deployments import Deployment, DeploymentLog
from gristmill_platform.db.models.env_vars import EnvironmentVariable
from gristmill_platform.db.models.steps import Pipeline, Step
from gristmill_platform.deployments.worker_records import DeploymentLogWriter, deployment_records
from gristmill_platform.deps import transaction
from gristmill_platform.executors.base import LogLine
from gristmill_platform.executors.kubernetes import manifests
from gristmill_platform.executors.kubernetes.config import KubernetesConfig
from gristmill_platform.executors.kubernetes.executor import KubernetesExecutor
from gristmill_platform.executors.kubernetes.worker_pods import (
    Verdict,
    has_current,
    judge,
    read_pod,
    refusal,
)
from gristmill_platform.executors.kubernetes.workers import (
    KubernetesWorkerPool,
    lines_after,
    worker_secret,
)
from gristmill_platform.executors.workers import (
    ExecutionLost,
    WorkerAnswer,
    node_key,
    variant_key,
)
from gristmill_platform.settings import Settings
from gristmill_platform.state import AppState

from .conftest import NAMESPACE, NOW, Emulator
from .worker_cluster import WorkerCluster

SECRET_KEY = "environment-signing-key-for-tests-0123456789"
DEADLINE_S = 60.0
STEP = '''
import os
import time
from pathlib import Path

print("module imported", flush=True)
if os.environ.get("CRASH_AT_IMPORT"):
    raise RuntimeError("the step cannot start")


def entry(text: str) -> dict:
    if text.startswith("gate:"):  # holds its place until the gate file exists
        gate = Path(text[5:])
        for _ in range(60000):
            if gate.exists():
                break
            time.sleep(0.01)
    if text == "die":
        os.kill(os.getpid(), 9)
    return {"echo": text, "pod": os.environ.get("GRISTMILL_POD_NAME"), "pid": os.getpid()}
'''
OUTPUTS = [{"name": "echo", "data_type": "string"}, {"name": "pod", "data_type": "string"},
           {"name": "pid", "data_type": "number"}]


async def eventually(check: Callable[[], Awaitable[Any]], what: str) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while loop.time() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


# -- the control service's side ---------------------------------------------------------------


@pytest.fixture(scope="module")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "gristmill.sqlite3"
    migrate.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture()
async def state(tmp_path: Path, migrated_db: Path) -> AsyncIterator[AppState]:
    database = tmp_path / "gristmill.sqlite3"
    shutil.copy(migrated_db, database)
    app_state = build_state(Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{database}",
                                     secret_key=SECRET_KEY, public_url="http://control.test"))
    yield app_state
    await app_state.engine.dispose()


@pytest.fixture()
def step_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "step"
    folder.mkdir()
    (folder / "main.py").write_text(STEP)
    return folder


async def add_deployment(state: AppState, name: str = "score-api", *, parallel: int = 1,
                         gpu: int | None = None, language: str = "python:3.12-slim",
                         variables: dict[str, str] | None = None) -> str:
    deployment_id = str(uuid.uuid4())
    async with transaction(state) as session:
        step = Step(id=str(uuid.uuid4()), name=f"{name}-step", function_path="main.py",
                    function_name="entry", container_config={"language": language},
                    origin="local", status="ready", inputs=[], outputs=OUTPUTS)
        session.add(step)
        await session.flush()  # no relationships declared: the rows go in this order
        pipeline = Pipeline(id=str(uuid.uuid4()), name=f"{name}-pipeline", step_id=step.id)
        session.add(pipeline)
        await session.flush()
        session.add(Deployment(
            id=deployment_id, name=name, pipeline_id=pipeline.id, pipeline_name=pipeline.name,
            execution_rule="endpoint", mode="low_latency", status="creation_pending",
            enable_parallel_executions=parallel > 1, max_parallel_executions_per_pod=parallel,
            gpu_request=gpu, generation=1, timeout_s=180))
        for key, value in (variables or {}).items():
            session.add(EnvironmentVariable(name=key, value=value))
    return deployment_id


async def deployment_row(state: AppState, name: str = "score-api") -> Deployment:
    async with transaction(state) as session:
        row = (await session.execute(select(Deployment).where(Deployment.name == name))
               ).scalar_one()
        session.expunge(row)
        return row


async def deployment_logs(state: AppState, deployment_id: str) -> list[str]:
    async with transaction(state) as session:
        rows = await session.execute(select(DeploymentLog.message)
                                     .where(DeploymentLog.deployment_id == deployment_id)
                                     .order_by(DeploymentLog.timestamp, DeploymentLog.id))
        return [message for (message,) in rows]


class Starts:
    """Start hooks that record which pod each execution was given, and how many were
    started and not answered yet at each start."""

    def __init__(self) -> None:
        self.pods: list[str] = []
        self.active = 0
        self.most_active = 0

    async def run(self, pool: KubernetesWorkerPool, text: str,
                  deployment: str = "score-api") -> WorkerAnswer:
        execution_id = f"e-{uuid.uuid4().hex[:8]}"

        async def start(pod_id: str) -> dict[str, Any]:
            self.pods.append(pod_id)
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            return {"execution_id": execution_id, "step_name": "s",
                    "function_path": "main.py", "function_name": "entry",
                    "inputs": {"text": text}, "file_inputs": [], "outputs": OUTPUTS,
                    "sdk_token": "", "env": {}}

        try:
            answer = await pool.run(deployment, start)
        finally:
            self.active -= 1
        assert answer is not None
        return answer


# -- the cluster's side -------------------------------------------------------------------------

Clock = list[datetime]


@pytest.fixture()
def clock() -> Clock:
    return [NOW + timedelta(seconds=1)]


@pytest.fixture()
async def cluster(emulator: Emulator, step_dir: Path) -> AsyncIterator[WorkerCluster]:
    double = WorkerCluster(emulator, NAMESPACE, step_dir, missing_images={
        "registry.example/acme/gristmill-runtime/python:3.11-slim"},
        unschedulable_since=NOW.strftime("%Y-%m-%dT%H:%M:%SZ"))
    double.start()
    yield double
    await double.stop()
    assert not double.errors


def make_pool(state: AppState, executor: KubernetesExecutor, cluster: WorkerCluster,
              clock: Clock) -> KubernetesWorkerPool:
    return KubernetesWorkerPool(state.settings, state.transactions, deployment_records,
                                DeploymentLogWriter(state.transactions), executor,
                                address=cluster.address,
                                clock=lambda: clock[0], refresh_s=0.05, log_copy_s=0.1)


@pytest.fixture()
async def pool(state: AppState, executor: KubernetesExecutor, cluster: WorkerCluster,
               clock: Clock) -> AsyncIterator[KubernetesWorkerPool]:
    worker_pool = make_pool(state, executor, cluster, clock)
    yield worker_pool
    await worker_pool.shutdown()


def worker_deployment(emulator: Emulator, name: str = "score-api") -> Any:
    return emulator.objects["apps/v1/deployments", NAMESPACE, manifests.worker_name(name)]


# -- up, run, logs ------------------------------------------------------------------------------


async def test_ensure_brings_the_worker_up_and_runs_executions_through_it(
        state: AppState, pool: KubernetesWorkerPool, cluster: WorkerCluster,
        emulator: Emulator) -> None:
    deployment_id = await add_deployment(state, variables={"GREETING": "hello"})

    await pool.ensure("score-api", wait_s=DEADLINE_S)

    row = await deployment_row(state)
    assert (row.status, row.status_reason) == ("up", None)
    [pod] = cluster.names()
    assert pool.pods("score-api") == [{"pod_id": pod, "status": "running"}]
    template = worker_deployment(emulator)["spec"]["template"]
    env = {item["name"]: item.get("value") for item in template["spec"]["containers"][0]["env"]}
    assert env["GREETING"] == "hello"
    assert env["GRISTMILL_WORKER_SECRET"] == worker_secret(SECRET_KEY, deployment_id)
    assert env["GRISTMILL_WORKER_HOST"] == "0.0.0.0"
    assert env["GRISTMILL_ENVIRONMENT_URL"] == "http://control.test"

    starts = Starts()
    first = await starts.run(pool, "hello")
    second = await starts.run(pool, "again")

    assert first.report["status"] == "succeeded", first.report
    assert first.report["outputs"]["echo"] == "hello"
    # the pod the pool named is the one that ran it (its name from the downward API)
    assert first.pod_id == second.pod_id == first.report["outputs"]["pod"] == pod
    assert starts.pods == [pod, pod]
    assert first.report["outputs"]["pid"] == second.report["outputs"]["pid"]  # warm


async def test_worker_output_lands_once_in_the_deployment_logs(
        state: AppState, pool: KubernetesWorkerPool, executor: KubernetesExecutor,
        cluster: WorkerCluster, clock: Clock) -> None:
    deployment_id = await add_deployment(state)
    await pool.ensure("score-api", wait_s=DEADLINE_S)

    async def imported() -> bool:
        await pool.copy_logs("score-api")
        return "module imported" in await deployment_logs(state, deployment_id)

    await eventually(imported, "the module's output in the deployment logs")
    for _ in range(3):
        await pool.copy_logs("score-api")
    logs = await deployment_logs(state, deployment_id)
    assert logs.count("module imported") == 1
    assert logs.count("Step module imported successfully; the worker is ready") == 1
    assert any(line.startswith(f"Pod {cluster.names()[0]} created") for line in logs)

    # Another control service (or this one restarted) copies from where the rows stop.
    other = make_pool(state, executor, cluster, clock)
    try:
        await other.resume()
        await eventually(lambda: _running(other), "the other pool to adopt the pod")
        await other.copy_logs("score-api")
        assert (await deployment_logs(state, deployment_id)).count("module imported") == 1
    finally:
        await other.shutdown()


async def _running(pool: KubernetesWorkerPool) -> bool:
    return [pod["status"] for pod in pool.pods("score-api")] == ["running"]


def test_log_copies_skip_what_was_copied_even_at_the_same_timestamp() -> None:
    t1 = datetime(2026, 11, 23, 12, 0, 1, tzinfo=timezone.utc)
    t2 = t1 + timedelta(microseconds=1)
    lines = [LogLine(t1, "stdout", "a"), LogLine(t2, "stdout", "b"), LogLine(t2, "stdout", "c")]

    new, mark = lines_after(lines[:2], None)
    assert [line.message for line in new] == ["a", "b"] and mark == (t2, 1)
    new, mark = lines_after(lines, mark)
    assert [line.message for line in new] == ["c"] and mark == (t2, 2)
    assert lines_after(lines, mark) == ([], (t2, 2))
    assert lines_after([], mark) == ([], mark)


# -- parallelism ------------------------------------------------------------------------------


async def test_executions_beyond_the_parallelism_wait_for_a_place(
        state: AppState, pool: KubernetesWorkerPool, tmp_path: Path) -> None:
    await add_deployment(state, parallel=2)
    await pool.ensure("score-api", wait_s=DEADLINE_S)
    gate = tmp_path / "gate"
    starts = Starts()

    runs = [asyncio.create_task(starts.run(pool, f"gate:{gate}")) for _ in range(5)]

    async def two_started() -> bool:
        return len(starts.pods) >= 2

    await eventually(two_started, "two executions to start")
    # The worker holds them; the pool must not have given a third one its place.
    await pool.refresh("score-api")
    assert len(starts.pods) == 2 and not any(run.done() for run in runs)
    gate.write_text("open")
    answers = await asyncio.gather(*runs)

    assert [a.report["status"] for a in answers] == ["succeeded"] * 5
    assert len(starts.pods) == 5
    assert starts.most_active == 2  # never more than max_parallel_executions_per_pod
    assert len({a.report["outputs"]["pid"] for a in answers}) == 1


# -- failures mid-execution ---------------------------------------------------------------------


async def test_a_worker_crashing_mid_execution_loses_it_with_the_reason(
        state: AppState, pool: KubernetesWorkerPool, cluster: WorkerCluster) -> None:
    await add_deployment(state)
    await pool.ensure("score-api", wait_s=DEADLINE_S)
    [pod] = cluster.names()
    starts = Starts()
    before = (await starts.run(pool, "warm")).report["outputs"]["pid"]

    with pytest.raises(ExecutionLost) as lost:
        await starts.run(pool, "die")

    assert "crashed" in lost.value.reason and "137" in lost.value.reason, lost.value.reason
    assert "SIGKILL" in lost.value.reason
    # the kubelet restarted the container in place; the next execution waits for it
    after = await starts.run(pool, "after")
    assert after.report["status"] == "succeeded"
    assert after.pod_id == pod and after.report["outputs"]["pid"] != before
    assert (await deployment_row(state)).status == "up"


async def test_a_pod_removed_mid_execution_loses_it_and_a_new_pod_takes_the_next(
        state: AppState, pool: KubernetesWorkerPool, cluster: WorkerCluster,
        tmp_path: Path) -> None:
    await add_deployment(state)
    await pool.ensure("score-api", wait_s=DEADLINE_S)
    [old] = cluster.names()
    starts = Starts()
    running = asyncio.create_task(starts.run(pool, f"gate:{tmp_path / 'never'}"))

    async def started() -> bool:
        return bool(starts.pods)

    await eventually(started, "the execution to start")
    cluster.evict(old)

    with pytest.raises(ExecutionLost) as lost:
        await running
    assert f"pod {old} was removed while the execution ran" in lost.value.reason
    answer = await starts.run(pool, "next")
    assert answer.report["status"] == "succeeded"
    assert answer.pod_id != old and answer.pod_id in cluster.names()


async def test_a_replaced_pod_takes_nothing_more_and_a_new_pod_takes_the_next(
        state: AppState, pool: KubernetesWorkerPool, cluster: WorkerCluster,
        executor: KubernetesExecutor, tmp_path: Path) -> None:
    # two places per pod: the replaced pod has a free one, and must not get the next
    deployment_id = await add_deployment(state, parallel=2)
    await pool.ensure("score-api", wait_s=DEADLINE_S)
    [old] = cluster.names()
    starts = Starts()
    abandoned = asyncio.create_task(starts.run(pool, f"gate:{tmp_path / 'never'}"))

    async def started() -> bool:
        return bool(starts.pods)

    await eventually(started, "the execution to start")
    # another deployment's name: that pod is not its to delete
    await executor.delete_worker_pod("other-api", old)
    assert cluster.names() == [old]

    pool.replace("score-api", old, "execution e-1 exceeded the deployment's execution "
                 "timeout (1 s)")
    pool.replace("score-api", old, "said once")  # replaced already: nothing more
    abandoned.cancel()  # what the dispatcher does with the abandoned request

    answer = await starts.run(pool, "next")
    assert answer.report["status"] == "succeeded"
    assert answer.pod_id != old and answer.pod_id in cluster.names()
    assert old not in cluster.names()  # deleted; its ReplicaSet made the new one
    pool.replace("score-api", "no-such-pod", "nothing to replace")  # not one of its pods
    assert (await starts.run(pool, "again")).pod_id == answer.pod_id
    await pool.copy_logs("score-api")
    messages = await deployment_logs(state, deployment_id)
    assert [m for m in messages if "is replaced" in m] == [
        f"Pod {old} is replaced: execution e-1 exceeded the deployment's execution "
        "timeout (1 s)"]


# -- rollout and stop ---------------------------------------------------------------------------


async def test_an_update_rolls_the_pods_and_the_old_one_finishes_its_execution(
        state: AppState, pool: KubernetesWorkerPool, cluster: WorkerCluster,
        emulator: Emulator, tmp_path: Path) -> None:
    # two places per pod: the old pod could take the next execution, and must not
    await add_deployment(state, parallel=2)
    await pool.ensure("score-api", wait_s=DEADLINE_S)
    [old] = cluster.names()
    gate = tmp_path / "gate"
    starts = Starts()
    on_old = asyncio.create_task(starts.run(pool, f"gate:{gate}"))

    async def started() -> bool:
        return bool(starts.pods)

    await eventually(started, "the execution on the old pod to start")
    async with transaction(state) as session:  # what update_deployment does
        row = (await session.execute(select(Deployment))).scalar_one()
        row.generation, row.status = 2, "creation_pending"
    cluster.hold_rollouts = True  # both pods serve for now

    await pool.ensure("score-api", wait_s=DEADLINE_S, restart=True)

    template = worker_deployment(emulator)["spec"]["template"]
    assert template["metadata"]["annotations"]["gristmill.io/generation"] == "2"
    assert (await deployment_row(state)).status == "up"
    new = [name for name in cluster.names() if name != old]
    assert len(new) == 1
    assert sorted(p["status"] for p in pool.pods("score-api")) == ["running", "running"]
    answer = await starts.run(pool, "on the new pod")
    assert answer.pod_id == new[0]  # the old pod, still ready, takes no new execution

    cluster.hold_rollouts = False  # the controller deletes the old pod: SIGTERM

    async def old_stopping() -> bool:
        await pool.refresh("score-api")
        return {p["pod_id"]: p["status"] for p in pool.pods("score-api")}.get(old) == "stopped"

    await eventually(old_stopping, "the old pod to be stopping")
    assert not on_old.done()  # stopping, it still runs its execution
    gate.write_text("open")
    finished = await on_old
    assert finished.pod_id == old and finished.report["status"] == "succeeded"

    async def old_gone() -> bool:
        await pool.refresh("score-api")
        return pool.pods("score-api") == [{"pod_id": new[0], "status": "running"}]

    await eventually(old_gone, "the old pod to exit once drained")


async def test_stop_deletes_the_deployment_and_service(
        state: AppState, pool: KubernetesWorkerPool, cluster: WorkerCluster,
        emulator: Emulator) -> None:
    await add_deployment(state)
    await pool.ensure("score-api", wait_s=DEADLINE_S)
    name = manifests.worker_name("score-api")
    assert emulator.has("apps/v1/deployments", name) and emulator.has("v1/services", name)
    async with transaction(state) as session:  # the route deletes the record first
        await session.delete((await session.execute(select(Deployment))).scalar_one())

    await pool.stop("score-api")

    assert not emulator.has("apps/v1/deployments", name)
    assert not emulator.has("v1/services", name)
    assert pool.pods("score-api") == []
    with pytest.raises(ExecutionLost, match="not running"):
        await Starts().run(pool, "too late")

    async def no_pods() -> bool:
        return not cluster.names()

    await eventually(no_pods, "the pods to go with their Deployment")


async def test_a_deployment_deleted_before_a_restarted_service_adopted_its_node_pools(
        state: AppState, executor: KubernetesExecutor, cluster: WorkerCluster,
        emulator: Emulator, clock: Clock) -> None:
    """A graph deployment's node pools outlive the process that applied them; deleted
    before the next process tracks them, its delete finds them by label."""
    await add_deployment(state)
    key = node_key("score-api", "score-api-step")
    first = make_pool(state, executor, cluster, clock)
    await first.ensure(key, wait_s=DEADLINE_S)
    await first.shutdown()  # the workers stay in the cluster
    name = manifests.worker_name(key)
    assert emulator.has("apps/v1/deployments", name) and emulator.has("v1/services", name)
    labels = worker_deployment(emulator, key)["metadata"]["labels"]
    assert labels[manifests.LABEL_DEPLOYMENT_NAME] == "score-api"

    second = make_pool(state, executor, cluster, clock)  # tracks nothing yet
    try:
        async with transaction(state) as session:  # the route deletes the record first
            await session.delete((await session.execute(select(Deployment))).scalar_one())
        await second.stop("score-api")
    finally:
        await second.shutdown()

    assert not emulator.has("apps/v1/deployments", name)
    assert not emulator.has("v1/services", name)
    assert not emulator.has("policy/v1/poddisruptionbudgets", name)


async def test_shutdown_leaves_the_workers_and_the_next_service_adopts_them(
        state: AppState, executor: KubernetesExecutor, cluster: WorkerCluster,
        emulator: Emulator, clock: Clock) -> None:
    await add_deployment(state)
    first = make_pool(state, executor, cluster, clock)
    await first.ensure("score-api", wait_s=DEADLINE_S)
    pid = (await Starts().run(first, "before")).report["outputs"]["pid"]
    await first.shutdown()
    writes = len(emulator.sent("POST")) + len(emulator.sent("PATCH")) + len(
        emulator.sent("DELETE"))

    second = make_pool(state, executor, cluster, clock)
    try:
        await second.resume()
        answer = await Starts().run(second, "after")
    finally:
        await second.shutdown()

    assert answer.report["outputs"]["pid"] == pid  # the same warm process
    assert len(emulator.sent("POST")) + len(emulator.sent("PATCH")) + len(
        emulator.sent("DELETE")) == writes  # nothing applied or deleted again


# -- variants (docs/rollout.md) -----------------------------------------------------------------


async def add_variant(state: AppState, pipeline_name: str) -> None:
    """Another pipeline a traffic rule may send the deployment's calls to."""
    async with transaction(state) as session:
        step = Step(id=str(uuid.uuid4()), name=f"{pipeline_name}-step",
                    function_path="main.py", function_name="entry",
                    container_config={"language": "python:3.12-slim"}, origin="local",
                    status="ready", inputs=[], outputs=OUTPUTS)
        session.add(step)
        await session.flush()
        session.add(Pipeline(id=str(uuid.uuid4()), name=pipeline_name, step_id=step.id))


async def test_a_variant_pipeline_gets_warm_workers_of_its_own(
        state: AppState, pool: KubernetesWorkerPool, executor: KubernetesExecutor,
        cluster: WorkerCluster, emulator: Emulator, clock: Clock) -> None:
    await add_deployment(state)
    await add_variant(state, "challenger")
    key = variant_key("score-api", "challenger")
    await pool.ensure("score-api", wait_s=DEADLINE_S)
    await pool.ensure(key, wait_s=DEADLINE_S)

    # a Deployment of its own, running the variant's step, named after both
    variant = emulator.objects["apps/v1/deployments", NAMESPACE, manifests.worker_name(key)]
    labels = variant["spec"]["template"]["metadata"]["labels"]
    assert (labels[manifests.LABEL_PIPELINE], labels[manifests.LABEL_STEP]) == (
        "challenger", "challenger-step")
    assert manifests.worker_name(key) != manifests.worker_name("score-api")
    [own_pod] = pool.pods("score-api")
    [variant_pod] = pool.pods(key)
    assert variant_pod["status"] == "running" and variant_pod["pod_id"] != own_pod["pod_id"]

    starts = Starts()
    answer = await starts.run(pool, "to the challenger", deployment=key)
    assert answer.report["status"] == "succeeded", answer.report
    assert answer.pod_id == answer.report["outputs"]["pod"] == variant_pod["pod_id"]
    own = await starts.run(pool, "to the champion")
    assert own.pod_id == own_pod["pod_id"]
    # the variant's workers say nothing of the deployment's status
    assert (await deployment_row(state)).status == "up"

    # a replica that never brought it up serves it too (adopts it at its first call)
    second = make_pool(state, executor, cluster, clock)
    try:
        adopted = await starts.run(second, "through another replica", deployment=key)
    finally:
        await second.shutdown()
    assert adopted.pod_id == variant_pod["pod_id"]

    async with transaction(state) as session:  # the deployment goes, its variants with it
        await session.delete((await session.execute(select(Deployment))).scalar_one())
    await pool.stop("score-api")
    assert not emulator.has("apps/v1/deployments", manifests.worker_name(key))
    assert not emulator.has("apps/v1/deployments", manifests.worker_name("score-api"))
    with pytest.raises(ExecutionLost, match="not running"):
        await starts.run(pool, "too late", deployment=key)


async def recreate_variant(state: AppState, pipeline_name: str) -> None:
    """The variant pipeline deleted and created again under its name (new code): new
    pipeline and step ids, the same names."""
    async with transaction(state) as session:
        pipeline = (await session.execute(select(Pipeline).where(
            Pipeline.name == pipeline_name))).scalar_one()
        step = await session.get(Step, pipeline.step_id)
        await session.delete(pipeline)
        await session.flush()
        await session.delete(step)
    await add_variant(state, pipeline_name)


async def test_a_recreated_variant_rolls_and_only_its_new_pod_takes_calls(
        state: AppState, pool: KubernetesWorkerPool, cluster: WorkerCluster,
        emulator: Emulator) -> None:
    await add_deployment(state)
    await add_variant(state, "challenger")
    key = variant_key("score-api", "challenger")
    await pool.ensure(key, wait_s=DEADLINE_S)
    [old] = cluster.names()
    before = worker_deployment(emulator, key)["spec"]["template"]["metadata"]["annotations"][
        manifests.ANNOTATION_GENERATION]
    await recreate_variant(state, "challenger")
    cluster.hold_rollouts = True  # the old pod still serves, as mid-rollout

    await pool.ensure(key, wait_s=DEADLINE_S, restart=True)

    after = worker_deployment(emulator, key)["spec"]["template"]["metadata"]["annotations"][
        manifests.ANNOTATION_GENERATION]
    assert after != before  # its own generation: the deployment's did not change
    assert (await deployment_row(state)).generation == 1
    new = [name for name in cluster.names() if name != old]
    assert len(new) == 1  # the Deployment rolled
    assert sorted(p["status"] for p in pool.pods(key)) == ["running", "running"]
    starts = Starts()
    for text in ("one", "two", "three"):  # the old pod, still ready, takes none of them
        answer = await starts.run(pool, text, deployment=key)
        assert answer.pod_id == new[0]


def priority_of(emulator: Emulator, key: str) -> tuple[str | None, bool]:
    """The class the Deployment gives its pods, and whether it says it is shadow-only."""
    deployment = worker_deployment(emulator, key)
    return (deployment["spec"]["template"]["spec"].get("priorityClassName"),
            manifests.ANNOTATION_SHADOW_ONLY in deployment["metadata"]["annotations"])


async def test_shadow_only_workers_get_the_shadow_class_until_promoted(
        state: AppState, pool: KubernetesWorkerPool, cluster: WorkerCluster,
        emulator: Emulator) -> None:
    """docs/rollout.md: a pipeline that only gets shadow copies runs at the shadow
    workers' PriorityClass; once a rule makes it answer calls its pods roll to the
    warm workers' class, and later shadow copies do not lower them again."""
    deployment_id = await add_deployment(state)
    await add_variant(state, "challenger")
    key = variant_key("score-api", "challenger")

    await pool.ensure(key, wait_s=DEADLINE_S, background=True)

    assert priority_of(emulator, key) == ("gristmill-shadow-worker", True)
    [shadow_pod] = cluster.names()
    raw = emulator.objects["v1/pods", NAMESPACE, shadow_pod]
    assert raw["spec"]["priorityClassName"] == "gristmill-shadow-worker"
    assert raw["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "100m"
    assert (await Starts().run(pool, "a copy", deployment=key)).pod_id == shadow_pod

    # promotion (low_latency.py warm: restart, background no more): the pods roll
    await pool.ensure(key, wait_s=DEADLINE_S, restart=True)

    assert priority_of(emulator, key) == ("gristmill-warm-worker", False)

    async def rolled() -> bool:
        await pool.refresh(key)
        return [p["pod_id"] for p in pool.pods(key)] == [
            name for name in cluster.names() if name != shadow_pod]

    await eventually(rolled, "the shadow pod to be replaced by a normal one")
    [normal_pod] = cluster.names()
    raw = emulator.objects["v1/pods", NAMESPACE, normal_pod]
    assert raw["spec"]["priorityClassName"] == "gristmill-warm-worker"
    assert raw["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "500m"
    assert (await Starts().run(pool, "a call", deployment=key)).pod_id == normal_pod

    patches = len(emulator.sent("PATCH", "deployments"))
    await pool.ensure(key, wait_s=DEADLINE_S, background=True)  # a later shadow copy
    assert priority_of(emulator, key) == ("gristmill-warm-worker", False)
    assert len(emulator.sent("PATCH", "deployments")) == patches  # not rolled back down
    await pool.copy_logs(key)
    applied = [line for line in await deployment_logs(state, deployment_id)
               if "applied" in line]
    generation = worker_deployment(emulator, key)["metadata"]["annotations"][
        manifests.ANNOTATION_GENERATION]
    assert applied[0].endswith(
        f"(generation {generation}, PriorityClass gristmill-shadow-worker, shadow copies only)")
    assert applied[1].endswith(", PriorityClass gristmill-warm-worker)")


async def test_a_restarted_service_keeps_each_variant_at_its_class(
        state: AppState, executor: KubernetesExecutor, cluster: WorkerCluster,
        emulator: Emulator, clock: Clock) -> None:
    """The dispatcher of a restarted control service (or another replica) remembers
    nothing: its first shadow copy asks for background workers of each pipeline. A
    pipeline that answers calls keeps its class, one that only gets copies keeps the
    shadow class; neither is applied again, so no pod rolls."""
    await add_deployment(state)
    await add_variant(state, "shadowed")
    await add_variant(state, "answering")
    shadowed = variant_key("score-api", "shadowed")
    answering = variant_key("score-api", "answering")
    first = make_pool(state, executor, cluster, clock)
    try:
        await first.ensure(shadowed, wait_s=DEADLINE_S, background=True)
        await first.ensure(answering, wait_s=DEADLINE_S)
    finally:
        await first.shutdown()
    pods = cluster.names()
    patches = len(emulator.sent("PATCH", "deployments"))

    second = make_pool(state, executor, cluster, clock)
    try:
        # adopted by a call, then asked for by the new dispatcher's first copies
        await Starts().run(second, "adopted", deployment=shadowed)
        await second.ensure(shadowed, wait_s=DEADLINE_S, background=True)
        await second.ensure(answering, wait_s=DEADLINE_S, background=True)
        assert priority_of(emulator, shadowed) == ("gristmill-shadow-worker", True)
        assert priority_of(emulator, answering) == ("gristmill-warm-worker", False)
        assert len(emulator.sent("PATCH", "deployments")) == patches
        assert cluster.names() == pods
        # and a call it routes there promotes the shadow one, as before the restart
        await second.ensure(shadowed, wait_s=DEADLINE_S, restart=True)
        assert priority_of(emulator, shadowed) == ("gristmill-warm-worker", False)
    finally:
        await second.shutdown()


async def test_without_a_shadow_class_shadow_workers_get_the_cluster_default(
        state: AppState, k8s_config: KubernetesConfig, cluster: WorkerCluster,
        emulator: Emulator, clock: Clock) -> None:
    cfg = dataclasses.replace(k8s_config, shadow_worker_priority_class=None)
    pool = make_pool(state, KubernetesExecutor(cfg, clock=lambda: clock[0]), cluster, clock)
    await add_deployment(state)
    await add_variant(state, "challenger")
    key = variant_key("score-api", "challenger")
    try:
        await pool.ensure(key, wait_s=DEADLINE_S, background=True)
    finally:
        await pool.shutdown()

    assert priority_of(emulator, key) == (None, True)  # still known as shadow-only


async def test_stop_deletes_the_variant_workers_another_replica_brought_up(
        state: AppState, executor: KubernetesExecutor, cluster: WorkerCluster,
        emulator: Emulator, clock: Clock) -> None:
    deployment_id = await add_deployment(state)
    await add_deployment(state, "score-api-2")  # a neighbour whose workers must stay
    await add_variant(state, "challenger")
    key = variant_key("score-api", "challenger")
    neighbour_key = variant_key("score-api-2", "challenger")
    first = make_pool(state, executor, cluster, clock)
    second = make_pool(state, executor, cluster, clock)
    try:
        await first.ensure("score-api", wait_s=DEADLINE_S)
        await second.ensure(key, wait_s=DEADLINE_S)  # only the second replica knows it
        await second.ensure("score-api-2", wait_s=DEADLINE_S)
        await second.ensure(neighbour_key, wait_s=DEADLINE_S)
        assert key not in first.deployment_names()
        variant = worker_deployment(emulator, key)
        labels = variant["metadata"]["labels"]
        assert labels[manifests.LABEL_DEPLOYMENT_NAME] == "score-api"
        assert labels[manifests.LABEL_DEPLOYMENT_ID] == deployment_id
        # not on the pods: that would roll every existing worker on upgrade
        assert manifests.LABEL_DEPLOYMENT_NAME not in variant["spec"]["template"][
            "metadata"]["labels"]

        async with transaction(state) as session:  # the route deletes the record first
            await session.delete((await session.execute(select(Deployment).where(
                Deployment.name == "score-api"))).scalar_one())
        await first.stop("score-api")

        for name in ("score-api", key):
            for resource in ("apps/v1/deployments", "v1/services",
                             "policy/v1/poddisruptionbudgets"):
                assert not emulator.has(resource, manifests.worker_name(name)), (resource, name)
        for name in ("score-api-2", neighbour_key):  # never another deployment's
            assert emulator.has("apps/v1/deployments", manifests.worker_name(name))

        async def only_the_neighbours_pods() -> bool:
            return cluster.names() == sorted(
                cluster.names(manifests.worker_name("score-api-2"))
                + cluster.names(manifests.worker_name(neighbour_key)))

        await eventually(only_the_neighbours_pods, "the deleted deployment's pods to go")
    finally:
        await first.shutdown()
        await second.shutdown()


# -- creation failures ----------------------------------------------------------------------------


async def test_a_gpu_worker_no_node_can_take_fails_creation_after_the_timeout(
        state: AppState, pool: KubernetesWorkerPool, emulator: Emulator,
        clock: Clock) -> None:
    await add_deployment(state, gpu=1)
    await pool.ensure("score-api", wait_s=0)

    pod_spec = worker_deployment(emulator)["spec"]["template"]["spec"]
    assert pod_spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod_spec["nodeSelector"] == {"gristmill.io/pool": "gpu"}
    assert pod_spec["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]

    async def unschedulable() -> bool:
        await pool.refresh("score-api")
        return any(pod.problem for pod in pool.cached_pods("score-api"))

    await eventually(unschedulable, "the pod to wait for a GPU node")
    assert [pod["status"] for pod in pool.pods("score-api")] == ["starting"]
    assert (await deployment_row(state)).status == "creation_pending"  # a node may come

    clock[0] = NOW + timedelta(seconds=601)  # k8s_config: unschedulable_timeout_s=600
    await pool.refresh("score-api")

    row = await deployment_row(state)
    assert row.status == "creation_failed"
    assert row.status_reason is not None
    assert "no node with a free GPU is available" in row.status_reason
    assert "Waited 10 min" in row.status_reason
    with pytest.raises(ExecutionLost, match="no node with a free GPU"):
        await Starts().run(pool, "no gpu")


async def test_worker_pods_refused_at_admission_fail_creation_with_the_reason(
        state: AppState, pool: KubernetesWorkerPool, cluster: WorkerCluster) -> None:
    """No pod exists to tell why: the Deployment's ReplicaFailure does (a quota, here)."""
    quota = ('pods "gm-ll-score-api-1" is forbidden: exceeded quota: gristmill-workers, '
             "requested: requests.cpu=4, used: requests.cpu=30, limited: requests.cpu=32")
    cluster.refuse_pods = quota
    await add_deployment(state)
    await pool.ensure("score-api", wait_s=DEADLINE_S)

    row = await deployment_row(state)
    assert row.status == "creation_failed"
    assert row.status_reason == f"Kubernetes did not create the worker pod: {quota}"
    assert pool.pods("score-api") == []
    with pytest.raises(ExecutionLost, match="exceeded quota"):
        await Starts().run(pool, "refused")


async def test_a_cuda_language_alone_asks_for_a_gpu(
        state: AppState, pool: KubernetesWorkerPool, emulator: Emulator) -> None:
    await add_deployment(state, language="python-cuda:3.12-12.4")
    await pool.ensure("score-api", wait_s=0)

    pod_spec = worker_deployment(emulator)["spec"]["template"]["spec"]
    assert pod_spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod_spec["nodeSelector"] == {"gristmill.io/pool": "gpu"}
    assert "gristmill-runtime/python-cuda:3.12-12.4" in pod_spec["containers"][0]["image"]


async def test_a_step_that_cannot_be_imported_fails_creation_with_the_error(
        state: AppState, pool: KubernetesWorkerPool) -> None:
    deployment_id = await add_deployment(state, variables={"CRASH_AT_IMPORT": "1"})

    await pool.ensure("score-api", wait_s=DEADLINE_S)

    row = await deployment_row(state)
    assert row.status == "creation_failed"
    assert row.status_reason == ("Importing the step module failed: "
                                 "RuntimeError: the step cannot start")
    with pytest.raises(ExecutionLost, match="the step cannot start"):
        await Starts().run(pool, "never")

    async def traceback_copied() -> bool:
        await pool.copy_logs("score-api")
        return "RuntimeError: the step cannot start" in await deployment_logs(
            state, deployment_id)

    await eventually(traceback_copied, "the import traceback in the deployment logs")


async def test_an_image_that_cannot_be_pulled_fails_creation(
        state: AppState, pool: KubernetesWorkerPool) -> None:
    await add_deployment(state, language="python:3.11-slim")  # the double lacks that image

    await pool.ensure("score-api", wait_s=DEADLINE_S)

    row = await deployment_row(state)
    assert row.status == "creation_failed"
    assert row.status_reason == ("The worker image registry.example/acme/gristmill-runtime/"
                                 "python:3.11-slim could not be pulled (ImagePullBackOff).")
    assert [pod["status"] for pod in pool.pods("score-api")] == ["failed"]


# -- pure parts -----------------------------------------------------------------------------------


def _pod(name: str, generation: int, **status: Any) -> Any:
    return read_pod({"metadata": {"name": name, "annotations": {
        "gristmill.io/generation": str(generation)}}, "spec": {}, "status": status})


READY = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
CRASH_LOOP = {"phase": "Running", "containerStatuses": [{
    "name": "runner", "restartCount": 5,
    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
    "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}


def test_judge_counts_only_the_current_generation() -> None:
    old_ready, new_starting = _pod("a", 1, **READY), _pod("b", 2, phase="Pending")
    assert judge([old_ready, new_starting], 2, was_up=False, now=NOW,
                 unschedulable_timeout_s=600) is None
    assert judge([old_ready, _pod("b", 2, **READY)], 2, was_up=False, now=NOW,
                 unschedulable_timeout_s=600) == Verdict("up")


def test_judge_a_worker_that_was_up_retries_then_gives_up() -> None:
    restarting = _pod("a", 1, phase="Running", containerStatuses=[{
        "name": "runner", "restartCount": 1, "state": {"running": {}},
        "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}])
    verdict = judge([restarting], 1, was_up=True, now=NOW, unschedulable_timeout_s=600)
    assert verdict is not None and verdict.status == "down_retrying"
    assert verdict.reason is not None and "ran out of memory" in verdict.reason
    verdict = judge([_pod("a", 1, **CRASH_LOOP)], 1, was_up=True, now=NOW,
                    unschedulable_timeout_s=600)
    assert verdict is not None and verdict.status == "creation_failed"
    assert verdict.reason is not None and verdict.reason.startswith("The worker keeps failing")


def test_worker_secret_is_per_deployment_and_stable() -> None:
    one = worker_secret(SECRET_KEY, "d-1")
    assert one == worker_secret(SECRET_KEY, "d-1") and len(one) == 64
    assert one != worker_secret(SECRET_KEY, "d-2")
    assert one != worker_secret("another-environment-key-0123456789", "d-1")


def test_the_worker_readiness_probe_carries_the_secret_and_the_pod_drains() -> None:
    from .test_kubernetes_executor import worker

    spec = worker(env={"GRISTMILL_WORKER_SECRET": "s" * 32, "GRISTMILL_WORKER_DRAIN_S": "180"})
    deployment = manifests.worker_deployment(spec, KubernetesConfig())
    pod_spec = deployment["spec"]["template"]["spec"]
    probe = pod_spec["containers"][0]["readinessProbe"]["httpGet"]
    assert probe["httpHeaders"] == [{"name": "X-Gristmill-Worker-Secret", "value": "s" * 32}]
    # the kubelet waits for the drain before its SIGKILL
    assert pod_spec["terminationGracePeriodSeconds"] == 190


def test_serve_listens_where_it_is_told() -> None:
    base = {"GRISTMILL_WORKER_PORT": "8080", "GRISTMILL_WORKER_SECRET": "s" * 32,
            "GRISTMILL_FUNCTION_PATH": "main.py", "GRISTMILL_FUNCTION_NAME": "entry",
            "GRISTMILL_STEP_DIR": "/", "GRISTMILL_IO_DIR": "/tmp"}
    assert ServeConfig.from_env(base).host == "127.0.0.1"
    assert ServeConfig.from_env({**base, "GRISTMILL_WORKER_HOST": "0.0.0.0"}).host == "0.0.0.0"
    assert ServeConfig.from_env({**base, "GRISTMILL_WORKER_DRAIN_S": "30"}).drain_s == 30
    with pytest.raises(ConfigError):
        ServeConfig.from_env({**base, "GRISTMILL_WORKER_HOST": "all of them"})


def test_the_pool_is_chosen_by_the_executor_setting(tmp_path: Path) -> None:
    from gristmill_platform.app import warm_workers
    from gristmill_platform.executors.local_workers import LocalWorkerPool
    from gristmill_platform.steps.builds import StepBuilds
    from gristmill_platform.steps.environments import EnvironmentBuilder

    local = build_state(Settings(data_dir=tmp_path / "a", secret_key=SECRET_KEY))
    # the step builds of a local environment (the Kubernetes pool reads none)
    builds = StepBuilds(local.settings, local.transactions, local.datastore,
                        EnvironmentBuilder(tmp_path / "venvs", tmp_path / "runtime"))
    assert isinstance(warm_workers(local, builds).inner, LocalWorkerPool)
    kubernetes = build_state(Settings(data_dir=tmp_path / "b", secret_key=SECRET_KEY,
                                      executor="kubernetes", registry="registry.example/acme",
                                      kubernetes_namespace="gm-test"))
    pool = warm_workers(kubernetes, builds).inner  # wrapped in GraphWorkerPools
    assert isinstance(pool, KubernetesWorkerPool)
    assert pool.executor.cfg.namespace == "gm-test"
    json.dumps(pool.pods("nothing"))  # an unknown deployment has no pods


def test_judge_reads_why_no_pod_was_created() -> None:
    refused = {"status": {"conditions": [
        {"type": "Available", "status": "False"},
        {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
         "message": "exceeded quota"}]}}
    reason = refusal(refused)
    assert reason == "Kubernetes did not create the worker pod: exceeded quota"
    stalled = {"status": {"conditions": [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
         "message": 'ReplicaSet "x" has timed out progressing.'}]}}
    assert refusal(stalled) == ('The worker\'s rollout made no progress: ReplicaSet "x" has '
                                "timed out progressing.")
    assert refusal({"status": {"conditions": [
        {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]}}) is None
    assert refusal({}) is None
    # final before the worker was ever up, retried after; a pod that exists speaks first
    assert judge([], 1, was_up=False, now=NOW, unschedulable_timeout_s=600,
                 refused=reason) == Verdict("creation_failed", reason)
    assert judge([], 1, was_up=True, now=NOW, unschedulable_timeout_s=600,
                 refused=reason) == Verdict("down_retrying", reason)
    assert judge([_pod("a", 1, phase="Pending")], 1, was_up=False, now=NOW,
                 unschedulable_timeout_s=600, refused=reason) is None
    assert has_current([_pod("a", 1, phase="Pending")], 1)
    assert not has_current([_pod("a", 1, phase="Pending")], 2)
