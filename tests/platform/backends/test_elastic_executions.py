"""Elastic executions behave the same on every backend (conftest.py: local processes,
Kubernetes on the API emulator with a kubelet double, a real cluster when configured).

Each test says what a user sees through the API; only where the backends differ on
purpose (what a killed worker is called, GPU scheduling) does a test look at which one
it runs on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.platform.backends.conftest import Backend
from tests.platform.stepkit import archive_of, post_step, step_form, write_folder
from tests.platform.test_auth import assert_error
from tests.platform.test_runs import outputs_of, run, run_and_wait, wait

STEP_CODE = '''
import os
import signal
import sys
import time


def echo(text: str, doc: dict) -> dict:
    print(f"echo {text}")
    with open(doc["path"], "rb") as handle:
        data = handle.read()
    out = os.path.join(os.environ["GRISTMILL_IO_DIR"], "upper.bin")
    with open(out, "wb") as handle:
        handle.write(data.upper())
    return {"text": text * 2, "result": {"path": out}}


def boom(text: str) -> dict:
    raise ValueError(f"bad text {text!r}")


def oom(text: str) -> dict:
    print("about to run out of memory", flush=True)
    # what the kernel's OOM killer does to a process over its memory limit
    os.kill(os.getpid(), signal.SIGKILL)
    return {}


def chatty(text: str) -> dict:
    for number in range(25):
        print(f"line {number} of {text}")
    print(f"stderr of {text}", file=sys.stderr)
    return {"text": text}


def metrics(text: str) -> dict:
    from gristmill import Gristmill

    sdk = Gristmill(progress=False)
    sdk.record_metric_value("accuracy", 0.75)
    sdk.record_list_metric_values("loss", [3.0, 2.0, 1.0])
    return {"text": text}


def upper(text: str) -> dict:
    return {"text": text.upper()}


def hang(text: str) -> dict:
    folder = os.environ.get("BACKEND_SUITE_PID_DIR")
    if folder:
        with open(os.path.join(folder, text + ".pid"), "w") as handle:
            handle.write(str(os.getpid()))
    print("hanging", flush=True)
    time.sleep(600)
    return {"text": text}
'''

TEXT_IN = [{"name": "text", "data_type": "string"}]
TEXT_OUT = [{"name": "text", "data_type": "string"}]
GPU_LANGUAGE = "python-cuda:3.12-12.4"
PATIENCE_S = 90  # a bound so that a broken backend fails the test instead of hanging it


def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.1)


@pytest.fixture(scope="package")
def archive(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    folder = tmp_path_factory.mktemp("backend-steps")
    return archive_of(write_folder(folder, {"src/steps.py": STEP_CODE}))


def pipeline(api: httpx.Client, archive: bytes, name: str, function: str,
             inputs: list[dict[str, Any]] = TEXT_IN, outputs: list[dict[str, Any]] = TEXT_OUT,
             **container_config: Any) -> str:
    response = post_step(api, step_form(name, function_path="src/steps.py",
                                        function_name=function, inputs=inputs,
                                        outputs=outputs, name_field="pipeline_name",
                                        container_config=container_config or None),
                         archive, route="/pipelines")
    assert response.status_code == 201, response.text
    return name


def log_messages(api: httpx.Client, execution_id: str) -> list[str]:
    lines = api.post(f"/executions/{execution_id}/logs", json={}).json()[0]
    return [line["message"] for line in lines]


def worker_gone(backend: Backend, execution_id: str) -> bool:
    """On Kubernetes the pod is deleted once its outcome and logs are kept."""
    return not backend.pod_exists(execution_id)


def test_a_run_succeeds_with_inputs_and_outputs(backend: Backend, api: httpx.Client,
                                                archive: bytes, unique: str) -> None:
    name = pipeline(api, archive, f"echo-{unique}", "echo",
                    inputs=[*TEXT_IN, {"name": "doc", "data_type": "file"}],
                    outputs=[*TEXT_OUT, {"name": "result", "data_type": "file"}])
    execution_id, result = run_and_wait(api, name, {"text": "ab"},
                                        files={"doc": ("doc.txt", b"hello")})
    assert outputs_of(result)["text"] == "abab"
    output = api.get(f"/executions/{execution_id}/outputs/result", follow_redirects=True)
    assert output.content == b"HELLO"  # served, or redirected to S3, by the service
    execution = api.get(f"/executions/{execution_id}").json()
    assert execution["status"] == "Succeeded"
    assert "echo ab" in log_messages(api, execution_id)


def test_a_failing_function_fails_with_its_error(backend: Backend, api: httpx.Client,
                                                 archive: bytes, unique: str) -> None:
    name = pipeline(api, archive, f"boom-{unique}", "boom")
    execution_id, result = run_and_wait(api, name, {"text": "zz"})
    assert_error(result, 500, "ValueError: bad text 'zz'")
    execution = api.get(f"/executions/{execution_id}").json()
    assert execution["status"] == "Failed" and "bad text" in execution["status_reason"]
    assert any("Traceback" in message for message in log_messages(api, execution_id))
    eventually(lambda: worker_gone(backend, execution_id), "the worker was cleaned up")


def test_a_worker_killed_for_memory_fails_with_a_reason_users_understand(
        backend: Backend, api: httpx.Client, archive: bytes, unique: str) -> None:
    name = pipeline(api, archive, f"oom-{unique}", "oom")
    execution_id, result = run_and_wait(api, name, {"text": "x"})
    body = assert_error(result, 500, "memory")
    assert body["name"] == "ExecutionFailed"
    reason = api.get(f"/executions/{execution_id}").json()["status_reason"]
    # locally "killed (SIGKILL): out of memory, or killed by hand"; on Kubernetes the
    # container is OOMKilled, and the reason says what to ask for
    assert "memory" in reason.lower()
    if backend.on_kubernetes:
        assert "ram_request" in reason
        eventually(lambda: worker_gone(backend, execution_id), "the pod was deleted")
    messages = log_messages(api, execution_id)
    assert "about to run out of memory" in messages  # printed just before the kill
    if backend.on_kubernetes:  # the pod log adds what the runner did not send, once
        assert messages.count("about to run out of memory") == 1
    assert any(reason in message for message in messages)


def test_logs_are_kept_once_after_the_worker_is_gone(backend: Backend, api: httpx.Client,
                                                     archive: bytes, unique: str) -> None:
    name = pipeline(api, archive, f"chatty-{unique}", "chatty")
    execution_id, result = run_and_wait(api, name, {"text": unique})
    assert outputs_of(result) == {"text": unique}
    eventually(lambda: worker_gone(backend, execution_id), "the worker was cleaned up")
    messages = log_messages(api, execution_id)
    printed = [f"line {number} of {unique}" for number in range(25)] + [f"stderr of {unique}"]
    assert [m for m in messages if unique in m] == printed  # all of them, once, in order


def test_metrics_are_recorded_for_the_execution(backend: Backend, api: httpx.Client,
                                                archive: bytes, unique: str) -> None:
    name = pipeline(api, archive, f"metrics-{unique}", "metrics")
    execution_id, result = run_and_wait(api, name, {"text": "m"})
    assert outputs_of(result) == {"text": "m"}
    single = api.get("/metrics/single-value",
                     params={"filters[execution_id]": execution_id}).json()["metrics"]
    assert [(m["name"], m["value"], m["pipeline_name"]) for m in single] == [
        ("accuracy", 0.75, name)]
    listed = api.get("/metrics/list-values", params={"filters[execution_id]": execution_id,
                                                     "filters[name]": "loss"}).json()
    assert [m["value"] for m in listed["metrics"]] == [3.0, 2.0, 1.0]


def test_an_elastic_endpoint_answers_a_call(backend: Backend, api: httpx.Client,
                                            archive: bytes, unique: str) -> None:
    name = pipeline(api, archive, f"upper-{unique}", "upper")
    created = api.post("/endpoints", json={"pipeline_name": name, "name": f"ep-{unique}",
                                           "mode": "elastic"})
    assert created.status_code == 201, created.text
    token = created.json()["endpoint_token"]
    answer = httpx.post(f"{backend.env.url}/endpoints/ep-{unique}", json={"text": "hi"},
                        headers={"Authorization": f"EndpointToken {token}"}, timeout=120,
                        follow_redirects=True)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"] == {"text": "HI"}
    execution_id = answer.headers["craft-ai-execution-id"]
    assert api.get(f"/executions/{execution_id}").json()["deployment_name"] == f"ep-{unique}"


def test_deleting_a_running_execution_stops_its_worker(
        backend: Backend, api: httpx.Client, archive: bytes, unique: str,
        tmp_path: Path) -> None:
    api.put("/environment-variables",
            json={"environment_variables": {"BACKEND_SUITE_PID_DIR": str(tmp_path)}})
    name = pipeline(api, archive, f"hang-{unique}", "hang")
    started = run(api, name, {"text": unique})
    assert started.status_code == 201, started.text
    execution_id = started.json()["execution_id"]
    eventually(lambda: api.get(f"/executions/{execution_id}").json()["status"] == "Running",
               "the execution started")
    local_process = backend.name in ("local", "kubernetes")  # the double runs processes here
    pid_file = tmp_path / f"{unique}.pid"
    if local_process:
        eventually(pid_file.exists, "the step wrote its pid")
    pid = int(pid_file.read_text()) if local_process else None

    assert api.delete(f"/executions/{execution_id}").json() == {"execution_id": execution_id}

    assert api.get(f"/executions/{execution_id}").status_code == 404
    if pid is not None:
        eventually(lambda: not _alive(pid), "the worker process stopped")
    eventually(lambda: worker_gone(backend, execution_id), "the pod was deleted")


@pytest.mark.parametrize("deleted", ["deployment", "pipeline"])
def test_deleting_a_deployment_stops_its_running_workers(
        backend: Backend, api: httpx.Client, archive: bytes, unique: str,
        tmp_path: Path, deleted: str) -> None:
    """Deleted on its own, or with its pipeline (force_deployments_deletion)."""
    api.put("/environment-variables",
            json={"environment_variables": {"BACKEND_SUITE_PID_DIR": str(tmp_path)}})
    name = pipeline(api, archive, f"hang-ep-{unique}", "hang")
    created = api.post("/endpoints", json={"pipeline_name": name, "name": f"hep-{unique}",
                                           "mode": "elastic"})
    assert created.status_code == 201, created.text
    triggered = httpx.post(f"{backend.env.url}/endpoints/hep-{unique}", json={"text": unique},
                           headers={"Authorization": f"EndpointToken "
                                    f"{created.json()['endpoint_token']}",
                                    "craft-ai-client": "craft-ai-sdk@0.50.1"}, timeout=60)
    assert triggered.status_code == 303, triggered.text
    execution_id = triggered.headers["craft-ai-execution-id"]
    eventually(lambda: api.get(f"/executions/{execution_id}").json()["status"] == "Running",
               "the execution started")
    pid_file = tmp_path / f"{unique}.pid"
    local_process = backend.name in ("local", "kubernetes")
    if local_process:
        eventually(pid_file.exists, "the step wrote its pid")

    if deleted == "deployment":
        assert api.delete(f"/deployments/hep-{unique}").status_code == 200
    else:
        answer = api.delete(f"/pipelines/{name}", params={"force_deployments_deletion": True})
        assert answer.status_code == 200, answer.text
        assert answer.json()["deployments"] == [{"name": f"hep-{unique}",
                                                 "execution_rule": "endpoint"}]

    if local_process:
        pid = int(pid_file.read_text())
        eventually(lambda: not _alive(pid), "the worker process stopped")
    eventually(lambda: worker_gone(backend, execution_id), "the pod was deleted")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_an_unschedulable_gpu_request_fails_with_a_clear_reason(
        backend: Backend, api: httpx.Client, archive: bytes, unique: str) -> None:
    if not backend.on_kubernetes:
        pytest.skip("GPU scheduling exists on the Kubernetes backend only")
    name = pipeline(api, archive, f"gpu-{unique}", "upper", language=GPU_LANGUAGE)
    execution_id, result = run_and_wait(api, name, {"text": "g"})
    assert_error(result, 500, "cannot be scheduled")
    reason = api.get(f"/executions/{execution_id}").json()["status_reason"]
    assert "no node with a free GPU is available" in reason
    eventually(lambda: worker_gone(backend, execution_id), "the pending pod was deleted")


def test_the_environment_url_the_worker_got(backend: Backend, api: httpx.Client,
                                            archive: bytes, unique: str) -> None:
    """The runner and SDK calls inside the step reach the service; on Kubernetes through
    the internal URL, which the pod carries."""
    if backend.emulator is None:
        pytest.skip("reads the pod the emulator stored")
    name = pipeline(api, archive, f"url-{unique}", "upper")
    started = run(api, name, {"text": "u"})
    execution_id = started.json()["execution_id"]
    from gristmill_platform.executors.kubernetes.manifests import execution_pod_name

    pod_name = execution_pod_name(execution_id)
    emulator = backend.emulator
    eventually(lambda: emulator.created("v1/pods", pod_name) is not None,
               "the pod was created")
    pod = emulator.created("v1/pods", pod_name)
    assert pod is not None
    env = {item["name"]: item.get("value") for item in pod["spec"]["containers"][0]["env"]}
    assert env["GRISTMILL_STEP_DIR"] == "/app"
    assert env["GRISTMILL_ENVIRONMENT_URL"] == backend.env.settings.worker_url  # type: ignore[attr-defined]
    assert "PATH" not in env  # the image's own PATH finds its venv
    assert pod["spec"]["containers"][0]["command"] == ["python", "-m", "gristmill.runtime",
                                                       "run"]
    assert outputs_of(wait(api, execution_id)) == {"text": "U"}

