"""Runs end to end on local workers: the real control service, the real runner."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.platform.stepkit import archive_of, post_step, step_form, write_folder
from tests.platform.test_auth import assert_error

STEP_CODE = '''
import asyncio
import json
import os
import sys


def echo(text: str, n: float, flag: bool, cfg: dict, items: list) -> dict:
    print(f"echo {text}")
    print("to stderr", file=sys.stderr)
    return {"text": text * 2, "n": n + 1, "flag": not flag, "cfg": cfg, "items": items[::-1]}


async def echo_async(text: str) -> dict:
    await asyncio.sleep(0.01)
    return {"text": text.upper()}


def files(doc: dict, suffix: str) -> dict:
    with open(doc["path"], "rb") as handle:
        data = handle.read()
    out = os.path.join(os.environ["GRISTMILL_IO_DIR"], "result.bin")
    with open(out, "wb") as handle:
        handle.write(data + suffix.encode())
    return {"result": {"path": out}, "size": len(data)}


def boom(text: str) -> dict:
    raise ValueError(f"bad text {text!r}")


def wrong(kind: str) -> dict:
    if kind == "missing":
        return {}
    if kind == "type":
        return {"text": 42}
    if kind == "extra":
        return {"text": "x", "surprise": 1}
    return "not a dict"


def die(text: str) -> dict:
    print("about to die", flush=True)
    os.kill(os.getpid(), 9)
    return {}


def context(text: str) -> dict:
    from gristmill import Gristmill

    names = [v["name"] for v in Gristmill(progress=False).list_environment_variables()]
    return {"text": json.dumps({"execution_id": os.environ["CRAFT_AI_EXECUTION_ID"],
                                "has_token": bool(os.environ.get("CRAFT_AI_SDK_TOKEN")),
                                "sees_env_vars": names})}


def slow(text: str) -> dict:
    import time
    time.sleep(2)
    return {"text": text}
'''

TEXT_OUT = [{"name": "text", "data_type": "string"}]


@pytest.fixture(scope="module")
def step_archive(tmp_path_factory) -> bytes:
    return archive_of(write_folder(tmp_path_factory.mktemp("runs"), {"src/steps.py": STEP_CODE}))


def make_pipeline(api: httpx.Client, archive: bytes, name: str, function: str,
                  inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> str:
    response = post_step(api, step_form(name, function_path="src/steps.py",
                                        function_name=function, inputs=inputs,
                                        outputs=outputs, name_field="pipeline_name"),
                         archive, route="/pipelines")
    assert response.status_code == 201, response.text
    return name


def run(api: httpx.Client, pipeline: str, inputs: dict[str, Any] | None = None,
        files: dict[str, Any] | None = None, **mappings: Any) -> httpx.Response:
    import json

    data = {"json_inputs": json.dumps(inputs or {})}
    data.update({k: json.dumps(v) for k, v in mappings.items()})
    return api.post(f"/pipelines/{pipeline}/run", data=data, files=files)


def wait(api: httpx.Client, execution_id: str) -> httpx.Response:
    while True:
        response = api.get(f"/executions/{execution_id}/outputs",
                           params={"wait_for_results": "true"}, follow_redirects=False)
        if response.status_code != 307:
            return response


def run_and_wait(api, pipeline, inputs=None, files=None, **mappings) -> tuple[str, httpx.Response]:
    started = run(api, pipeline, inputs, files, **mappings)
    assert started.status_code == 201, started.text
    execution_id = started.json()["execution_id"]
    return execution_id, wait(api, execution_id)


def outputs_of(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return {o["pipeline_output_name"]: o.get("value") for o in response.json()["outputs"]}


ECHO_IN = [{"name": "text", "data_type": "string"}, {"name": "n", "data_type": "number"},
           {"name": "flag", "data_type": "boolean"}, {"name": "cfg", "data_type": "json"},
           {"name": "items", "data_type": "array"}]
ECHO_OUT = [{"name": "text", "data_type": "string"}, {"name": "n", "data_type": "number"},
            {"name": "flag", "data_type": "boolean"}, {"name": "cfg", "data_type": "json"},
            {"name": "items", "data_type": "array"}]


@pytest.fixture(scope="module")
def echo_pipeline(gristmill_env, step_archive) -> str:
    with gristmill_env.client() as api:
        return make_pipeline(api, step_archive, f"echo-{gristmill_env.database.kind}", "echo",
                             ECHO_IN, ECHO_OUT)


def test_run_with_every_json_type_and_track_it(api, echo_pipeline) -> None:
    values = {"text": "ab", "n": 1.5, "flag": True, "cfg": {"k": [1, None]}, "items": [1, "x"]}
    execution_id, result = run_and_wait(api, echo_pipeline, values)
    assert "_" not in execution_id
    assert outputs_of(result) == {"text": "abab", "n": 2.5, "flag": False,
                                  "cfg": {"k": [1, None]}, "items": ["x", 1]}
    execution = api.get(f"/executions/{execution_id}").json()
    assert execution["status"] == "Succeeded" and execution["end_date"]
    assert execution["inputs"][0] == {
        "pipeline_input_name": "text", "data_type": "string", "mapping_type": "run",
        "mapping_value": {"run_input_name": "text", "is_required": True}, "value": "ab"}
    assert execution["outputs"][1]["value"] == 2.5
    assert api.get(f"/executions/{execution_id}/inputs/cfg").json() == {"k": [1, None]}
    assert api.get(f"/executions/{execution_id}/outputs/text").json() == "abab"
    logs = api.post(f"/executions/{execution_id}/logs", json={}).json()
    messages = [(line["stream"], line["message"]) for line in logs[0]]
    assert ("stdout", "echo ab") in messages and ("stderr", "to stderr") in messages
    for window in ({"from": 10**30}, {"from": 1e308}, {"to": 10**17}, {"from": -10**17}):
        # beyond what a date holds: a 400 naming the bound, not a 500
        assert_error(api.post(f"/executions/{execution_id}/logs", json=window), 400,
                     "between the years 1 and 9999")
    assert api.post(f"/executions/{execution_id}/logs",
                    json={"from": 0, "to": 253402300799000}).json() == logs
    assert all(line["timestamp"].endswith("Z") for line in logs[0])
    listed = api.get(f"/pipelines/{echo_pipeline}/executions").json()
    assert execution_id in {e["execution_id"] for e in listed}
    latest = api.get(f"/pipelines/{echo_pipeline}/executions/latest").json()
    assert latest["execution_id"] == execution_id


@pytest.mark.parametrize(
    ("inputs", "fragment"),
    [
        ({"text": "a", "n": 1, "flag": True, "cfg": {}, "items": [], "nope": 1},
         "Unknown input"),
        ({"n": 1, "flag": True, "cfg": {}, "items": []}, "Missing required input(s): text"),
        ({"text": 3, "n": 1, "flag": True, "cfg": {}, "items": []}, "must be of type string"),
        ({"text": "a", "n": True, "flag": True, "cfg": {}, "items": []}, "type number"),
        ({"text": "a", "n": 1, "flag": "yes", "cfg": {}, "items": []}, "type boolean"),
        ({"text": "a", "n": 1, "flag": True, "cfg": {}, "items": {}}, "type array"),
        ({"text": "x" * 60_001, "n": 1, "flag": True, "cfg": {}, "items": []}, "0.06 MB"),
    ],
)
def test_input_rejections_create_nothing(api, echo_pipeline, inputs, fragment) -> None:
    before = len(api.get(f"/pipelines/{echo_pipeline}/executions").json())
    assert_error(run(api, echo_pipeline, inputs), 400, fragment)
    assert len(api.get(f"/pipelines/{echo_pipeline}/executions").json()) == before


BASE = {"n": 1, "flag": True, "cfg": {}, "items": []}


@pytest.mark.parametrize(
    ("mapping", "fragment"),
    [
        ([{"pipeline_input_name": "ghost", "constant_value": 1}], "does not declare"),
        ([{"pipeline_input_name": "text", "constant_value": "a", "is_null": True}],
         "exactly one source"),
        ([{"pipeline_input_name": "text", "endpoint_input_name": "t"}], "endpoint"),
        ([{"pipeline_input_name": "text", "environment_variable_name": "NOT_DEFINED_EVER"}],
         "not defined"),
        ([{"pipeline_input_name": "text", "constant_value": 5}], "type string"),
        ([{"pipeline_input_name": "text", "datastore_path": "x"}], "file inputs only"),
        ([{"pipeline_input_name": "n", "constant_value": 2}], "both given and mapped"),
    ],
)
def test_mapping_rejections(api, echo_pipeline, mapping, fragment) -> None:
    assert_error(run(api, echo_pipeline, BASE, inputs_mapping=mapping), 400, fragment)


def test_constant_env_var_and_null_mappings(api, echo_pipeline, unique) -> None:
    api.put("/environment-variables", json={"environment_variables": {f"N_{unique}": "41"}})
    mapping = [{"pipeline_input_name": "text", "constant_value": "c"},
               {"pipeline_input_name": "n", "environment_variable_name": f"N_{unique}"},
               {"pipeline_input_name": "cfg", "is_null": True}]
    execution_id, result = run_and_wait(api, echo_pipeline,
                                        {"flag": False, "items": [1]}, inputs_mapping=mapping)
    assert outputs_of(result)["n"] == 42
    assert outputs_of(result)["cfg"] is None
    execution = api.get(f"/executions/{execution_id}").json()
    sources = {i["pipeline_input_name"]: (i["mapping_type"], i["mapping_value"])
               for i in execution["inputs"]}
    assert sources["text"] == ("constant", {"constant_value": "c"})
    assert sources["n"] == ("environment_variable", {"environment_variable_name": f"N_{unique}"})
    assert sources["cfg"] == ("is_null", {"is_null": True})
    assert api.get(f"/executions/{execution_id}/inputs/cfg").json() is None


def test_file_input_and_output_and_data_store_mappings(api, step_archive, unique) -> None:
    pipeline = make_pipeline(api, step_archive, f"files-{unique}", "files",
                             [{"name": "doc", "data_type": "file"},
                              {"name": "suffix", "data_type": "string"}],
                             [{"name": "result", "data_type": "file"},
                              {"name": "size", "data_type": "number"}])
    execution_id, result = run_and_wait(api, pipeline, {"suffix": "!"},
                                        files={"doc": ("doc.txt", b"hello")})
    assert outputs_of(result)["size"] == 5
    file_output = api.get(f"/executions/{execution_id}/outputs/result")
    assert file_output.content == b"hello!"
    assert file_output.headers["content-type"] == "application/octet-stream"
    assert api.get(f"/executions/{execution_id}/inputs/doc").content == b"hello"

    # the same through the data store, with a path pattern for the output
    presigned = api.get("/data-store/upload", params={"path_to_object": f"in-{unique}.txt"}
                        ).json()
    httpx.post(presigned["signed_url"], data=presigned["fields"], files={"file": b"from store"})
    execution_id, result = run_and_wait(
        api, pipeline, {"suffix": "?"},
        inputs_mapping=[{"pipeline_input_name": "doc", "datastore_path": f"in-{unique}.txt"}],
        outputs_mapping=[{"pipeline_output_name": "result",
                          "datastore_path": f"out-{unique}/{{execution_id}}.bin"}])
    assert result.status_code == 200
    target = f"out-{unique}/{execution_id}.bin"
    info = api.post("/data-store/information", json={"path_to_object": target})
    assert info.status_code == 200 and info.json()["size"] == len(b"from store?")
    assert api.get(f"/executions/{execution_id}/outputs/result").content == b"from store?"
    missing = run(api, pipeline, {"suffix": "?"}, inputs_mapping=[
        {"pipeline_input_name": "doc", "datastore_path": f"nothing-{unique}"}])
    assert_error(missing, 400, "does not exist")
    assert_error(run(api, pipeline, {"suffix": "?", "doc": "x"}), 400, "send it as a file")


def test_data_store_mappings_name_the_users_objects_only(api, step_archive, unique) -> None:
    """A run's mappings may neither escape the store's key rules nor name the platform's
    own files (.gristmill/: step archives, other executions' inputs and outputs), which
    the platform reads and writes through the raw backend. Refused when the run is asked
    for, before anything is recorded or started."""
    pipeline = make_pipeline(api, step_archive, f"paths-{unique}", "files",
                             [{"name": "doc", "data_type": "file"},
                              {"name": "suffix", "data_type": "string"}],
                             [{"name": "result", "data_type": "file"},
                              {"name": "size", "data_type": "number"}])
    victim, _ = run_and_wait(api, pipeline, {"suffix": "!"},
                             files={"doc": ("doc.txt", b"victim")})
    own_output = f".gristmill/executions/{victim}/outputs/result"
    before = len(api.get(f"/pipelines/{pipeline}/executions").json())
    for path, fragment in ((own_output, "is reserved"), (".gristmill", "is reserved"),
                           ("../escape.txt", "'..' segments"), ("/abs.txt", "relative"),
                           ("a//b", "empty segment")):
        output = run(api, pipeline, {"suffix": "x"}, files={"doc": ("d", b"attack")},
                     outputs_mapping=[{"pipeline_output_name": "result",
                                       "datastore_path": path}])
        assert_error(output, 400, fragment)
        read = run(api, pipeline, {"suffix": "x"},
                   inputs_mapping=[{"pipeline_input_name": "doc", "datastore_path": path}])
        assert_error(read, 400, fragment)
    assert len(api.get(f"/pipelines/{pipeline}/executions").json()) == before
    assert api.get(f"/executions/{victim}/outputs/result").content == b"victim!"


def test_a_multipart_run_cut_short_is_refused(api, step_archive, unique) -> None:
    """Its file part never ended: taken as it came, the input was silently dropped and
    the run started without it."""
    import json

    pipeline = make_pipeline(api, step_archive, f"cut-{unique}", "files",
                             [{"name": "doc", "data_type": "file", "is_required": False},
                              {"name": "suffix", "data_type": "string"}],
                             [{"name": "result", "data_type": "file"},
                              {"name": "size", "data_type": "number"}])
    boundary = "gristmillboundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="json_inputs"\r\n\r\n'
            f'{json.dumps({"suffix": "!"})}\r\n--{boundary}\r\nContent-Disposition: '
            'form-data; name="doc"; filename="doc.txt"\r\n\r\n').encode() + b"the first part"
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    response = api.post(f"/pipelines/{pipeline}/run", content=body, headers=headers)
    assert_error(response, 400, "cut short")
    assert api.get(f"/pipelines/{pipeline}/executions").json() == []
    whole = api.post(f"/pipelines/{pipeline}/run", headers=headers,
                     content=body + f"\r\n--{boundary}--\r\n".encode())
    assert whole.status_code == 201, whole.text
    assert wait(api, whole.json()["execution_id"]).status_code == 200
    assert api.get(f"/executions/{whole.json()['execution_id']}/inputs/doc").content == (
        b"the first part")


def test_async_function(api, step_archive, unique) -> None:
    pipeline = make_pipeline(api, step_archive, f"async-{unique}", "echo_async",
                             [{"name": "text", "data_type": "string"}], TEXT_OUT)
    _, result = run_and_wait(api, pipeline, {"text": "up"})
    assert outputs_of(result) == {"text": "UP"}


def test_exception_fails_the_execution_with_its_traceback(api, step_archive, unique) -> None:
    pipeline = make_pipeline(api, step_archive, f"boom-{unique}", "boom",
                             [{"name": "text", "data_type": "string"}], TEXT_OUT)
    execution_id, result = run_and_wait(api, pipeline, {"text": "zz"})
    body = assert_error(result, 500, "ValueError: bad text 'zz'")
    assert body["name"] == "ExecutionFailed"
    execution = api.get(f"/executions/{execution_id}").json()
    assert execution["status"] == "Failed" and "bad text" in execution["status_reason"]
    logs = "\n".join(line["message"] for line in
                     api.post(f"/executions/{execution_id}/logs", json={}).json()[0])
    assert "Traceback" in logs and "raise ValueError" in logs


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [("missing", "'text'"), ("type", "'text'"), ("extra", "surprise"), ("str", "dict")],
)
def test_bad_results_fail_naming_the_output(api, step_archive, unique, kind, fragment) -> None:
    pipeline = make_pipeline(api, step_archive, f"wrong-{kind}-{unique}", "wrong",
                             [{"name": "kind", "data_type": "string"}], TEXT_OUT)
    _, result = run_and_wait(api, pipeline, {"kind": kind})
    assert_error(result, 500, fragment)


def test_a_killed_worker_fails_within_seconds(api, step_archive, unique) -> None:
    pipeline = make_pipeline(api, step_archive, f"die-{unique}", "die",
                             [{"name": "text", "data_type": "string"}], TEXT_OUT)
    execution_id, result = run_and_wait(api, pipeline, {"text": "x"})
    assert_error(result, 500, "SIGKILL")
    logs = [line["message"] for line in
            api.post(f"/executions/{execution_id}/logs", json={}).json()[0]]
    assert "about to die" in logs


def test_step_sees_its_context_and_uses_the_sdk(api, step_archive, unique) -> None:
    import json

    api.put("/environment-variables", json={"environment_variables": {f"CTX_{unique}": "1"}})
    pipeline = make_pipeline(api, step_archive, f"ctx-{unique}", "context",
                             [{"name": "text", "data_type": "string"}], TEXT_OUT)
    execution_id, result = run_and_wait(api, pipeline, {"text": "x"})
    seen = json.loads(outputs_of(result)["text"])
    assert seen["execution_id"] == execution_id and seen["has_token"]
    assert f"CTX_{unique}" in seen["sees_env_vars"]


def test_delete_execution(api, echo_pipeline) -> None:
    execution_id, _ = run_and_wait(api, echo_pipeline, {"text": "d", **BASE})
    assert api.delete(f"/executions/{execution_id}").json() == {"execution_id": execution_id}
    assert api.get(f"/executions/{execution_id}").status_code == 404
    # the outputs, waited for or not, as the execution's own read
    for params in ({}, {"wait_for_results": "true"}):
        gone = api.get(f"/executions/{execution_id}/outputs", params=params)
        assert gone.status_code == 404
        assert gone.json()["message"] == f"Execution {execution_id!r} not found"


def test_long_poll_answers_307_until_done(tmp_path, step_archive, database) -> None:
    from tests.conftest import start_environment

    if database.kind != "sqlite":
        pytest.skip("one database is enough for the long-poll timing")
    server, env, _ = start_environment(tmp_path / "env", f"sqlite:///{tmp_path / 'db.sqlite3'}",
                                       long_poll_s=0.3)
    try:
        with env.client() as api:
            pipeline = make_pipeline(api, step_archive, "slow", "slow",
                                     [{"name": "text", "data_type": "string"}], TEXT_OUT)
            execution_id = run(api, pipeline, {"text": "s"}).json()["execution_id"]
            redirects = 0
            while True:
                response = api.get(f"/executions/{execution_id}/outputs",
                                   params={"wait_for_results": "true"}, follow_redirects=False)
                if response.status_code != 307:
                    break
                redirects += 1
                assert response.headers["location"].endswith("wait_for_results=true")
            assert redirects >= 1
            assert outputs_of(response) == {"text": "s"}
    finally:
        server.stop()
        time.sleep(0.1)


def test_an_output_mapped_to_null_is_dropped(api, echo_pipeline) -> None:
    execution_id, result = run_and_wait(
        api, echo_pipeline, {"text": "n", **BASE},
        outputs_mapping=[{"pipeline_output_name": "n", "is_null": True}])
    assert outputs_of(result)["n"] is None
    assert api.get(f"/executions/{execution_id}/outputs/n").json() is None


def test_executions_show_how_their_step_was_built(api, unique, tmp_path) -> None:
    from tests.platform.stepkit import HELLO, git_repo

    repo = tmp_path / "repo"
    commit = git_repo(repo, {"src/hello.py": HELLO})
    name = f"built-{unique}"
    inputs = [{"name": "name", "data_type": "string", "description": "who to greet",
               "is_required": "False", "default_value": "world"}]
    created = post_step(api, step_form(name, inputs=inputs, outputs=[
        {"name": "greeting", "data_type": "string"}], container_config={
        "repository_url": str(repo), "repository_branch": "main",
        "requirements_path": ""}), None)
    assert created.status_code == 201, created.text
    pipeline = api.post("/pipelines", data={"pipeline_name": name, "step_name": name})
    assert pipeline.status_code == 201, pipeline.text
    assert pipeline.json()["open_inputs"] == [{
        "input_name": "name", "step_name": name, "data_type": "string",
        "description": "who to greet", "default_value": "world", "is_required": False}]
    execution_id, result = run_and_wait(api, name, {"name": "Ada"})
    assert result.status_code == 200, result.text

    expected = {"name": name, "commit_id": commit, "repository_url": str(repo),
                "repository_branch": "main", "requirements_path": None,
                "origin": "git_repository", "status": "Succeeded"}
    (step,) = api.get(f"/executions/{execution_id}").json()["steps"]
    assert expected.items() <= step.items() and step["start_date"] and step["end_date"]
    (listed,) = api.get(f"/pipelines/{name}/executions").json()
    assert listed["execution_id"] == execution_id
    assert listed["steps"] == [step]
