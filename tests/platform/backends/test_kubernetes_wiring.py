"""The pieces that wire the Kubernetes backend into the control service, one by one:
settings and their errors, the configuration built from them, which pod log lines are
kept, the pod watcher's retries, and the launch spec of an execution."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from gristmill_platform.executions.runtime import (
    ExecutionRuntime,
    LaunchContext,
    LaunchRefused,
    is_pod,
)
from gristmill_platform.executions.service import Launch
from gristmill_platform.executors.base import LogLine
from gristmill_platform.executors.kubernetes.config import kubernetes_config
from gristmill_platform.executors.kubernetes.pod_logs import MAX_LINE_CHARS, unshipped
from gristmill_platform.settings import Settings

K8S = {"executor": "kubernetes", "registry": "registry.example/acme"}


def settings(**values: Any) -> Settings:
    return Settings(**{**K8S, **values}).resolve()


# --- settings -------------------------------------------------------------------------------


def test_the_infra_stack_variables_select_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"GRISTMILL_EXECUTOR": "kubernetes",
                        "GRISTMILL_KUBERNETES_NAMESPACE": "team-a-workers",
                        "GRISTMILL_REGISTRY": "123.dkr.ecr.eu-west-3.amazonaws.com/gm/",
                        "GRISTMILL_KUBERNETES_IMAGE_PULL_SECRETS": "ecr, hub",
                        "GRISTMILL_KUBERNETES_LABELS": "team=ml,cost=42",
                        "GRISTMILL_KUBERNETES_DEFAULT_MEMORY": "2GiB",
                        "GRISTMILL_KUBERNETES_WORKER_SERVICE_ACCOUNT": "",
                        "GRISTMILL_KUBERNETES_IN_CLUSTER": "true"}.items():
        monkeypatch.setenv(name, value)
    cfg = kubernetes_config(Settings().resolve())
    assert cfg.namespace == "team-a-workers"
    assert cfg.registry == "123.dkr.ecr.eu-west-3.amazonaws.com/gm"
    assert cfg.runtime_images == "123.dkr.ecr.eu-west-3.amazonaws.com/gm/gristmill-runtime"
    assert cfg.image_pull_secrets == ("ecr", "hub")
    assert cfg.labels == {"team": "ml", "cost": "42"}
    assert cfg.default_memory_bytes == 2 * 1024**3
    assert cfg.service_account is None  # "" is the namespace's default account
    assert cfg.builder_service_account == "gristmill-builder"
    assert cfg.in_cluster is True


def test_json_values_are_accepted_too() -> None:
    cfg = kubernetes_config(settings(kubernetes_image_pull_secrets='["a"]',
                                     kubernetes_gpu_node_selector='{"pool": "a100"}'))
    assert cfg.image_pull_secrets == ("a",) and cfg.gpu_node_selector == {"pool": "a100"}


@pytest.mark.parametrize(("values", "fragment"), [
    ({"registry": None}, "needs GRISTMILL_REGISTRY"),
    ({"registry": "https://ghcr.io/acme"}, "without a scheme"),
    ({"kubernetes_namespace": "Workers_1"}, "not a Kubernetes namespace"),
    ({"kubernetes_default_memory": "2GB"}, "512MiB or 2GiB"),
    ({"kubernetes_default_memory": "0MiB"}, "512MiB or 2GiB"),
    ({"kubernetes_labels": "team"}, "key=value"),
    ({"kubernetes_image_pull_secrets": "[1, 2"}, "not a valid JSON list"),
    ({"kubernetes_image_pull_policy": "Sometimes"}, "IfNotPresent"),
    ({"internal_url": "gristmill.svc:8080"}, "http:// or https://"),
])
def test_bad_settings_are_refused_naming_what_to_write(values: dict[str, Any],
                                                        fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment.replace("(", r"\(")):
        Settings(**{**K8S, **values})


def test_workers_reach_the_internal_url_else_the_environment_url() -> None:
    assert settings(public_url="https://gm.example.com").worker_url == "https://gm.example.com"
    inside = settings(public_url="https://gm.example.com",
                      internal_url="http://gristmill-control.gristmill.svc/")
    assert inside.worker_url == "http://gristmill-control.gristmill.svc"
    assert inside.environment_url == "https://gm.example.com"


def test_the_local_backend_needs_none_of_it() -> None:
    local = Settings().resolve()
    assert local.executor == "local" and local.registry is None


# --- pod logs: what the runner did not send -------------------------------------------------


def lines(*messages: str) -> list[LogLine]:
    moment = datetime(2026, 11, 23, tzinfo=timezone.utc)
    return [LogLine(moment, "stdout", message) for message in messages]


def test_only_the_lines_the_runner_did_not_send_are_kept() -> None:
    pod = lines("[gristmill] warning before the step", "a", "b", "a", "last words")
    kept = unshipped(pod, ["a", "b", "Execution failed: x"])
    # the second "a" was printed twice and sent once
    assert [line.message for line in kept] == ["[gristmill] warning before the step", "a",
                                               "last words"]


def test_a_line_the_runner_split_matches_its_first_part() -> None:
    long = "x" * (MAX_LINE_CHARS + 10)
    assert unshipped(lines(long), [long[:MAX_LINE_CHARS], "x" * 10]) == []


def test_credentials_in_the_pod_log_never_reach_the_stored_logs() -> None:
    token = "gm_0123456789abcdef_" + "S3cr3t-secret_value-0123456789abcdefghijklm"
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXBhcnQ"
    pod = lines(f"using {token}", f"Bearer {jwt}", "plain")
    # the runner shipped the first line masked: it matches, nothing is added
    kept = unshipped(pod, ["using ***", "plain"])
    assert [line.message for line in kept] == ["Bearer ***"]
    assert all(token not in line.message and jwt not in line.message for line in kept)


def test_one_different_line_does_not_shift_the_others() -> None:
    kept = unshipped(lines("token=secret", "b", "c"), ["token=***", "b", "c"])
    assert [line.message for line in kept] == ["token=secret"]


# --- the pod watcher (its hand-over and give-up: test_kubernetes_at_scale.py) -------------


def handle(execution_id: str) -> dict[str, Any]:
    return {"backend": "kubernetes", "kind": "Pod", "namespace": "ns",
            "name": f"gm-exec-{execution_id}", "execution_id": execution_id}


def test_pod_handles_are_told_from_the_others() -> None:
    assert is_pod(handle("a"))
    assert not is_pod({"backend": "local", "pid": 4, "execution_id": "a"})
    assert not is_pod({"backend": "kubernetes", "kind": "Deployment", "name": "gm-ll-x"})


# --- the launch spec ------------------------------------------------------------------------


def context(image: str | None = "registry.example/acme/gristmill-steps:abc",
            deployment: Any = None, inputs: list[Any] | None = None,
            outputs: list[Any] | None = None) -> LaunchContext:
    step = SimpleNamespace(name="pipeline:churn", image=image,
                           container_config={"language": "python:3.12-slim"})
    execution = SimpleNamespace(pipeline_name="churn", timeout_s=None,
                                inputs=inputs or [], outputs=outputs or [])
    return LaunchContext(step, execution, deployment, {"GREETING": "hi"})  # type: ignore[arg-type]


LAUNCH = Launch(execution_id="churn-1a2b", step_id="s-1", sdk_token="tok",
                deployment_id="d-1", deployment_name="churn-api")


@pytest.fixture
def k8s_runtime(tmp_path: Path) -> ExecutionRuntime:
    from gristmill_platform.executors.kubernetes.executor import KubernetesExecutor

    built = ExecutionRuntime.__new__(ExecutionRuntime)
    built.settings = settings(data_dir=tmp_path, secret_key="k",
                              internal_url="http://control.gm.svc")
    built.kubernetes = KubernetesExecutor(kubernetes_config(built.settings))
    return built


def test_a_pod_runs_the_runner_from_the_step_image(k8s_runtime: ExecutionRuntime) -> None:
    deployment = SimpleNamespace(ram_request="2GiB", gpu_request=1)
    spec = k8s_runtime._kubernetes_spec(LAUNCH, context(deployment=deployment))
    assert spec.image == "registry.example/acme/gristmill-steps:abc"
    assert spec.argv == ("python", "-m", "gristmill.runtime", "run")
    assert (spec.step_name, spec.pipeline_name, spec.deployment_name) == (
        "pipeline:churn", "churn", "churn-api")
    assert spec.language == "python:3.12-slim"
    assert (spec.resources.memory_bytes, spec.resources.gpu) == (2 * 1024**3, 1)
    assert spec.env["GRISTMILL_STEP_DIR"] == "/app"
    assert spec.env["GRISTMILL_ENVIRONMENT_URL"] == "http://control.gm.svc"
    assert spec.env["CRAFT_AI_CONTROL_URL"] == "http://control.gm.svc"
    assert spec.env["GRISTMILL_SDK_TOKEN"] == "tok" and spec.env["GREETING"] == "hi"
    assert "PATH" not in spec.env and "GRISTMILL_IO_DIR" not in spec.env
    assert spec.file_io is False and spec.timeout_s is None


def test_file_inputs_or_outputs_give_the_pod_an_io_volume(
        k8s_runtime: ExecutionRuntime) -> None:
    with_input = context(inputs=[{"data_type": "file", "file": {"object": "x"}}])
    assert k8s_runtime._kubernetes_spec(LAUNCH, with_input).file_io
    with_output = context(outputs=[{"data_type": "file"}])
    assert k8s_runtime._kubernetes_spec(LAUNCH, with_output).file_io


def test_a_step_without_an_image_is_refused_with_what_to_do(
        k8s_runtime: ExecutionRuntime) -> None:
    with pytest.raises(LaunchRefused, match="has no container image.*Create the step"):
        k8s_runtime._kubernetes_spec(LAUNCH, context(image=None))
