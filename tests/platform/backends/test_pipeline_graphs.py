"""Multi-step pipelines behave the same on every backend: each node is an elastic
execution of its own on the backend (local process, pod), the graph's outputs and
per-node steps are the same, a failing node fails the graph and skips what follows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.platform.backends.conftest import Backend
from tests.platform.backends.test_elastic_executions import STEP_CODE, TEXT_IN, TEXT_OUT
from tests.platform.stepkit import archive_of, post_step, step_form, write_folder
from tests.platform.test_auth import assert_error
from tests.platform.test_runs import outputs_of, run, run_and_wait


@pytest.fixture(scope="package")
def graph_archive(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    folder = tmp_path_factory.mktemp("backend-graph-steps")
    return archive_of(write_folder(folder, {"src/steps.py": STEP_CODE}))


def make_step(api: httpx.Client, archive: bytes, name: str, function: str) -> str:
    response = post_step(api, step_form(name, function_path="src/steps.py",
                                        function_name=function, inputs=TEXT_IN,
                                        outputs=TEXT_OUT), archive)
    assert response.status_code == 201, response.text
    return name


def text_of(node: str) -> dict[str, dict[str, str]]:
    return {"text": {"node": node, "output": "text"}}


def test_a_graph_runs_each_node_on_the_backend(backend: Backend, api: httpx.Client,
                                               graph_archive: bytes, unique: str) -> None:
    archive = graph_archive
    upper = make_step(api, archive, f"gupper-{unique}", "upper")
    chatty = make_step(api, archive, f"gchatty-{unique}", "chatty")
    created = api.post("/pipelines", json={
        "pipeline_name": f"graph-{unique}",
        "nodes": [{"name": "first", "step_name": upper,
                   "inputs": {"text": {"pipeline_input": "text"}}},
                  {"name": "left", "step_name": chatty, "inputs": text_of("first")},
                  {"name": "right", "step_name": upper, "inputs": text_of("first")}],
        "outputs": [{"name": "left", "node": "left", "output": "text"},
                    {"name": "right", "node": "right", "output": "text"}]})
    assert created.status_code == 201, created.text
    execution_id, result = run_and_wait(api, f"graph-{unique}", {"text": "ab"})
    assert outputs_of(result) == {"left": "AB", "right": "AB"}
    steps = api.get(f"/executions/{execution_id}").json()["steps"]
    assert [(s["name"], s["status"]) for s in steps] == [
        ("first", "Succeeded"), ("left", "Succeeded"), ("right", "Succeeded")]
    assert len({s["worker"] for s in steps}) == 3  # one worker (process or pod) each
    lines = api.post(f"/executions/{execution_id}/logs", json={}).json()[0]
    assert "line 0 of AB" in [line["message"] for line in lines]


def test_a_failing_node_fails_the_graph_on_the_backend(backend: Backend, api: httpx.Client,
                                                       graph_archive: bytes, unique: str
                                                       ) -> None:
    archive = graph_archive
    upper = make_step(api, archive, f"fupper-{unique}", "upper")
    boom = make_step(api, archive, f"fboom-{unique}", "boom")
    created = api.post("/pipelines", json={
        "pipeline_name": f"fgraph-{unique}",
        "nodes": [{"name": "first", "step_name": upper,
                   "inputs": {"text": {"pipeline_input": "text"}}},
                  {"name": "bad", "step_name": boom, "inputs": text_of("first")},
                  {"name": "after", "step_name": upper, "inputs": text_of("bad")}],
        "outputs": [{"name": "text", "node": "after", "output": "text"}]})
    assert created.status_code == 201, created.text
    execution_id, result = run_and_wait(api, f"fgraph-{unique}", {"text": "zz"})
    assert_error(result, 500, "node 'bad' failed: ValueError: bad text 'ZZ'")
    steps = api.get(f"/executions/{execution_id}").json()["steps"]
    assert [s["status"] for s in steps] == ["Succeeded", "Failed", "Skipped"]



def test_a_low_latency_graph_runs_its_nodes_on_warm_workers_on_the_backend(
        backend: Backend, api: httpx.Client, graph_archive: bytes, unique: str) -> None:
    from tests.platform.backends.test_low_latency import deployment

    if backend.name == "kubernetes-real":
        pytest.skip("low-latency workers on a real cluster: the pool reaches pods at their "
                    "IPs, which this machine does not route to")
    archive = graph_archive
    upper = make_step(api, archive, f"lupper-{unique}", "upper")
    chatty = make_step(api, archive, f"lchatty-{unique}", "chatty")
    name = f"lgraph-{unique}"
    created = api.post("/pipelines", json={
        "pipeline_name": name,
        "nodes": [{"name": "first", "step_name": upper,
                   "inputs": {"text": {"pipeline_input": "text"}}},
                  {"name": "left", "step_name": chatty, "inputs": text_of("first")},
                  {"name": "right", "step_name": upper, "inputs": text_of("first")}],
        "outputs": [{"name": "left", "node": "left", "output": "text"},
                    {"name": "right", "node": "right", "output": "text"}]})
    assert created.status_code == 201, created.text
    deployed = api.post("/endpoints", json={"pipeline_name": name, "name": name,
                                            "mode": "low_latency"})
    assert deployed.status_code == 201, deployed.text
    body = deployed.json()
    assert body["status"] == "up", (body["status_reason"], body.get("pods"))
    pods = {pod["pod_id"] for pod in deployment(api, name)["pods"]}
    assert len(pods) == 2  # one pool per distinct step: upper and chatty
    answer = httpx.post(f"{backend.env.url}/endpoints/{name}", json={"text": "ab"},
                        headers={"Authorization": f"EndpointToken {body['endpoint_token']}"},
                        timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"] == {"left": "AB", "right": "AB"}
    read = api.get(f"/executions/{answer.headers['craft-ai-execution-id']}").json()
    by_name = {s["name"]: s for s in read["steps"]}
    assert [s["status"] for s in by_name.values()] == ["Succeeded"] * 3
    # each node ran on the warm worker of its step
    assert {s["worker"] for s in by_name.values()} == pods
    assert by_name["first"]["worker"] == by_name["right"]["worker"] != by_name["left"]["worker"]
    lines = api.post(f"/executions/{by_name['left']['execution_id']}/logs", json={}).json()[0]
    assert "line 0 of AB" in [line["message"] for line in lines]
    assert api.delete(f"/deployments/{name}").status_code == 200


def test_cancelling_a_graph_stops_its_running_node_on_the_backend(
        backend: Backend, api: httpx.Client, graph_archive: bytes, unique: str,
        tmp_path: Path) -> None:
    from tests.platform.backends.test_elastic_executions import _alive, eventually, worker_gone

    api.put("/environment-variables",
            json={"environment_variables": {"BACKEND_SUITE_PID_DIR": str(tmp_path)}})
    upper = make_step(api, graph_archive, f"cupper-{unique}", "upper")
    hang = make_step(api, graph_archive, f"chang-{unique}", "hang")
    name = f"cgraph-{unique}"
    created = api.post("/pipelines", json={
        "pipeline_name": name,
        "nodes": [{"name": "first", "step_name": upper,
                   "inputs": {"text": {"pipeline_input": "text"}}},
                  {"name": "wait", "step_name": hang, "inputs": text_of("first")},
                  {"name": "after", "step_name": upper, "inputs": text_of("wait")}],
        "outputs": [{"name": "text", "node": "after", "output": "text"}]})
    assert created.status_code == 201, created.text
    started = run(api, name, {"text": unique})
    assert started.status_code == 201, started.text
    execution_id = started.json()["execution_id"]

    def node(name: str) -> dict[str, Any]:
        steps = api.get(f"/executions/{execution_id}").json()["steps"]
        found: dict[str, Any] = next(s for s in steps if s["name"] == name)
        return found

    eventually(lambda: node("wait")["status"] == "Running", "the hanging node started")
    waiting = node("wait")["execution_id"]
    local_process = backend.name in ("local", "kubernetes")  # the double runs processes here
    pid_file = tmp_path / f"{unique.upper()}.pid"
    if local_process:
        eventually(pid_file.exists, "the step wrote its pid")
    pid = int(pid_file.read_text()) if local_process else None

    cancelled = api.post(f"/executions/{execution_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "Cancelled"
    read = api.get(f"/executions/{execution_id}").json()
    assert [(s["name"], s["status"]) for s in read["steps"]] == [
        ("first", "Succeeded"), ("wait", "Cancelled"), ("after", "Skipped")]
    if pid is not None:
        eventually(lambda: not _alive(pid), "the node's worker process stopped")
    eventually(lambda: worker_gone(backend, waiting), "the node's pod was deleted")
    # the stopped worker's exit does not rewrite the outcome
    assert api.get(f"/executions/{waiting}").json()["status"] == "Cancelled"
