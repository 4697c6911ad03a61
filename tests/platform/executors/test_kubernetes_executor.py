"""The kr8s executor against a real HTTP Kubernetes API emulator (kmock on 127.0.0.1).

The emulator stores objects but runs nothing: each test plays the kubelet by moving the
pod's status, then checks what the executor concludes and sends.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from gristmill_platform.executors.kubernetes import manifests
from gristmill_platform.executors.kubernetes.config import KubernetesConfig
from gristmill_platform.executors.kubernetes.executor import (
    KubernetesExecutor,
    KubernetesExecutorError,
    credentials_source,
    parse_log_line,
)
from gristmill_platform.executors.kubernetes.images import ImageBuild
from gristmill_platform.executors.spec import (
    FailureCode,
    LaunchSpec,
    Resources,
    WorkerSpec,
    WorkerState,
)

from .conftest import NAMESPACE, NOW, Emulator, LogKeeper

RUNNER = ("python", "-m", "gristmill.runtime")


def launch(execution_id: str = "run-7", **changes: Any) -> LaunchSpec:
    values: dict[str, Any] = {
        "execution_id": execution_id,
        "step_name": "train",
        "pipeline_name": "churn",
        "language": "python:3.12-slim",
        "argv": (*RUNNER, "run", execution_id),
        "env": {"GRISTMILL_EXECUTION_TOKEN": "tok"},
        "resources": Resources(memory_bytes=512 * 1024**2),
        "timeout_s": 600,
    }
    values.update(changes)
    return LaunchSpec(**values)


def worker(**changes: Any) -> WorkerSpec:
    values: dict[str, Any] = {
        "deployment_name": "churn-api",
        "step_name": "score",
        "pipeline_name": "churn",
        "language": "python-cuda:3.12-12.4",
        "argv": (*RUNNER, "serve"),
        "env": {},
        "port": 8080,
        "generation": 1,
    }
    values.update(changes)
    return WorkerSpec(**values)


def running(node: str = "node-a") -> dict[str, Any]:
    return {
        "phase": "Running",
        "containerStatuses": [{"name": "runner", "state": {"running": {}}, "image": "img"}],
    }


def terminated(code: int, reason: str, **extra: Any) -> dict[str, Any]:
    return {
        "phase": "Failed" if code else "Succeeded",
        "containerStatuses": [
            {
                "name": "runner",
                "image": "img",
                "state": {"terminated": {"exitCode": code, "reason": reason, **extra}},
            }
        ],
    }


# --- submit ---------------------------------------------------------------------------------


async def test_submit_creates_the_execution_pod(executor: KubernetesExecutor, emulator: Emulator):
    spec = launch()
    handle = await executor.submit(spec)

    name = manifests.execution_pod_name("run-7")
    assert handle == {
        "backend": "kubernetes",
        "kind": "Pod",
        "namespace": NAMESPACE,
        "name": name,
        "uid": emulator.pod(name)["metadata"]["uid"],
        "execution_id": "run-7",
    }
    stored = emulator.pod(name)
    expected = manifests.execution_pod(spec, executor.cfg)
    assert stored["spec"] == expected["spec"]
    assert stored["metadata"]["labels"] == expected["metadata"]["labels"]


async def test_submit_is_idempotent_per_execution(executor: KubernetesExecutor, emulator: Emulator):
    first = await executor.submit(launch())
    again = await executor.submit(launch())

    assert again == first
    assert len(emulator.sent("POST", "pods")) == 2  # the second one met 409 Conflict
    assert [key[2] for key in emulator.objects] == [first["name"]]


async def test_submit_after_a_restart_of_the_control_service_finds_the_pod(
    k8s_config: KubernetesConfig, emulator: Emulator
):
    first = await KubernetesExecutor(k8s_config).submit(launch())
    again = await KubernetesExecutor(k8s_config).submit(launch())
    assert again["uid"] == first["uid"]


async def test_submit_refuses_a_pod_that_belongs_to_another_execution(
    executor: KubernetesExecutor, emulator: Emulator
):
    name = manifests.execution_pod_name("run-7")
    emulator.objects["v1/pods", NAMESPACE, name] = {
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/managed-by": "gristmill"},
            "annotations": {"gristmill.io/execution-id": "someone-else"},
        }
    }
    with pytest.raises(KubernetesExecutorError, match="someone-else"):
        await executor.submit(launch())


async def test_submit_never_adopts_a_pod_gristmill_did_not_create(
    executor: KubernetesExecutor, emulator: Emulator
):
    name = manifests.execution_pod_name("run-7")
    emulator.objects["v1/pods", NAMESPACE, name] = {
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "annotations": {"gristmill.io/execution-id": "run-7"},  # claims, but unlabelled
        }
    }
    with pytest.raises(KubernetesExecutorError, match="not created by Gristmill"):
        await executor.submit(launch())


async def test_distinct_executions_get_distinct_pods(executor: KubernetesExecutor):
    handles = [await executor.submit(launch(execution_id)) for execution_id in ("A-1", "a-1")]
    assert handles[0]["name"] != handles[1]["name"]


# --- poll: the lifecycle and each failure reason, end to end --------------------------------


async def test_poll_follows_the_pod_from_pending_to_success(
    executor: KubernetesExecutor, emulator: Emulator
):
    handle = await executor.submit(launch())
    assert (await executor.poll(handle)).state == WorkerState.PENDING

    emulator.set_pod_status(handle["name"], running(), node="node-a")
    assert (await executor.poll(handle)).state == WorkerState.RUNNING

    emulator.set_pod_status(handle["name"], terminated(0, "Completed"))
    outcome = await executor.poll(handle)
    assert outcome.state == WorkerState.SUCCEEDED and outcome.exit_code == 0


FAILURES: dict[str, tuple[dict[str, Any], FailureCode, str]] = {
    "image pull": (
        {
            "phase": "Pending",
            "containerStatuses": [
                {
                    "name": "runner",
                    "image": "registry.example/acme/gristmill-steps:nope",
                    "state": {"waiting": {"reason": "ImagePullBackOff"}},
                }
            ],
        },
        FailureCode.IMAGE_PULL,
        "gristmill-steps:nope could not be pulled",
    ),
    "oom": (terminated(137, "OOMKilled"), FailureCode.OOM_KILLED, "out of memory (limit 512Mi)"),
    "eviction": (
        {"phase": "Failed", "reason": "Evicted", "message": "The node was low on memory."},
        FailureCode.EVICTED,
        "evicted",
    ),
    "non-zero exit": (
        terminated(2, "Error", message="KeyError: 'label'"),
        FailureCode.EXIT_CODE,
        "exited with code 2. Last output: KeyError: 'label'",
    ),
    "deadline": (
        {"phase": "Failed", "reason": "DeadlineExceeded"},
        FailureCode.DEADLINE_EXCEEDED,
        "longer than its timeout of 10 min",
    ),
}


@pytest.mark.parametrize("failure", FAILURES)
async def test_each_failure_reaches_the_caller_with_its_reason(
    failure: str, executor: KubernetesExecutor, emulator: Emulator
):
    status, code, words = FAILURES[failure]
    handle = await executor.submit(launch())
    emulator.set_pod_status(handle["name"], status)

    outcome = await executor.poll(handle)

    assert outcome.state == WorkerState.FAILED
    assert outcome.code == code
    assert outcome.reason is not None and words in outcome.reason


async def test_unschedulable_gpu_worker_waits_then_fails(
    executor: KubernetesExecutor, emulator: Emulator, clock: list[datetime]
):
    handle = await executor.submit(launch(language="python-cuda:3.12-12.4"))
    since = NOW.isoformat().replace("+00:00", "Z")
    emulator.set_pod_status(
        handle["name"],
        {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.",
                    "lastTransitionTime": since,
                }
            ],
        },
    )

    clock[0] = NOW + timedelta(seconds=599)  # the GPU pool may still be scaling up
    waiting = await executor.poll(handle)
    assert waiting.state == WorkerState.PENDING and waiting.code == FailureCode.UNSCHEDULABLE

    clock[0] = NOW + timedelta(seconds=601)
    failed = await executor.poll(handle)
    assert failed.state == WorkerState.FAILED and failed.code == FailureCode.UNSCHEDULABLE
    assert failed.reason is not None and "no node with a free GPU" in failed.reason


async def test_poll_of_a_vanished_pod_reports_a_lost_worker(
    executor: KubernetesExecutor, emulator: Emulator
):
    handle = await executor.submit(launch())
    emulator.pod(handle["name"]).delete()
    outcome = await executor.poll(handle)
    assert outcome.state == WorkerState.FAILED and outcome.code == FailureCode.WORKER_LOST


# --- logs -----------------------------------------------------------------------------------


async def test_logs_come_with_their_timestamps(executor: KubernetesExecutor, emulator: Emulator):
    handle = await executor.submit(launch())
    emulator.serve_logs(
        handle["name"],
        "2026-11-23T12:00:01.123456789Z loading data\n"
        "2026-11-23T12:00:02Z   indented line\n"
        "2026-11-23T12:00:03.5Z done\n",
    )

    lines = await executor.logs(handle)

    assert [line.message for line in lines] == ["loading data", "  indented line", "done"]
    assert [line.timestamp for line in lines] == [
        datetime(2026, 11, 23, 12, 0, 1, 123456, tzinfo=timezone.utc),
        datetime(2026, 11, 23, 12, 0, 2, tzinfo=timezone.utc),
        datetime(2026, 11, 23, 12, 0, 3, 500000, tzinfo=timezone.utc),
    ]
    assert emulator.sent("GET")[-1].params.get("timestamps") == "true"


async def test_logs_of_a_pod_without_logs_yet_are_empty(
    executor: KubernetesExecutor, emulator: Emulator
):
    handle = await executor.submit(launch())
    emulator["get", f"/api/v1/namespaces/{NAMESPACE}/pods/{handle['name']}/log"] << 400
    assert await executor.logs(handle) == []


def test_a_line_without_timestamp_keeps_the_previous_time():
    previous = datetime(2026, 1, 1, tzinfo=timezone.utc)
    line = parse_log_line("no stamp here", previous)
    assert (line.timestamp, line.message) == (previous, "no stamp here")


# --- cancel ---------------------------------------------------------------------------------


async def test_cancel_of_a_running_execution_keeps_the_pod_and_its_logs(
    executor: KubernetesExecutor, emulator: Emulator
):
    handle = await executor.submit(launch())
    emulator.set_pod_status(handle["name"], running(), node="node-a")

    await executor.cancel(handle)

    pod = emulator.pod(handle["name"])
    assert pod["spec"]["activeDeadlineSeconds"] == 1
    assert pod["metadata"]["annotations"]["gristmill.io/cancelled"] == "true"
    # The kubelet then stops it as for a timeout.
    emulator.set_pod_status(
        handle["name"],
        {**terminated(143, "Error"), "phase": "Failed", "reason": "DeadlineExceeded"},
    )
    outcome = await executor.poll(handle)
    assert outcome.state == WorkerState.FAILED and outcome.code == FailureCode.CANCELLED
    emulator.serve_logs(handle["name"], "2026-11-23T12:00:01Z received SIGTERM\n")
    assert [line.message for line in await executor.logs(handle)] == ["received SIGTERM"]


async def test_cancel_of_an_unplaced_execution_deletes_its_pod(
    executor: KubernetesExecutor, emulator: Emulator
):
    handle = await executor.submit(launch())
    await executor.cancel(handle)
    assert not emulator.has("v1/pods", handle["name"])
    await executor.cancel(handle)  # a second cancel is harmless


async def test_cancel_of_a_finished_execution_changes_nothing(
    executor: KubernetesExecutor, emulator: Emulator
):
    handle = await executor.submit(launch())
    emulator.set_pod_status(handle["name"], terminated(0, "Completed"), node="node-a")
    await executor.cancel(handle)
    assert emulator.sent("PATCH") == [] and emulator.sent("DELETE") == []
    assert (await executor.poll(handle)).state == WorkerState.SUCCEEDED


# --- cleanup --------------------------------------------------------------------------------


async def test_cleanup_hands_over_the_logs_then_deletes_the_pod(
    executor: KubernetesExecutor, emulator: Emulator, log_keeper: LogKeeper
):
    handle = await executor.submit(launch())
    emulator.set_pod_status(handle["name"], terminated(0, "Completed"), node="node-a")
    emulator.serve_logs(handle["name"], "2026-11-23T12:00:01Z result=42\n")

    await executor.cleanup(handle)

    assert [line.message for line in log_keeper.kept["run-7"]] == ["result=42"]
    assert not emulator.has("v1/pods", handle["name"])
    await executor.cleanup(handle)  # nothing left: nothing to do
    assert len(emulator.sent("DELETE")) == 1


async def test_cleanup_keeps_the_pod_when_the_logs_cannot_be_kept(
    executor: KubernetesExecutor, emulator: Emulator, log_keeper: LogKeeper
):
    handle = await executor.submit(launch())
    emulator.serve_logs(handle["name"], "2026-11-23T12:00:01Z precious\n")
    log_keeper.fail = True

    with pytest.raises(OSError):
        await executor.cleanup(handle)

    assert emulator.has("v1/pods", handle["name"])


# --- low-latency deployments ----------------------------------------------------------------


async def test_apply_worker_creates_the_deployment_and_service(
    executor: KubernetesExecutor, emulator: Emulator
):
    handle = await executor.apply_worker(worker())

    name = manifests.worker_name("churn-api")
    assert handle["name"] == handle["service"] == name
    deployment = emulator.objects["apps/v1/deployments", NAMESPACE, name]
    service = emulator.objects["v1/services", NAMESPACE, name]
    expected = manifests.worker_deployment(worker(), executor.cfg)
    assert deployment["spec"] == expected["spec"]
    assert service["spec"]["selector"] == expected["spec"]["selector"]["matchLabels"]


async def test_applying_the_same_worker_again_changes_nothing(
    executor: KubernetesExecutor, emulator: Emulator
):
    await executor.apply_worker(worker())
    await executor.apply_worker(worker())
    assert emulator.sent("PATCH") == []


async def test_a_new_generation_rolls_the_workers_and_drops_removed_settings(
    executor: KubernetesExecutor, emulator: Emulator
):
    await executor.apply_worker(worker())  # on GPU
    name = manifests.worker_name("churn-api")
    deployment = emulator.objects["apps/v1/deployments", NAMESPACE, name]
    assert deployment["spec"]["template"]["spec"]["nodeSelector"] == {"gristmill.io/pool": "gpu"}

    await executor.apply_worker(worker(generation=2, language="python:3.12-slim", replicas=3))

    assert len(emulator.sent("PATCH", "deployments")) == 1
    template = deployment["spec"]["template"]
    assert template["metadata"]["annotations"]["gristmill.io/generation"] == "2"
    assert deployment["spec"]["replicas"] == 3
    # A merge patch keeps what it does not mention: these must have been nulled explicitly.
    assert "nodeSelector" not in template["spec"]
    assert "tolerations" not in template["spec"]
    assert "nvidia.com/gpu" not in template["spec"]["containers"][0]["resources"]["limits"]
    assert deployment["metadata"]["generation"] == 2
    expected = manifests.worker_deployment(
        worker(generation=2, language="python:3.12-slim", replicas=3), executor.cfg
    )
    assert deployment["spec"] == expected["spec"]


async def test_apply_worker_refuses_to_take_over_a_foreign_deployment(
    executor: KubernetesExecutor, emulator: Emulator
):
    name = manifests.worker_name("churn-api")
    emulator.objects["apps/v1/deployments", NAMESPACE, name] = {
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"replicas": 5},
    }
    with pytest.raises(KubernetesExecutorError, match="not created by Gristmill"):
        await executor.apply_worker(worker())
    assert emulator.sent("PATCH") == []


async def test_worker_pods_lists_only_this_deployments_warm_pods(
    executor: KubernetesExecutor, emulator: Emulator
):
    await executor.apply_worker(worker())
    mine = manifests.worker_selector("churn-api")
    ready = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [{"name": "runner", "state": {"running": {}}}],
    }
    emulator.add_pod("gm-ll-churn-api-b", mine, {"phase": "Pending"})
    emulator.add_pod("gm-ll-churn-api-a", mine, ready)
    emulator.add_pod("gm-ll-other-x", manifests.worker_selector("other"), ready)
    emulator.add_pod("gm-exec-1", {**mine, "gristmill.io/mode": "elastic"}, ready)

    assert await executor.worker_pods("churn-api") == [
        {"pod_id": "gm-ll-churn-api-a", "status": "ready"},
        {"pod_id": "gm-ll-churn-api-b", "status": "pending"},
    ]
    assert emulator.sent("GET", "pods")[-1].params.get("labelSelector")


async def test_delete_worker_removes_deployment_and_service(
    executor: KubernetesExecutor, emulator: Emulator
):
    await executor.apply_worker(worker())
    name = manifests.worker_name("churn-api")

    await executor.delete_worker("churn-api")

    assert not emulator.has("apps/v1/deployments", name)
    assert not emulator.has("v1/services", name)
    await executor.delete_worker("churn-api")  # already gone: no error


# --- step image builds ----------------------------------------------------------------------


async def test_identical_builds_share_one_job(executor: KubernetesExecutor, emulator: Emulator):
    build = ImageBuild("train", "python:3.12-slim", "s3://b/ctx.tar.gz", "b" * 64)
    first = await executor.submit_build(build)
    again = await executor.submit_build(ImageBuild("copy", "python:3.12-slim", "s3://x", "b" * 64))
    assert first == again
    assert first["image"] == f"registry.example/acme/gristmill-steps:{'b' * 64}"
    assert (await executor.poll_build(first)).state == WorkerState.PENDING

    job_pod = f"{first['name']}-x7k2p"
    emulator.add_pod(job_pod, {"job-name": first["name"]}, terminated(137, "OOMKilled"))
    emulator.objects["batch/v1/jobs", NAMESPACE, first["name"]].patch({"status": {"failed": 1}})
    emulator.serve_logs(job_pod, "2026-11-23T12:00:01Z INFO Unpacking rootfs\n")

    outcome = await executor.poll_build(first)
    assert outcome.state == WorkerState.FAILED and outcome.code == FailureCode.OOM_KILLED
    assert outcome.reason is not None and outcome.reason.startswith("The image build failed.")
    assert [line.message for line in await executor.build_logs(first)] == ["INFO Unpacking rootfs"]


async def test_build_outcomes_success_and_deadline(
    executor: KubernetesExecutor, emulator: Emulator
):
    done = await executor.submit_build(ImageBuild("a", "python:3.12-slim", "s3://x", "d" * 64))
    emulator.objects["batch/v1/jobs", NAMESPACE, done["name"]].patch({"status": {"succeeded": 1}})
    assert (await executor.poll_build(done)).state == WorkerState.SUCCEEDED

    slow = await executor.submit_build(ImageBuild("b", "python:3.12-slim", "s3://x", "e" * 64))
    failed = {"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}
    emulator.objects["batch/v1/jobs", NAMESPACE, slow["name"]].patch(
        {"status": {"failed": 1, "conditions": [failed]}}
    )
    outcome = await executor.poll_build(slow)
    assert outcome.code == FailureCode.DEADLINE_EXCEEDED


# --- credentials ----------------------------------------------------------------------------


def test_credentials_explicit_kubeconfig_wins():
    cfg = KubernetesConfig(kubeconfig="/etc/gristmill/kubeconfig")
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    assert credentials_source(cfg, env, lambda _: True) == (
        "kubeconfig",
        "/etc/gristmill/kubeconfig",
    )


def test_credentials_in_cluster_when_a_service_account_is_mounted():
    cfg = KubernetesConfig()
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    assert credentials_source(cfg, env, lambda path: path.endswith("/token")) == (
        "in-cluster",
        "/var/run/secrets/kubernetes.io/serviceaccount",
    )
    # In a pod without a token (automount off), fall back to a kubeconfig.
    assert credentials_source(cfg, env, lambda _: False) == ("kubeconfig", None)


def test_credentials_default_kubeconfig_outside_a_cluster():
    assert credentials_source(KubernetesConfig(), {}, lambda _: True) == ("kubeconfig", None)
    forced = KubernetesConfig(in_cluster=True)
    assert credentials_source(forced, {}, lambda _: False)[0] == "in-cluster"
