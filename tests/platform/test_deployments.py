"""Endpoint and periodic deployments (elastic) over HTTP."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.platform.test_auth import assert_error
from tests.platform.test_runs import make_pipeline

CODE_IN = [{"name": "text", "data_type": "string"}]
CODE_OUT = [{"name": "text", "data_type": "string"}]
FILE_CODE = [{"name": "doc", "data_type": "file"}, {"name": "suffix", "data_type": "string"}]
FILE_OUT = [{"name": "result", "data_type": "file"}, {"name": "size", "data_type": "number"}]


@pytest.fixture(scope="module")
def echo_async(gristmill_env, step_archive) -> str:
    with gristmill_env.client() as api:
        return make_pipeline(api, step_archive, f"dep-echo-{gristmill_env.database.kind}",
                             "echo_async", CODE_IN, CODE_OUT)


@pytest.fixture(scope="module")
def step_archive(tmp_path_factory) -> bytes:
    from tests.platform.stepkit import archive_of, write_folder
    from tests.platform.test_runs import STEP_CODE

    return archive_of(write_folder(tmp_path_factory.mktemp("deps"), {"src/steps.py": STEP_CODE}))


def endpoint(api: httpx.Client, pipeline: str, name: str, **extra: Any) -> dict[str, Any]:
    response = api.post("/endpoints", json={"pipeline_name": pipeline, "name": name,
                                            "mode": "elastic", **extra})
    assert response.status_code == 201, response.text
    return response.json()


def call(env, name: str, token: str, inputs: dict[str, Any] | None = None, *,
         sdk: bool = True, files: Any = None) -> httpx.Response:
    headers = {"Authorization": f"EndpointToken {token}"}
    if sdk:
        headers["craft-ai-client"] = "craft-ai-sdk@0.50.1"
    url = f"{env.url}/endpoints/{name}"
    if files is not None:
        return httpx.post(url, files=files, headers=headers, timeout=60)
    return httpx.post(url, json=inputs or {}, headers=headers, timeout=60)


def results(env, name: str, execution_id: str, token: str) -> httpx.Response:
    return httpx.get(f"{env.url}/endpoints/{name}/executions/{execution_id}",
                     params={"token": token}, follow_redirects=True, timeout=120)


def test_endpoint_round_trip_for_sdk_and_plain_clients(gristmill_env, api, echo_async,
                                                       unique) -> None:
    created = endpoint(api, echo_async, f"ep-{unique}", description="echo")
    token = created["endpoint_token"]
    assert created["status"] == "up" and created["execution_rule"] == "endpoint"
    assert created["inputs_mapping"] == [{"pipeline_input_name": "text",
                                          "endpoint_input_name": "text", "is_required": True,
                                          "data_type": "string", "description": None}]
    triggered = call(gristmill_env, f"ep-{unique}", token, {"text": "hi"})
    assert triggered.status_code == 303
    execution_id = triggered.headers["craft-ai-execution-id"]
    assert triggered.json() == {"execution_id": execution_id}
    assert triggered.headers["location"] == f"/endpoints/ep-{unique}/executions/{execution_id}"
    final = results(gristmill_env, f"ep-{unique}", execution_id, token)
    assert final.json()["outputs"] == {"text": "HI"}
    # a plain HTTP client gets the outputs in the answer to its POST
    plain = call(gristmill_env, f"ep-{unique}", token, {"text": "curl"}, sdk=False)
    assert plain.status_code == 200 and plain.json()["outputs"] == {"text": "CURL"}
    assert plain.headers["craft-ai-execution-id"]
    # tracked like any execution, with the endpoint as the input's source
    execution = api.get(f"/executions/{execution_id}").json()
    assert execution["deployment_name"] == f"ep-{unique}"
    assert execution["execution_rule"] == "endpoint"
    assert execution["inputs"][0]["mapping_type"] == "endpoint"
    latest = api.get(f"/deployments/ep-{unique}/executions/latest").json()
    assert latest["deployment_name"] == f"ep-{unique}"
    shown = api.get(f"/deployments/ep-{unique}").json()
    assert shown["endpoint_token"] == token  # get_deployment shows it (contract §4.2)


def test_endpoint_token_checks(gristmill_env, api, echo_async, unique) -> None:
    token = endpoint(api, echo_async, f"tok-{unique}")["endpoint_token"]
    executions = len(api.get(f"/pipelines/{echo_async}/executions").json())
    for bad in ("", "wrong"):
        response = httpx.post(f"{gristmill_env.url}/endpoints/tok-{unique}",
                              json={"text": "x"},
                              headers={"Authorization": f"EndpointToken {bad}"} if bad else {})
        assert_error(response, 401, "endpoint token")
    assert len(api.get(f"/pipelines/{echo_async}/executions").json()) == executions
    new = api.post(f"/endpoints/tok-{unique}/generate-new-token").json()["endpoint_token"]
    assert_error(call(gristmill_env, f"tok-{unique}", token, {"text": "x"}), 401, "Invalid")
    assert call(gristmill_env, f"tok-{unique}", new, {"text": "x"}).status_code == 303
    assert_error(call(gristmill_env, f"nope-{unique}", new, {"text": "x"}), 404, "not found")


def test_endpoint_input_rejections(gristmill_env, api, echo_async, unique) -> None:
    token = endpoint(api, echo_async, f"rej-{unique}")["endpoint_token"]
    assert_error(call(gristmill_env, f"rej-{unique}", token, {}), 400, "Missing required")
    assert_error(call(gristmill_env, f"rej-{unique}", token, {"text": 1}), 400, "type string")
    assert_error(call(gristmill_env, f"rej-{unique}", token, {"text": "a", "zz": 1}), 400,
                 "Unknown input")
    response = httpx.post(f"{gristmill_env.url}/endpoints/rej-{unique}", content=b"[1]",
                          headers={"Authorization": f"EndpointToken {token}",
                                   "Content-Type": "application/json"})
    assert_error(response, 400, "JSON object")


def test_renamed_inputs_defaults_and_disabled(gristmill_env, api, echo_async, unique) -> None:
    token = endpoint(api, echo_async, f"ren-{unique}", inputs_mapping=[
        {"pipeline_input_name": "text", "endpoint_input_name": "message",
         "is_required": False, "default_value": "dflt"}],
        outputs_mapping=[{"pipeline_output_name": "text",
                          "endpoint_output_name": "answer"}])["endpoint_token"]
    execution_id = call(gristmill_env, f"ren-{unique}", token, {}).json()["execution_id"]
    assert results(gristmill_env, f"ren-{unique}", execution_id, token).json()["outputs"] == {
        "answer": "DFLT"}
    disabled = api.patch(f"/deployments/ren-{unique}", json={"is_enabled": False})
    assert disabled.json()["is_enabled"] is False
    assert_error(call(gristmill_env, f"ren-{unique}", token, {"message": "x"}), 403, "disabled")
    api.patch(f"/deployments/ren-{unique}", json={"is_enabled": True})
    assert call(gristmill_env, f"ren-{unique}", token, {"message": "x"}).status_code == 303


def test_file_input_and_file_output_through_an_endpoint(gristmill_env, api, step_archive,
                                                        unique) -> None:
    pipeline = make_pipeline(api, step_archive, f"dep-files-{unique}", "files", FILE_CODE,
                             FILE_OUT)
    token = endpoint(api, pipeline, f"files-{unique}", inputs_mapping=[
        {"pipeline_input_name": "suffix", "constant_value": "!"}], outputs_mapping=[
        {"pipeline_output_name": "size", "is_null": True}])["endpoint_token"]
    triggered = call(gristmill_env, f"files-{unique}", token,
                     files={"doc": ("doc.txt", b"abc")})
    execution_id = triggered.json()["execution_id"]
    final = results(gristmill_env, f"files-{unique}", execution_id, token)
    assert final.content == b"abc!"
    assert final.headers["content-type"] == "application/octet-stream"
    assert final.headers["content-disposition"] == (
        f"attachment; filename=files-{unique}_{execution_id}_result")


def test_an_endpoint_call_cut_short_is_refused(gristmill_env, api, step_archive,
                                               unique) -> None:
    pipeline = make_pipeline(api, step_archive, f"dep-cut-{unique}", "files", FILE_CODE,
                             FILE_OUT)
    token = endpoint(api, pipeline, f"cut-{unique}", inputs_mapping=[
        {"pipeline_input_name": "suffix", "constant_value": "!"}], outputs_mapping=[
        {"pipeline_output_name": "size", "is_null": True}])["endpoint_token"]
    boundary = "gristmillboundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="doc"; '
            'filename="doc.txt"\r\n\r\n').encode() + b"abc"
    response = httpx.post(f"{gristmill_env.url}/endpoints/cut-{unique}", content=body,
                          headers={"Authorization": f"EndpointToken {token}",
                                   "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert_error(response, 400, "cut short")
    assert api.get(f"/pipelines/{pipeline}/executions").json() == []


def test_file_output_with_other_endpoint_outputs_is_refused_at_creation(
        api, step_archive, unique) -> None:
    pipeline = make_pipeline(api, step_archive, f"dep-mixed-{unique}", "files", FILE_CODE,
                             FILE_OUT)
    response = api.post("/endpoints", json={
        "pipeline_name": pipeline, "name": f"mixed-{unique}", "mode": "elastic",
        "inputs_mapping": [{"pipeline_input_name": "suffix", "constant_value": "!"}]})
    body = assert_error(response, 400, "cannot return other outputs too")
    assert "'size'" in body["message"]
    assert api.get(f"/deployments/mixed-{unique}").status_code == 404  # nothing half-made
    # not returning the other output makes it valid (the file is the whole answer)
    assert endpoint(api, pipeline, f"mixed-{unique}", inputs_mapping=[
        {"pipeline_input_name": "suffix", "constant_value": "!"}], outputs_mapping=[
        {"pipeline_output_name": "size", "is_null": True}])


@pytest.mark.parametrize("path", [".gristmill/steps/x/code.tgz", "../up", "a//b"])
def test_data_store_mappings_of_a_deployment_are_checked_at_creation(
        api, step_archive, unique, path) -> None:
    """Its executions would otherwise read or overwrite the platform's own files
    (.gristmill/), which it writes through the raw backend."""
    pipeline = make_pipeline(api, step_archive, f"dep-paths-{unique}", "files", FILE_CODE,
                             FILE_OUT)
    for mappings in ({"outputs_mapping": [{"pipeline_output_name": "result",
                                           "datastore_path": path},
                                          {"pipeline_output_name": "size", "is_null": True}]},
                     {"inputs_mapping": [{"pipeline_input_name": "doc", "datastore_path": path},
                                         {"pipeline_input_name": "suffix",
                                          "constant_value": "!"}]}):
        response = api.post("/endpoints", json={
            "pipeline_name": pipeline, "name": f"paths-{unique}", "mode": "elastic",
            **mappings})
        body = assert_error(response, 400, "Invalid object path")
        assert body["name"] in ("InvalidDeployment", "InvalidInputs")
        assert api.get(f"/deployments/paths-{unique}").status_code == 404


def test_a_failed_execution_is_a_500_with_the_reason(gristmill_env, api, step_archive,
                                                     unique) -> None:
    pipeline = make_pipeline(api, step_archive, f"dep-boom-{unique}", "boom", CODE_IN, CODE_OUT)
    token = endpoint(api, pipeline, f"boom-{unique}")["endpoint_token"]
    execution_id = call(gristmill_env, f"boom-{unique}", token, {"text": "x"}).json()[
        "execution_id"]
    body = assert_error(results(gristmill_env, f"boom-{unique}", execution_id, token), 500,
                        "bad text")
    assert body["name"] == "ExecutionFailed"


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"name": "bad name"}, 400, "Invalid deployment name"),
        ({"mode": "turbo"}, 400, "mode must be"),
        ({"enable_parallel_executions": True}, 400, "only apply to low_latency"),
        ({"ram_request": "1GiB"}, 400, "only apply to low_latency"),
        ({"schedule": "* * * * *"}, 400, "only applies to periodic"),
        ({"inputs_mapping": [{"pipeline_input_name": "ghost", "constant_value": 1}]}, 400,
         "does not declare"),
        ({"inputs_mapping": [{"pipeline_input_name": "text", "constant_value": 1}]}, 400,
         "type string"),
        ({"inputs_mapping": [{"pipeline_input_name": "text", "datastore_path": "x"}]}, 400,
         "file inputs only"),
        ({"outputs_mapping": [{"pipeline_output_name": "text", "datastore_path": "x"}]}, 400,
         "file outputs only"),
        ({"pipeline_name": "no-such-pipeline"}, 404, "not found"),
        # past the database's integers it was a 500; a day bounds a creation's wait
        ({"timeout_s": 2**63}, 400, "timeout_s must be an integer number of seconds from 1"),
        ({"timeout_s": 86_401}, 400, "from 1 to 86400"),
        ({"timeout_s": 0}, 400, "from 1 to 86400"),
    ],
)
def test_endpoint_creation_rejections(api, echo_async, unique, body, status, fragment) -> None:
    payload = {"pipeline_name": echo_async, "name": f"bad-{unique}", "mode": "elastic", **body}
    assert_error(api.post("/endpoints", json=payload), status, fragment)
    assert api.get(f"/deployments/bad-{unique}").status_code == 404


def test_low_latency_options_are_checked(api, echo_async, unique) -> None:
    base = {"pipeline_name": echo_async, "name": f"ll-{unique}", "mode": "low_latency"}
    assert_error(api.post("/endpoints", json={**base, "max_parallel_executions_per_pod": 3}),
                 400, "enable_parallel_executions")
    assert_error(api.post("/endpoints", json={**base, "enable_parallel_executions": True,
                                              "max_parallel_executions_per_pod": 0}), 400,
                 "from 1 to")
    assert_error(api.post("/endpoints", json={**base, "ram_request": "1GB"}), 400, "GiB")
    assert_error(api.post("/endpoints", json={**base, "gpu_request": 1}), 400, "GPU")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "needs a schedule"),
        ({"schedule": "every day"}, "Invalid schedule"),
        ({"schedule": "61 * * * *"}, "Invalid schedule"),
        ({"schedule": "*/99999999999999999999 * * * *"}, "minute step"),
        ({"schedule": "0 */24 * * *"}, "hour step '24'"),
        ({"schedule": "0 0 * * */7"}, "day-of-week step '7'"),
        ({"schedule": "* * * * *"}, "must map every input"),
        ({"schedule": "* * * * *",
          "inputs_mapping": [{"pipeline_input_name": "text", "constant_value": "c"}]},
         "must map every output"),
        ({"schedule": "* * * * *",
          "inputs_mapping": [{"pipeline_input_name": "text", "endpoint_input_name": "t"}]},
         "only for endpoint"),
    ],
)
def test_periodic_creation_rejections(api, echo_async, unique, body, fragment) -> None:
    payload = {"pipeline_name": echo_async, "name": f"cron-{unique}", "mode": "elastic", **body}
    assert_error(api.post("/periodic-deployment", json=payload), 400, fragment)
    assert api.get(f"/deployments/cron-{unique}").status_code == 404  # nothing stored


def test_periodic_deployment_fires_on_schedule(gristmill_env, api, echo_async, unique) -> None:
    created = api.post("/periodic-deployment", json={
        "pipeline_name": echo_async, "name": f"cron-{unique}", "mode": "elastic",
        "schedule": "*/5 * * * *",
        "inputs_mapping": [{"pipeline_input_name": "text", "constant_value": "tick"}],
        "outputs_mapping": [{"pipeline_output_name": "text", "is_null": True}]})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["human_readable_schedule"] == "Every 5 minutes (UTC)"
    assert "endpoint_token" not in body
    fired = fire_now(gristmill_env, f"cron-{unique}")
    executions = api.get(f"/deployments/cron-{unique}/executions").json()
    assert len(executions) == 1 and executions[0]["execution_rule"] == "periodic"
    assert fired > time.time()  # the next fire time moved on


def fire_now(env, name: str) -> float:
    """Make the deployment due, and wait until a scheduler took it."""
    import asyncio

    from sqlalchemy import update

    from gristmill_platform.db.engine import create_engine, create_session_factory
    from gristmill_platform.db.models.deployments import Deployment
    from gristmill_platform.db.types import utcnow

    async def go() -> float:
        engine = create_engine(env.settings.database_url)
        try:
            factory = create_session_factory(engine)
            async with factory() as session, session.begin():
                await session.execute(update(Deployment).where(Deployment.name == name)
                                      .values(next_fire_at=utcnow()))
            for _ in range(200):
                await asyncio.sleep(0.05)
                async with factory() as session:
                    row = (await session.execute(
                        Deployment.__table__.select().where(Deployment.name == name))).first()
                    if row and row.next_fire_at > utcnow():
                        return float(row.next_fire_at.timestamp())
            raise AssertionError("no scheduler fired the deployment")
        finally:
            await engine.dispose()

    return asyncio.run(go())


def test_delete_removes_the_deployment_and_its_executions(gristmill_env, api, echo_async,
                                                          unique) -> None:
    token = endpoint(api, echo_async, f"del-{unique}")["endpoint_token"]
    execution_id = call(gristmill_env, f"del-{unique}", token, {"text": "x"}).json()[
        "execution_id"]
    results(gristmill_env, f"del-{unique}", execution_id, token)
    assert api.delete(f"/deployments/del-{unique}").json() == {
        "name": f"del-{unique}", "execution_rule": "endpoint"}
    assert api.get(f"/executions/{execution_id}").status_code == 404
    assert_error(call(gristmill_env, f"del-{unique}", token, {"text": "x"}), 404, "not found")


def test_pipeline_with_deployments_needs_force(api, step_archive, unique) -> None:
    pipeline = make_pipeline(api, step_archive, f"dep-force-{unique}", "echo_async", CODE_IN,
                             CODE_OUT)
    endpoint(api, pipeline, f"force-{unique}")
    body = assert_error(api.delete(f"/pipelines/{pipeline}"), 409, "force_deployments_deletion")
    assert body["additional_data"] == {"deployments": [f"force-{unique}"]}
    forced = api.delete(f"/pipelines/{pipeline}",
                        params={"force_deployments_deletion": "True"}).json()
    assert forced["deployments"] == [{"name": f"force-{unique}", "execution_rule": "endpoint"}]
    assert api.get(f"/deployments/force-{unique}").status_code == 404
