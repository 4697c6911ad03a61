"""Multi-step pipelines end to end on local workers: creation and its rejections, runs
with per-node steps, failure propagation, files between nodes, deletion, deployments."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.platform.stepkit import archive_of, post_step, step_form, write_folder
from tests.platform.test_auth import assert_error
from tests.platform.test_runs import outputs_of, run, run_and_wait, wait

NODES_CODE = '''
import os
import time


def split(text: str) -> dict:
    print(f"splitting {text!r}")
    return {"words": text.split()}


def count(words: list) -> dict:
    return {"n": len(words)}


def longest(words: list) -> dict:
    return {"word": max(words, key=len)}


def report(n: float, word: str, prefix: str) -> dict:
    return {"line": f"{prefix}{n:g} words, longest {word}"}


def boom(words: list) -> dict:
    raise ValueError("no luck with " + " ".join(words))


def slow(words: list) -> dict:
    time.sleep(60)
    return {"n": len(words)}


def write_doc(text: str) -> dict:
    path = os.path.join(os.environ["GRISTMILL_IO_DIR"], "doc.txt")
    with open(path, "w") as handle:
        handle.write(text * 3)
    return {"doc": {"path": path}}


def read_doc(doc: dict) -> dict:
    with open(doc["path"]) as handle:
        data = handle.read()
    out = os.path.join(os.environ["GRISTMILL_IO_DIR"], "upper.txt")
    with open(out, "w") as handle:
        handle.write(data.upper())
    return {"size": len(data), "upper": {"path": out}}
'''

WORDS = [{"name": "words", "data_type": "array"}]
STEPS: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {
    "split": ([{"name": "text", "data_type": "string"}], WORDS),
    "count": (WORDS, [{"name": "n", "data_type": "number"}]),
    "longest": (WORDS, [{"name": "word", "data_type": "string"}]),
    "report": ([{"name": "n", "data_type": "number"}, {"name": "word", "data_type": "string"},
                {"name": "prefix", "data_type": "string", "is_required": False,
                 "default_value": ""}],
               [{"name": "line", "data_type": "string"}]),
    "boom": (WORDS, [{"name": "n", "data_type": "number"}]),
    "slow": (WORDS, [{"name": "n", "data_type": "number"}]),
    "write_doc": ([{"name": "text", "data_type": "string"}],
                  [{"name": "doc", "data_type": "file"}]),
    "read_doc": ([{"name": "doc", "data_type": "file"}],
                 [{"name": "size", "data_type": "number"},
                  {"name": "upper", "data_type": "file"}]),
}


@pytest.fixture(scope="module")
def steps(gristmill_env, tmp_path_factory) -> dict[str, str]:
    """The step of each function (its name on this environment)."""
    archive = archive_of(write_folder(tmp_path_factory.mktemp("graph"),
                                      {"src/nodes.py": NODES_CODE}))
    names = {}
    with gristmill_env.client() as api:
        for function, (inputs, outputs) in STEPS.items():
            name = f"g-{function.replace('_', '-')}-{gristmill_env.database.kind}"
            response = post_step(api, step_form(name, function_path="src/nodes.py",
                                                function_name=function, inputs=inputs,
                                                outputs=outputs), archive)
            assert response.status_code == 201, response.text
            names[function] = name
    return names


def node(name: str, step: str, **inputs: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "step_name": step, "inputs": inputs}


def diamond(steps: dict[str, str], second: str = "longest") -> list[dict[str, Any]]:
    return [
        node("split", steps["split"], text={"pipeline_input": "text"}),
        node("count", steps["count"], words={"node": "split", "output": "words"}),
        node("pick", steps[second], words={"node": "split", "output": "words"}),
        node("report", steps["report"], n={"node": "count", "output": "n"},
             word={"node": "pick", "output": "word"}, prefix={"constant": "> "}),
    ]


def create(api: httpx.Client, name: str, nodes: list[dict[str, Any]],
           outputs: list[dict[str, Any]]) -> httpx.Response:
    return api.post("/pipelines", json={"pipeline_name": name, "nodes": nodes,
                                        "outputs": outputs})


REPORT = [{"name": "line", "node": "report", "output": "line"}]


def test_a_diamond_runs_each_node_and_reports_per_node_steps(api, steps, unique) -> None:
    created = create(api, f"dia-{unique}", diamond(steps), REPORT)
    assert created.status_code == 201, created.text
    body = created.json()
    assert [n["name"] for n in body["graph"]["nodes"]] == ["split", "count", "pick", "report"]
    assert body["inputs"][0]["input_name"] == "text"
    assert body["inputs"][0]["node_name"] == "split"
    assert body["outputs"][0]["output_name"] == "line"
    assert sorted(body["steps"]) == sorted(steps[f] for f in ("split", "count", "longest",
                                                               "report"))
    assert api.get(f"/pipelines/dia-{unique}").json() == body

    execution_id, result = run_and_wait(api, f"dia-{unique}", {"text": "a graph of steps"})
    assert outputs_of(result) == {"line": "> 4 words, longest graph"}
    execution = api.get(f"/executions/{execution_id}").json()
    assert execution["status"] == "Succeeded"
    per_node = {s["name"]: s for s in execution["steps"]}
    assert list(per_node) == ["split", "count", "pick", "report"]
    assert all(s["status"] == "Succeeded" and s["start_date"] and s["end_date"]
               and s["worker"].startswith("local-") for s in per_node.values())
    assert per_node["report"]["upstream"] == ["count", "pick"]
    # report started only once both of its inputs were there
    assert per_node["report"]["start_date"] >= max(per_node["count"]["end_date"],
                                                   per_node["pick"]["end_date"])
    # a node's logs are its execution's; the graph's logs hold every node's
    split_logs = api.post(f"/executions/{per_node['split']['execution_id']}/logs",
                          json={}).json()[0]
    assert "splitting 'a graph of steps'" in [line["message"] for line in split_logs]
    all_logs = [line["message"] for line in
                api.post(f"/executions/{execution_id}/logs", json={}).json()[0]]
    assert "splitting 'a graph of steps'" in all_logs and "All 4 nodes succeeded" in all_logs
    # the nodes are not executions of the pipeline of their own
    listed = [e["execution_id"] for e in api.get(f"/pipelines/dia-{unique}/executions").json()]
    assert listed == [execution_id]
    node_read = api.get(f"/executions/{per_node['count']['execution_id']}").json()
    assert node_read["inputs"][0]["mapping_type"] == "node_output"
    assert node_read["inputs"][0]["value"] == ["a", "graph", "of", "steps"]


def test_rejections_create_nothing(api, steps, unique) -> None:
    bad_step = diamond(steps)
    bad_step[1] = node("count", "no-such-step", words={"node": "split", "output": "words"})
    assert_error(create(api, f"rej-{unique}", bad_step, REPORT), 400,
                 "Node 'count' runs step 'no-such-step', which does not exist")
    cycle = diamond(steps)
    cycle[0] = node("split", steps["split"], text={"node": "report", "output": "line"})
    assert_error(create(api, f"rej-{unique}", cycle, REPORT), 400, "The nodes form a cycle")
    mismatch = diamond(steps)
    mismatch[2] = node("pick", steps["longest"], words={"node": "split", "output": "nope"})
    assert_error(create(api, f"rej-{unique}", mismatch, REPORT), 400, "has no such output")
    typed = diamond(steps)
    typed[3]["inputs"]["word"] = {"node": "count", "output": "n"}
    assert_error(create(api, f"rej-{unique}", typed, REPORT), 400, "Type mismatch")
    unconnected = diamond(steps)
    del unconnected[3]["inputs"]["word"]
    assert_error(create(api, f"rej-{unique}", unconnected, REPORT), 400,
                 "Input 'word' of node 'report' is required and not connected")
    twice = [*diamond(steps), node("count", steps["count"], words={"constant": []})]
    assert_error(create(api, f"rej-{unique}", twice, REPORT), 400, "Two nodes are named")
    assert api.get(f"/pipelines/rej-{unique}").status_code == 404
    # the one-step form still names one step, and says where graphs go
    two = api.post("/pipelines", json={"pipeline_name": f"rej-{unique}",
                                       "step_names": [steps["split"], steps["count"]]})
    assert_error(two, 400, "a multi-step pipeline is created with nodes")


def test_a_failing_node_fails_the_execution_and_skips_what_follows(api, steps,
                                                                   unique) -> None:
    nodes = diamond(steps, second="boom")
    nodes[2] = node("pick", steps["boom"], words={"node": "split", "output": "words"})
    nodes[3]["inputs"]["n"] = {"node": "pick", "output": "n"}
    nodes[3]["inputs"]["word"] = {"constant": "w"}
    nodes[1] = node("count", steps["slow"], words={"node": "split", "output": "words"})
    nodes.append(node("after", steps["count"], words={"node": "split", "output": "words"}))
    del nodes[1]  # the slow branch, below, runs beside the failing one
    nodes.append(node("sleepy", steps["slow"], words={"node": "split", "output": "words"}))
    created = create(api, f"fail-{unique}", nodes, REPORT)
    assert created.status_code == 201, created.text
    execution_id, result = run_and_wait(api, f"fail-{unique}", {"text": "x y"})
    assert_error(result, 500, "node 'pick' failed: ValueError: no luck with x y")
    execution = api.get(f"/executions/{execution_id}").json()
    assert execution["status"] == "Failed"
    assert execution["status_reason"].startswith("node 'pick' failed")
    per_node = {s["name"]: s for s in execution["steps"]}
    assert per_node["split"]["status"] == "Succeeded"
    assert per_node["pick"]["status"] == "Failed"
    assert per_node["report"]["status"] == "Skipped" and per_node["report"]["execution_id"] is None
    # the independent slow branch was running: it is stopped, not left behind
    assert per_node["sleepy"]["status"] == "Cancelled"
    sleepy = api.get(f"/executions/{per_node['sleepy']['execution_id']}").json()
    assert sleepy["status"] == "Cancelled"


def test_files_pass_between_nodes_through_the_data_store(api, steps, unique) -> None:
    nodes = [node("write", steps["write_doc"], text={"pipeline_input": "text"}),
             node("read", steps["read_doc"], doc={"node": "write", "output": "doc"})]
    outputs = [{"name": "size", "node": "read", "output": "size"},
               {"name": "upper", "node": "read", "output": "upper"}]
    assert create(api, f"files-{unique}", nodes, outputs).status_code == 201
    execution_id, result = run_and_wait(
        api, f"files-{unique}", {"text": "ab"},
        outputs_mapping=[{"pipeline_output_name": "upper",
                          "datastore_path": f"graphs/{unique}/upper.txt"}])
    assert outputs_of(result)["size"] == 6
    assert api.get(f"/executions/{execution_id}/outputs/upper").content == b"ABABAB"
    info = api.post("/data-store/information",
                    json={"path_to_object": f"graphs/{unique}/upper.txt"})
    assert info.status_code == 200 and info.json()["size"] == 6


def test_deleting_a_running_graph_stops_its_nodes(api, steps, unique) -> None:
    nodes = [node("split", steps["split"], text={"pipeline_input": "text"}),
             node("a", steps["slow"], words={"node": "split", "output": "words"}),
             node("b", steps["slow"], words={"node": "split", "output": "words"})]
    assert create(api, f"del-{unique}", nodes, []).status_code == 201
    started = run(api, f"del-{unique}", {"text": "x"})
    execution_id = started.json()["execution_id"]
    running: list[str] = []
    for _ in range(300):
        steps_now = api.get(f"/executions/{execution_id}").json()["steps"]
        running = [s["execution_id"] for s in steps_now
                   if s["name"] in ("a", "b") and s["status"] == "Running"]
        if len(running) == 2:
            break
        time.sleep(0.2)
    assert len(running) == 2, steps_now
    assert api.delete(f"/executions/{execution_id}").status_code == 200
    for node_id in [execution_id, *running]:
        assert api.get(f"/executions/{node_id}").status_code == 404


def _gone(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_cancelling_a_graph_stops_its_running_nodes(api, steps, unique) -> None:
    nodes = [node("split", steps["split"], text={"pipeline_input": "text"}),
             node("a", steps["slow"], words={"node": "split", "output": "words"}),
             node("b", steps["slow"], words={"node": "split", "output": "words"}),
             # waits for a: it never starts
             node("last", steps["report"], n={"node": "a", "output": "n"},
                  word={"constant": "w"})]
    assert create(api, f"can-{unique}", nodes, []).status_code == 201
    execution_id = run(api, f"can-{unique}", {"text": "x"}).json()["execution_id"]
    running: dict[str, dict[str, Any]] = {}
    for _ in range(300):
        steps_now = api.get(f"/executions/{execution_id}").json()["steps"]
        running = {s["name"]: s for s in steps_now
                   if s["name"] in ("a", "b") and s["status"] == "Running"}
        if len(running) == 2:
            break
        time.sleep(0.2)
    assert len(running) == 2, steps_now
    pids = [int(s["worker"].removeprefix("local-")) for s in running.values()]
    assert not any(_gone(pid) for pid in pids)

    cancelled = api.post(f"/executions/{execution_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "Cancelled"
    read = api.get(f"/executions/{execution_id}").json()
    assert read["status"] == "Cancelled"
    assert read["status_reason"] == "the execution was cancelled"
    assert [(s["name"], s["status"]) for s in read["steps"]] == [
        ("split", "Succeeded"), ("a", "Cancelled"), ("b", "Cancelled"), ("last", "Skipped")]
    # the running nodes' workers are stopped, the records kept
    for _ in range(100):
        if all(_gone(pid) for pid in pids):
            break
        time.sleep(0.1)
    assert all(_gone(pid) for pid in pids)
    for name in ("a", "b"):
        node_read = api.get(f"/executions/{running[name]['execution_id']}").json()
        assert node_read["status"] == "Cancelled"
        assert node_read["status_reason"] == "its pipeline's execution was cancelled"
    assert_error(wait(api, execution_id), 500, f"Execution {execution_id} was cancelled")
    # what has ended cannot be cancelled; what does not exist is not found
    assert_error(api.post(f"/executions/{execution_id}/cancel"), 409,
                 "has already ended (status Cancelled)")
    assert api.post(f"/executions/{execution_id}/cancel").json()["name"] == "ExecutionEnded"
    assert api.post(f"/executions/nope-{unique}/cancel").status_code == 404


def test_endpoint_and_periodic_deployments_of_a_graph(gristmill_env, api, steps,
                                                      unique) -> None:
    from tests.platform.test_deployments import call, fire_now, results

    assert create(api, f"dep-{unique}", diamond(steps), REPORT).status_code == 201
    created = api.post("/endpoints", json={
        "pipeline_name": f"dep-{unique}", "name": f"gep-{unique}", "mode": "elastic",
        "inputs_mapping": [{"pipeline_input_name": "text", "endpoint_input_name": "sentence"}],
        "outputs_mapping": [{"pipeline_output_name": "line", "endpoint_output_name": "out"}]})
    assert created.status_code == 201, created.text
    token = created.json()["endpoint_token"]
    triggered = call(gristmill_env, f"gep-{unique}", token, {"sentence": "one two three"})
    assert triggered.status_code == 303, triggered.text
    execution_id = triggered.headers["craft-ai-execution-id"]
    final = results(gristmill_env, f"gep-{unique}", execution_id, token)
    assert final.json()["outputs"] == {"out": "> 3 words, longest three"}
    listed = api.get(f"/deployments/gep-{unique}/executions").json()
    assert [e["execution_id"] for e in listed] == [execution_id]

    periodic = api.post("/periodic-deployment", json={
        "pipeline_name": f"dep-{unique}", "name": f"gcron-{unique}", "mode": "elastic",
        "schedule": "*/5 * * * *",
        "inputs_mapping": [{"pipeline_input_name": "text", "constant_value": "tick tock"}],
        "outputs_mapping": [{"pipeline_output_name": "line", "is_null": True}]})
    assert periodic.status_code == 201, periodic.text
    fire_now(gristmill_env, f"gcron-{unique}")
    fired = api.get(f"/deployments/gcron-{unique}/executions").json()
    assert len(fired) == 1
    assert outputs_of(wait(api, fired[0]["execution_id"])) == {"line": None}
    read = api.get(f"/executions/{fired[0]['execution_id']}").json()
    assert read["status"] == "Succeeded" and read["execution_rule"] == "periodic"
    assert [s["status"] for s in read["steps"]] == ["Succeeded"] * 4



def _low_latency(api: httpx.Client, pipeline: str, name: str, **mapping: Any
                 ) -> dict[str, Any]:
    created = api.post("/endpoints", json={"pipeline_name": pipeline, "name": name,
                                           "mode": "low_latency", **mapping})
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


def test_a_low_latency_deployment_runs_the_nodes_on_its_warm_workers(gristmill_env, api,
                                                                     steps, unique) -> None:
    from tests.platform.test_deployments import call

    # "again" runs the step "count" runs: the two share that step's pool
    nodes = [*diamond(steps),
             node("again", steps["count"], words={"node": "split", "output": "words"})]
    outputs = [*REPORT, {"name": "again", "node": "again", "output": "n"}]
    assert create(api, f"llg-{unique}", nodes, outputs).status_code == 201
    created = _low_latency(api, f"llg-{unique}", f"llg-{unique}", outputs_mapping=[
        {"pipeline_output_name": "line", "endpoint_output_name": "out"},
        {"pipeline_output_name": "again", "endpoint_output_name": "again"}])
    # up once a worker of each distinct step serves: four pools for five nodes
    assert created["status"] == "up", created
    assert len(created["pods"]) == 4
    assert {p["status"] for p in created["pods"]} == {"running"}
    token = created["endpoint_token"]

    workers: list[dict[str, str]] = []
    for sentence, line in (("one two three", "> 3 words, longest three"),
                           ("warm again", "> 2 words, longest again")):
        answer = call(gristmill_env, f"llg-{unique}", token, {"text": sentence}, sdk=False)
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"] == {"out": line, "again": len(sentence.split())}
        execution = api.get(f"/executions/{answer.headers['craft-ai-execution-id']}").json()
        assert execution["status"] == "Succeeded"
        per_node = {s["name"]: s for s in execution["steps"]}
        assert [s["status"] for s in per_node.values()] == ["Succeeded"] * 5
        assert per_node["report"]["start_date"] >= max(per_node["count"]["end_date"],
                                                       per_node["pick"]["end_date"])
        workers.append({name: s["worker"] for name, s in per_node.items()})
    pods = {p["pod_id"] for p in created["pods"]}
    # every node ran on a warm worker of the deployment, the same ones for both calls
    assert set(workers[0].values()) == pods and workers[0] == workers[1]
    assert workers[0]["count"] == workers[0]["again"]
    assert len({workers[0][n] for n in ("split", "count", "pick", "report")}) == 4
    node_logs = api.post(f"/executions/{per_node['split']['execution_id']}/logs",
                         json={}).json()[0]
    assert "splitting 'warm again'" in [line["message"] for line in node_logs]
    # one execution per call in the deployment's list: the nodes are in its steps
    assert len(api.get(f"/deployments/llg-{unique}/executions").json()) == 2

    # an update rolls every node pool; the deployment is up once all the new ones serve
    updated = api.patch(f"/deployments/llg-{unique}", json={"description": "rolled"})
    assert updated.status_code == 200, updated.text
    assert updated.json()["status"] == "up", updated.json()
    rolled = {p["pod_id"] for p in updated.json()["pods"]}
    assert len(rolled) == 4 and not rolled & pods
    answer = call(gristmill_env, f"llg-{unique}", token, {"text": "a b"}, sdk=False)
    assert answer.status_code == 200, answer.text
    execution = api.get(f"/executions/{answer.headers['craft-ai-execution-id']}").json()
    assert {s["worker"] for s in execution["steps"]} == rolled
    # deleting the deployment stops every node pool's worker (each has a folder while up)
    folders = [gristmill_env.data_dir / "low-latency" / pod for pod in rolled]
    assert all(folder.is_dir() for folder in folders)
    assert api.delete(f"/deployments/llg-{unique}").status_code == 200
    assert not any(folder.exists() for folder in folders)


def test_a_multi_step_variant_runs_its_nodes_on_node_pools(gristmill_env, api, steps,
                                                            unique) -> None:
    from tests.platform.test_deployments import call

    count_out = [{"name": "n", "node": "count", "output": "n"}]
    chain = [node("split", steps["split"], text={"pipeline_input": "text"}),
             node("count", steps["count"], words={"node": "split", "output": "words"})]
    own, variant, name = f"vown-{unique}", f"vgraph-{unique}", f"vdep-{unique}"
    assert create(api, own, chain, count_out).status_code == 201
    # the variant runs a step the deployment's own pipeline does not ("longest")
    assert create(api, variant, [
        *chain, node("pick", steps["longest"], words={"node": "split", "output": "words"})],
        count_out).status_code == 201
    created = _low_latency(api, own, name)
    assert created["status"] == "up" and len(created["pods"]) == 2, created
    own_pods = {p["pod_id"] for p in created["pods"]}
    token = created["endpoint_token"]
    assert api.put(f"/deployments/{name}/traffic",
                   json={"split": {variant: 1}}).status_code == 200

    for text, n in (("one two three", 3), ("four five", 2)):
        answer = call(gristmill_env, name, token, {"text": text}, sdk=False)
        assert answer.status_code == 200, answer.text
        assert answer.headers["X-Gristmill-Pipeline"] == variant
        assert answer.json()["outputs"] == {"n": n}
        execution = api.get(f"/executions/{answer.headers['craft-ai-execution-id']}").json()
        assert execution["pipeline_name"] == variant
        per_node = {s["name"]: s for s in execution["steps"]}
        assert [s["status"] for s in per_node.values()] == ["Succeeded"] * 3
    # the nodes ran on warm workers: the steps the two pipelines share on the same pools
    assert {per_node["split"]["worker"], per_node["count"]["worker"]} == own_pods
    assert per_node["pick"]["worker"] not in own_pods
    assert per_node["pick"]["worker"] is not None
    # the deployment's status and pods are its own pipeline's
    shown = api.get(f"/deployments/{name}").json()
    assert shown["status"] == "up" and {p["pod_id"] for p in shown["pods"]} == own_pods

    # as a shadow: the own pipeline answers, the variant's copy runs on the node pools
    assert api.put(f"/deployments/{name}/traffic",
                   json={"shadow": [variant]}).status_code == 200
    answer = call(gristmill_env, name, token, {"text": "a b c d"}, sdk=False)
    assert answer.headers["X-Gristmill-Pipeline"] == own
    assert answer.json()["outputs"] == {"n": 4}
    deadline = time.monotonic() + 60
    while True:
        copies = [e for e in api.get(f"/deployments/{name}/executions").json()
                  if e["shadow"] and e["status"] in ("Succeeded", "Failed")]
        if copies or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [(c["pipeline_name"], c["status"]) for c in copies] == [(variant, "Succeeded")]

    # deleting the deployment stops the variant's node pools too
    folder = gristmill_env.data_dir / "low-latency" / per_node["pick"]["worker"]
    assert folder.is_dir()
    assert api.delete(f"/deployments/{name}").status_code == 200
    assert not folder.exists()


COLD_CODE = '''
import os

if os.environ.get("GRISTMILL_WORKER_SOCKET"):  # only a warm worker sets it
    raise RuntimeError("this step cannot start warm")


def count(words: list) -> dict:
    return {"n": len(words)}
'''


def test_a_node_step_whose_worker_cannot_start_fails_the_deployment(
        gristmill_env, api, steps, unique, tmp_path) -> None:
    from tests.platform.test_deployments import call

    cold = f"cold-{unique}"
    archive = archive_of(write_folder(tmp_path / "cold", {"src/cold.py": COLD_CODE}))
    assert post_step(api, step_form(cold, function_path="src/cold.py", function_name="count",
                                    inputs=STEPS["count"][0], outputs=STEPS["count"][1]),
                     archive).status_code == 201
    nodes = [node("split", steps["split"], text={"pipeline_input": "text"}),
             node("count", cold, words={"node": "split", "output": "words"})]
    assert create(api, f"cold-{unique}", nodes,
                  [{"name": "n", "node": "count", "output": "n"}]).status_code == 201
    # elastic, the step runs
    assert outputs_of(run_and_wait(api, f"cold-{unique}", {"text": "a b"})[1]) == {"n": 2}
    created = _low_latency(api, f"cold-{unique}", f"cold-{unique}")
    assert created["status"] == "creation_failed"
    assert created["status_reason"] == (f"the worker of step {cold!r} could not be started: "
                                        "RuntimeError: this step cannot start warm")
    refused = call(gristmill_env, f"cold-{unique}", created["endpoint_token"], {"text": "a"},
                   sdk=False)
    assert_error(refused, 409, "is not ready (status creation_failed)")


FRAGILE_CODE = """
import os

