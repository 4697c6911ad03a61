"""Low-latency deployments behave the same on every backend (conftest.py): a warm worker
that is a local process, or the pod of a worker Deployment, which the kubelet double runs
as a real ``python -m gristmill.runtime serve`` process and the pool reaches at
127.0.0.1:<port>.

Each test calls the deployment through the control service's HTTP API, as a client would
(``Authorization: EndpointToken <token>``), and reads what the API shows. Waits are bounded
polls that only say how long a broken backend may take to fail a test.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import GristmillEnv
from tests.platform.backends.conftest import Backend
from tests.platform.stepkit import archive_of, write_folder
from tests.platform.test_auth import assert_error
from tests.platform.test_low_latency import deployment
from tests.platform.test_runs import make_pipeline

STEP_CODE = '''
import os
import time

# Module-level code: runs once per worker process.
CALLS = 0
print("module imported", flush=True)


def counter(text: str) -> dict:
    global CALLS
    CALLS += 1
    print(f"counter called with {text}", flush=True)
    return {"info": {"text": text, "calls": CALLS, "pid": os.getpid()}}


def boom(text: str) -> dict:
    print("about to fail", flush=True)
    raise ValueError(f"bad text {text!r}")


def hold(text: str) -> dict:
    """At once, or for "gate:<path>" until that file exists (or a minute has passed)."""
    if text.startswith("gate:"):
        gate = text.split(":", 1)[1]
        for _ in range(6000):
            if os.path.exists(gate):
                break
            time.sleep(0.01)
        open(gate + ".done", "w").close()
    return counter(text)


def crash(text: str) -> dict:
    if text == "die":
        print("about to die", flush=True)
        os._exit(7)  # 3 would mean "could not reach the control service"
    return counter(text)
'''

TEXT_IN = [{"name": "text", "data_type": "string"}]
INFO_OUT = [{"name": "info", "data_type": "json"}]
PATIENCE_S = 90.0  # a bound so that a broken backend fails the test instead of hanging it


@pytest.fixture(autouse=True)
def _not_on_a_real_cluster(backend: Backend) -> None:
    if backend.name == "kubernetes-real":
        pytest.skip("low-latency workers on a real cluster: the pool reaches pods at their "
                    "IPs, which this machine does not route to")


@pytest.fixture(scope="package")
def ll_archive(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return archive_of(write_folder(tmp_path_factory.mktemp("backend-low-latency"),
                                   {"src/steps.py": STEP_CODE}))


def eventually(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + PATIENCE_S
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"never happened: {what}")


def deploy(api: httpx.Client, archive: bytes, name: str, function: str,
           **options: Any) -> dict[str, Any]:
    make_pipeline(api, archive, name, function, TEXT_IN, INFO_OUT)
    response = api.post("/endpoints", json={"pipeline_name": name, "name": name,
                                            "mode": "low_latency", **options})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    assert created["status"] == "up", (created["status_reason"], created.get("pods"))
    return created


def post(env: GristmillEnv, name: str, token: str, text: str) -> httpx.Response:
    return httpx.post(f"{env.url}/endpoints/{name}", json={"text": text}, timeout=120,
                      headers={"Authorization": f"EndpointToken {token}"})


def call(env: GristmillEnv, name: str, token: str, text: str) -> dict[str, Any]:
    response = post(env, name, token, text)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def execution(api: httpx.Client, execution_id: str) -> dict[str, Any]:
    response = api.get(f"/executions/{execution_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def log_messages(api: httpx.Client, execution_id: str) -> list[str]:
    response = api.post(f"/executions/{execution_id}/logs", json={})
    assert response.status_code == 200, response.text
    return [line["message"] for page in response.json()
            for line in (page if isinstance(page, list) else [page])]


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_creation_is_up_and_module_code_runs_once(backend: Backend, api: httpx.Client,
                                                  ll_archive: bytes, unique: str) -> None:
    name = f"ll-once-{unique}"
    created = deploy(api, ll_archive, name, "counter")
    assert created["mode"] == "low_latency"
    token = created["endpoint_token"]
    first = call(backend.env, name, token, "a")["outputs"]["info"]
    second = call(backend.env, name, token, "b")["outputs"]["info"]
    # one worker process, whose module global counts the calls
    assert (first["calls"], second["calls"]) == (1, 2)
    assert first["pid"] == second["pid"]
    shown = deployment(api, name)
    assert shown["status"] == "up"
    assert [pod["status"] for pod in shown["pods"]] == ["running"]


def test_a_call_answers_its_outputs_and_is_tracked(backend: Backend, api: httpx.Client,
                                                   ll_archive: bytes, unique: str) -> None:
    name = f"ll-track-{unique}"
    token = deploy(api, ll_archive, name, "counter")["endpoint_token"]
    answer = call(backend.env, name, token, "hello")
    info = answer["outputs"]["info"]
    assert (info["text"], info["calls"]) == ("hello", 1)
    body = execution(api, answer["execution_id"])
    assert body["status"] == "Succeeded" and body["deployment_name"] == name
    pods = [pod["pod_id"] for pod in deployment(api, name)["pods"]]
    assert body["worker"] in pods, (body["worker"], pods)
    if backend.on_kubernetes:  # the pod the double runs for the worker Deployment
        from gristmill_platform.executors.kubernetes.manifests import worker_name

        assert backend.kubelet is not None and backend.kubelet.workers is not None
        assert body["worker"].startswith(worker_name(name))
        assert backend.kubelet.workers.pid(body["worker"]) == info["pid"]
    else:
        assert body["worker"] == f"local-{name}-1"
    assert [i["value"] for i in body["inputs"]] == ["hello"]
    assert [o["value"] for o in body["outputs"]] == [info]
    messages = eventually(
        lambda: (lambda m: m if "counter called with hello" in m else None)(
            log_messages(api, answer["execution_id"])), "the execution's log line")
    assert "module imported" not in messages  # the worker's own output is not the call's


def test_a_failing_function_fails_the_call_and_the_execution(
        backend: Backend, api: httpx.Client, ll_archive: bytes, unique: str) -> None:
    name = f"ll-boom-{unique}"
    token = deploy(api, ll_archive, name, "boom")["endpoint_token"]
    response = post(backend.env, name, token, "zz")
    body = assert_error(response, 500, "bad text 'zz'")
    assert body["name"] == "ExecutionFailed"
    execution_id = body["additional_data"]["execution_id"]
    shown = execution(api, execution_id)
    assert shown["status"] == "Failed"
    assert "ValueError: bad text 'zz'" in shown["status_reason"]
    assert "about to fail" in log_messages(api, execution_id)
    # the worker survives a failing function
    assert deployment(api, name)["status"] == "up"


def test_a_worker_crash_fails_its_execution_and_the_worker_comes_back(
        backend: Backend, api: httpx.Client, ll_archive: bytes, unique: str) -> None:
    name = f"ll-crash-{unique}"
    token = deploy(api, ll_archive, name, "crash")["endpoint_token"]
    before = call(backend.env, name, token, "ok")["outputs"]["info"]
    response = post(backend.env, name, token, "die")
    body = assert_error(response, 500, "crashed")
    assert body["name"] == "ExecutionFailed"
    shown = execution(api, body["additional_data"]["execution_id"])
    assert shown["status"] == "Failed"
    assert "crashed" in shown["status_reason"] and "code 7" in shown["status_reason"], shown
    eventually(lambda: process_gone(before["pid"]), "the crashed worker to be gone")
    eventually(lambda: deployment(api, name)["status"] == "up", "the worker to come back")
    after = eventually(lambda: (lambda r: r.json() if r.status_code == 200 else None)(
        post(backend.env, name, token, "again")), "a call to succeed after the crash")
    info = after["outputs"]["info"]
    # a new process: the module ran again, its counter started over
    assert info["pid"] != before["pid"] and info["calls"] == 1


def test_an_execution_past_the_timeout_fails_and_the_next_call_gets_a_new_worker(
        backend: Backend, api: httpx.Client, ll_archive: bytes, unique: str,
        tmp_path: Path) -> None:
    name = f"ll-timeout-{unique}"
    token = deploy(api, ll_archive, name, "hold", execution_timeout_s=1)["endpoint_token"]
    before = call(backend.env, name, token, "fast")["outputs"]["info"]
    gate = tmp_path / "gate"
    response = post(backend.env, name, token, f"gate:{gate}")
    body = assert_error(response, 500,
                        "exceeded the deployment's execution timeout (1 s)")
    assert body["name"] == "ExecutionFailed"
    # answered while the function still runs: its gate is closed, it has not returned
    assert not Path(f"{gate}.done").exists()
    shown = execution(api, body["additional_data"]["execution_id"])
    assert shown["status"] == "Failed"
    assert "exceeded the deployment's execution timeout (1 s)" in shown["status_reason"]
    after = eventually(lambda: (lambda r: r.json() if r.status_code == 200 else None)(
        post(backend.env, name, token, "fast")), "a call to succeed after the timeout")
    info = after["outputs"]["info"]
    # a new worker (the module ran again), and the old one stopped with the abandoned call
    assert info["pid"] != before["pid"] and info["calls"] == 1
    eventually(lambda: process_gone(before["pid"]), "the replaced worker to stop")
    assert not Path(f"{gate}.done").exists()
    eventually(lambda: deployment(api, name)["status"] == "up", "the deployment to be up")


def test_deleting_the_deployment_stops_the_worker(backend: Backend, api: httpx.Client,
                                                  ll_archive: bytes, unique: str) -> None:
    name = f"ll-del-{unique}"
    token = deploy(api, ll_archive, name, "counter")["endpoint_token"]
    pid = call(backend.env, name, token, "a")["outputs"]["info"]["pid"]
    assert not process_gone(pid)
    if backend.on_kubernetes:
        assert backend.worker_exists(name)
    response = api.delete(f"/deployments/{name}")
    assert response.status_code == 200, response.text
    assert api.get(f"/deployments/{name}").status_code == 404
    if backend.on_kubernetes:
        assert not backend.worker_exists(name)  # the Deployment is gone from the cluster
        eventually(lambda: process_gone(pid), "the pod's process to stop")
    else:
        assert process_gone(pid)