BROKEN = {broken!r}

if os.environ.get("GRISTMILL_WORKER_SOCKET") and os.path.exists(BROKEN):
    raise RuntimeError("broken since the crash")


def count(words: list) -> dict:
    if words == ["die"]:  # the worker dies; its restarts cannot import this any more
        open(BROKEN, "w").close()
        os._exit(3)
    return {{"n": len(words)}}
"""


def _status_becomes(api: httpx.Client, name: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        shown: dict[str, Any] = api.get(f"/deployments/{name}").json()
        if shown["status"] == status or time.monotonic() > deadline:
            return shown
        time.sleep(0.2)


def test_a_node_pool_that_gives_up_after_the_deployment_is_up_shows_on_it(
        gristmill_env, api, steps, unique, tmp_path) -> None:
    from tests.platform.test_deployments import call

    fragile, broken = f"fragile-{unique}", tmp_path / "broken"
    archive = archive_of(write_folder(tmp_path / "fragile", {
        "src/fragile.py": FRAGILE_CODE.format(broken=str(broken))}))
    assert post_step(api, step_form(fragile, function_path="src/fragile.py",
                                    function_name="count", inputs=STEPS["count"][0],
                                    outputs=STEPS["count"][1]), archive).status_code == 201
    nodes = [node("split", steps["split"], text={"pipeline_input": "text"}),
             node("count", fragile, words={"node": "split", "output": "words"})]
    assert create(api, fragile, nodes,
                  [{"name": "n", "node": "count", "output": "n"}]).status_code == 201
    created = _low_latency(api, fragile, fragile)
    assert created["status"] == "up", created
    token = created["endpoint_token"]
    assert call(gristmill_env, fragile, token, {"text": "a b"}, sdk=False).json()[
        "outputs"] == {"n": 2}

    # the count pool's worker dies and cannot start again: its pool gives up, and the
    # deployment says so, naming the step, instead of staying up
    assert call(gristmill_env, fragile, token, {"text": "die"}, sdk=False).status_code == 500
    shown = _status_becomes(api, fragile, "creation_failed")
    assert shown["status"] == "creation_failed", shown
    assert shown["status_reason"].startswith(
        f"the worker of step {fragile!r} failed: the worker keeps failing"), shown
    refused = call(gristmill_env, fragile, token, {"text": "a"}, sdk=False)
    assert_error(refused, 409, "is not ready (status creation_failed)")

    # fixed and rolled: up again once every pool serves
    broken.unlink()
    updated = api.patch(f"/deployments/{fragile}", json={"description": "fixed"})
    assert updated.status_code == 200, updated.text
    assert updated.json()["status"] == "up", updated.json()
    assert updated.json()["status_reason"] is None
    assert call(gristmill_env, fragile, token, {"text": "a b c"}, sdk=False).json()[
        "outputs"] == {"n": 3}


def test_a_failing_node_fails_a_low_latency_execution(gristmill_env, api, steps,
                                                      unique) -> None:
    from tests.platform.test_deployments import call

    nodes = [node("split", steps["split"], text={"pipeline_input": "text"}),
             node("pick", steps["boom"], words={"node": "split", "output": "words"}),
             node("report", steps["report"], n={"node": "pick", "output": "n"},
                  word={"constant": "w"})]
    assert create(api, f"llf-{unique}", nodes, REPORT).status_code == 201
    token = _low_latency(api, f"llf-{unique}", f"llf-{unique}")["endpoint_token"]
    answer = call(gristmill_env, f"llf-{unique}", token, {"text": "x y"}, sdk=False)
    assert_error(answer, 500, "node 'pick' failed: ValueError: no luck with x y")
    execution = api.get(f"/executions/{answer.headers['craft-ai-execution-id']}").json()
    assert execution["status"] == "Failed"
    assert [(s["name"], s["status"]) for s in execution["steps"]] == [
        ("split", "Succeeded"), ("pick", "Failed"), ("report", "Skipped")]
    # the failure did not take the warm workers down: the next call runs on them
    again = call(gristmill_env, f"llf-{unique}", token, {"text": "z"}, sdk=False)
    assert_error(again, 500, "node 'pick' failed: ValueError: no luck with z")


def test_files_pass_between_low_latency_nodes_through_the_data_store(gristmill_env, api,
                                                                     steps, unique) -> None:
    from tests.platform.test_datastore import download
    from tests.platform.test_deployments import call

    nodes = [node("write", steps["write_doc"], text={"pipeline_input": "text"}),
             node("read", steps["read_doc"], doc={"node": "write", "output": "doc"})]
    outputs = [{"name": "size", "node": "read", "output": "size"},
               {"name": "upper", "node": "read", "output": "upper"}]
    assert create(api, f"llfile-{unique}", nodes, outputs).status_code == 201
    token = _low_latency(api, f"llfile-{unique}", f"llfile-{unique}", outputs_mapping=[
        {"pipeline_output_name": "size", "endpoint_output_name": "size"},
        {"pipeline_output_name": "upper",
         "datastore_path": f"graphs/{unique}/ll-upper.txt"}])["endpoint_token"]
    answer = call(gristmill_env, f"llfile-{unique}", token, {"text": "ab"}, sdk=False)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"] == {"size": 6}
    execution_id = answer.headers["craft-ai-execution-id"]
    assert api.get(f"/executions/{execution_id}/outputs/upper").content == b"ABABAB"
    read_node = api.get(f"/executions/{execution_id}").json()["steps"][1]
    node_read = api.get(f"/executions/{read_node['execution_id']}").json()
    # the downstream node's input is an object of the data store, copied from upstream's
    assert node_read["inputs"][0]["mapping_type"] == "node_output"
    assert download(api, f"graphs/{unique}/ll-upper.txt").content == b"ABABAB"


def test_deleting_a_step_used_by_a_graph_needs_force(api, steps, unique) -> None:
    nodes = [node("split", steps["split"], text={"pipeline_input": "text"})]
    assert create(api, f"uses-{unique}", nodes, []).status_code == 201
    refused = api.delete(f"/steps/{steps['split']}")
    assert refused.status_code == 409 and f"uses-{unique}" in refused.json()["message"]


def _rewind(env: Any, execution_id: str, *, node_running: str | None,
            drop_node: str) -> None:
    """Put a finished graph execution back as a control service that stopped mid-graph
    would have left it: running and quiet, node ``drop_node`` never started, and
    ``node_running`` (if any) running on a worker that is gone."""
    import asyncio
    from datetime import timedelta

    from sqlalchemy import delete, select

    from gristmill_platform.db.engine import create_engine, create_session_factory
    from gristmill_platform.db.models.executions import Execution
    from gristmill_platform.db.types import utcnow

    async def go() -> None:
        engine = create_engine(env.settings.database_url)
        try:
            factory = create_session_factory(engine)
            long_ago = utcnow() - timedelta(hours=1)
            async with factory() as session, session.begin():
                await session.execute(delete(Execution).where(
                    Execution.parent_id == execution_id, Execution.node_name == drop_node))
                parent = (await session.execute(select(Execution).where(
                    Execution.id == execution_id))).scalar_one()
                parent.status, parent.ended_at, parent.heartbeat_at = (
                    "running", None, long_ago)
                parent.outputs = [{**o, "value": None} for o in parent.outputs]
                if node_running is not None:
                    node = (await session.execute(select(Execution).where(
                        Execution.parent_id == execution_id,
                        Execution.node_name == node_running))).scalar_one()
                    node.status, node.ended_at, node.heartbeat_at = (
                        "running", None, long_ago)
                    # a worker process that no longer exists
                    node.handle = {**(node.handle or {}), "pid": 2**22 + 17,
                                   "create_time": 1.0}
        finally:
            await engine.dispose()

    asyncio.run(go())


def _split_count_chain(api: Any, archive: bytes) -> None:
    """The steps split and count, and the pipeline "chain" running one then the other."""
    for function in ("split", "count"):
        inputs, outputs = STEPS[function]
        assert post_step(api, step_form(function, function_path="src/nodes.py",
                                        function_name=function, inputs=inputs,
                                        outputs=outputs), archive).status_code == 201
    chain = [node("split", "split", text={"pipeline_input": "text"}),
             node("count", "count", words={"node": "split", "output": "words"})]
    assert create(api, "chain", chain,
                  [{"name": "n", "node": "count", "output": "n"}]).status_code == 201


def test_a_restarted_control_service_resumes_or_fails_a_graph(tmp_path, database) -> None:
    from tests.conftest import start_environment

    if database.kind != "sqlite":
        pytest.skip("one database is enough for the restart")
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    archive = archive_of(write_folder(tmp_path / "code", {"src/nodes.py": NODES_CODE}))
    server, env, _ = start_environment(tmp_path / "env", url)
    try:
        with env.client() as api:
            _split_count_chain(api, archive)
            resumed, result = run_and_wait(api, "chain", {"text": "a b c"})
            failed, _ = run_and_wait(api, "chain", {"text": "d e"})
    finally:
        server.stop()
    _rewind(env, resumed, node_running=None, drop_node="count")
    _rewind(env, failed, node_running="split", drop_node="count")
    server, env, _ = start_environment(tmp_path / "env", url)
    try:
        with env.client() as api:
            # the reconciler finds both quiet: one goes on where it stopped ...
            assert outputs_of(wait(api, resumed)) == {"n": 3}
            steps_read = api.get(f"/executions/{resumed}").json()["steps"]
            assert [s["status"] for s in steps_read] == ["Succeeded", "Succeeded"]
            # ... the other had a node whose worker is gone: it fails, naming the node
            assert_error(wait(api, failed), 500, "node 'split' failed")
            steps_read = api.get(f"/executions/{failed}").json()["steps"]
            assert [s["status"] for s in steps_read] == ["Failed", "Skipped"]
    finally:
        server.stop()


def test_a_restarted_control_service_brings_a_low_latency_graph_up_again(tmp_path,
                                                                        database) -> None:
    from tests.conftest import start_environment
    from tests.platform.test_deployments import call

    if database.kind != "sqlite":
        pytest.skip("one database is enough for the restart")
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    archive = archive_of(write_folder(tmp_path / "code", {"src/nodes.py": NODES_CODE}))
    server, env, _ = start_environment(tmp_path / "env", url)
    try:
        with env.client() as api:
            _split_count_chain(api, archive)
            token = _low_latency(api, "chain", "chain-ll")["endpoint_token"]
            before = {p["pod_id"] for p in api.get("/deployments/chain-ll").json()["pods"]}
            assert len(before) == 2
    finally:
        server.stop()
    server, env, _ = start_environment(tmp_path / "env", url)
    try:
        with env.client() as api:
            # the node pools start again at start-up; a call meanwhile waits for them
            answer = call(env, "chain-ll", token, {"text": "a b c"}, sdk=False)
            assert answer.status_code == 200, answer.text
            assert answer.json()["outputs"] == {"n": 3}
            shown = api.get("/deployments/chain-ll").json()
            assert shown["status"] == "up"
            assert {p["pod_id"] for p in shown["pods"]} == before
            assert {p["status"] for p in shown["pods"]} == {"running"}
    finally:
        server.stop()


def _interrupt_build(env: Any, step_name: str) -> None:
    """Put a step back as a control service stopped mid-build leaves it: pending, with
    no environment yet (the next start builds it again)."""
    import asyncio

    from sqlalchemy import select

    from gristmill_platform.db.engine import create_engine, create_session_factory
    from gristmill_platform.db.models.steps import Step

    async def go() -> None:
        engine = create_engine(env.settings.database_url)
        try:
            async with create_session_factory(engine)() as session, session.begin():
                step = (await session.execute(select(Step).where(
                    Step.name == step_name))).scalar_one()
                step.status, step.environment_key = "creation_pending", None
        finally:
            await engine.dispose()

    asyncio.run(go())


def test_a_restarted_control_service_starts_node_pools_once_their_step_is_built(
        tmp_path, database) -> None:
    from tests.conftest import start_environment
    from tests.platform.test_deployments import call

    if database.kind != "sqlite":
        pytest.skip("one database is enough for the restart")
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    archive = archive_of(write_folder(tmp_path / "code", {"src/nodes.py": NODES_CODE}))
    server, env, _ = start_environment(tmp_path / "env", url)
    try:
        with env.client() as api:
            _split_count_chain(api, archive)
            token = _low_latency(api, "chain", "chain-ll")["endpoint_token"]
    finally:
        server.stop()
    # the restart interrupted the build of the step "count" runs: its node pool waits for
    # the build started again, instead of starting a worker without an environment
    _interrupt_build(env, "count")
    server, env, _ = start_environment(tmp_path / "env", url)
    try:
        with env.client() as api:
            answer = call(env, "chain-ll", token, {"text": "a b c"}, sdk=False)
            assert answer.status_code == 200, answer.text
            assert answer.json()["outputs"] == {"n": 3}
            assert api.get("/steps/count").json()["creation_info"]["status"] == "ready"
            shown = api.get("/deployments/chain-ll").json()
            assert shown["status"] == "up", shown
            assert {p["status"] for p in shown["pods"]} == {"running"}
    finally:
        server.stop()


def test_a_cached_node_reuses_the_outputs_of_an_identical_earlier_run(api, steps,
                                                                      unique) -> None:
    nodes = [node("write", steps["write_doc"], text={"pipeline_input": "text"}),
             {**node("read", steps["read_doc"], doc={"node": "write", "output": "doc"}),
              "cache": True},
             {**node("split", steps["split"], text={"pipeline_input": "text"}),
              "cache": True}]
    outputs = [{"name": "size", "node": "read", "output": "size"},
               {"name": "upper", "node": "read", "output": "upper"},
               {"name": "words", "node": "split", "output": "words"}]
    created = create(api, f"cache-{unique}", nodes, outputs)
    assert created.status_code == 201, created.text
    assert {n["name"]: n["cache"] for n in created.json()["graph"]["nodes"]} == {
        "write": False, "read": True, "split": True}

    def cached_nodes(execution_id: str) -> dict[str, bool]:
        read = api.get(f"/executions/{execution_id}").json()
        assert read["status"] == "Succeeded"
        return {s["name"]: s["cached"] for s in read["steps"]}

    first, result = run_and_wait(api, f"cache-{unique}", {"text": f"{unique} x"})
    assert outputs_of(result)["words"] == [unique, "x"]
    assert cached_nodes(first) == {"write": False, "read": False, "split": False}
    second, result = run_and_wait(api, f"cache-{unique}", {"text": f"{unique} x"})
    # same inputs (the file by content: 'write' ran again and wrote the same bytes)
    assert cached_nodes(second) == {"write": False, "read": True, "split": True}
    assert outputs_of(result)["size"] == 3 * len(f"{unique} x")
    assert api.get(f"/executions/{second}/outputs/upper").content == \
        (f"{unique} x" * 3).upper().encode()
    split_node = next(s for s in api.get(f"/executions/{second}").json()["steps"]
                      if s["name"] == "split")
    logs = api.post(f"/executions/{split_node['execution_id']}/logs", json={}).json()[0]
    assert any(line["message"].startswith("Cached: outputs reused from execution")
               for line in logs)
    third, _ = run_and_wait(api, f"cache-{unique}", {"text": f"{unique} y"})
    assert cached_nodes(third) == {"write": False, "read": False, "split": False}
