"""The routes and fields added for craft-ai-sdk 0.74 (docs/compatibility.md), over HTTP:
what they answer, and each rejection with its documented status and message. The client
itself drives them in tests/compat074."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.platform.test_auth import assert_error
from tests.platform.test_deployments import step_archive  # noqa: F401 (a fixture)
from tests.platform.test_runs import make_pipeline

IO = [{"name": "text", "data_type": "string"}]


@pytest.fixture(scope="module")
def echo(gristmill_env, step_archive) -> str:  # noqa: F811
    with gristmill_env.client() as api:
        return make_pipeline(api, step_archive, f"c074-echo-{gristmill_env.database.kind}",
                             "echo_async", IO, IO)


def create(api: httpx.Client, route: str, **body: Any) -> httpx.Response:
    return api.post(route, json={"mode": "elastic", **body})


def test_project_and_environment_information(gristmill_env, api) -> None:
    project = api.get("/project-information").json()
    assert project["included_folders"] == ["/"]
    assert project["language"].startswith("python:")
    assert "repository_deploy_key" not in project  # a secret: only whether one is set
    assert project["has_repository_deploy_key"] is False
    # no token needed: the 0.74 client asks it as a health check
    info = httpx.get(f"{gristmill_env.url}/api/v1/environment-info").json()
    assert info["environment_id"] == project["environment_id"]
    assert httpx.get(f"{gristmill_env.url}/api/v1/project-information").status_code == 401


def test_pipeline_parameters_and_build_logs(api, echo) -> None:
    pipeline = api.get(f"/pipelines/{echo}", params={"wait_for_completion": "true"}).json()
    assert pipeline["parameters"]["inputs"] == [
        {"name": "text", "data_type": "string", "description": None, "is_required": True,
         "default_value": None}]
    assert pipeline["inputs"][0]["input_name"] == "text"  # 0.50.1's view is still there
    assert pipeline["creation_info"]["pipeline_template"] is None
    logs = api.post(f"/pipelines/{echo}/logs", json={}).json()
    assert logs and {"timestamp", "message"} == set(logs[0])
    assert api.post(f"/pipelines/{echo}/logs", json={"limit": 1}).json() == logs[-1:]
    assert api.post(f"/pipelines/{echo}/logs", json={"from": 0, "to": 1}).json() == []
    assert_error(api.post(f"/pipelines/{echo}/logs", json={"limit": 0}), 400, "limit")
    assert_error(api.post(f"/pipelines/{echo}/logs", json={"from": "yesterday"}), 400, "from")
    assert_error(api.post("/pipelines/no-such-pipeline/logs", json={}), 404, "not found")


def test_templates_and_vector_database_answer_not_supported(api) -> None:
    for response in (api.get("/pipeline-templates"), api.get("/pipeline-templates/x"),
                     api.post("/pipelines", json={"pipeline_name": "t",
                                                  "pipeline_template_name": "x"})):
        body = assert_error(response, 501, "Pipeline templates are not supported")
        assert body["name"] == "NotSupported"
    assert_error(api.get("/environments/anything/vector-database"), 501,
                 "does not run a vector database")


def test_endpoint_path_token_and_timeout_rejections(gristmill_env, api, echo, unique) -> None:
    assert_error(create(api, "/endpoints", pipeline_name=echo, name=f"a-{unique}",
                        endpoint_url_path="has/slash"), 400, "Invalid endpoint_url_path")
    body = assert_error(create(api, "/endpoints", pipeline_name=echo, name=f"b-{unique}",
                               endpoint_token="too-short"), 400, "endpoint_token must be")
    assert "too-short" not in body["message"]  # a secret is never echoed
    assert_error(create(api, "/endpoints", pipeline_name=echo, name=f"c-{unique}",
                        endpoint_token="x" * 20 + " spaced"), 400, "endpoint_token must be")
    for bad in (0, -5, True, "60", 10**9):
        assert_error(create(api, "/endpoints", pipeline_name=echo, name=f"d-{unique}",
                            execution_timeout_s=bad), 400, "execution_timeout_s")
    assert_error(create(api, "/periodic-deployment", pipeline_name=echo, name=f"e-{unique}",
                        schedule="0 0 * * *", endpoint_url_path="x",
                        inputs_mapping=[{"pipeline_input_name": "text", "constant_value": "a"}],
                        outputs_mapping=[{"pipeline_output_name": "text", "is_null": True}]),
                 400, "endpoint_url_path only applies")
    # nothing was half-written
    names = {d["name"] for d in api.get("/deployments").json()}
    assert not names & {f"{p}-{unique}" for p in "abcde"}

    token = "t" * 24
    created = create(api, "/endpoints", pipeline_name=echo, name=f"f-{unique}",
                     endpoint_url_path=f"path-{unique}", endpoint_token=token,
                     execution_timeout_s=30)
    assert created.status_code == 201, created.text
    assert created.json()["endpoint_url_path"] == f"path-{unique}"
    assert_error(create(api, "/endpoints", pipeline_name=echo, name=f"path-{unique}"), 409,
                 f"/endpoints/path-{unique}")
    # the endpoint answers at its path, not at its name
    at_name = httpx.post(f"{gristmill_env.url}/endpoints/f-{unique}", json={"text": "x"},
                         headers={"Authorization": f"EndpointToken {token}"})
    assert_error(at_name, 404, "not found")
    at_path = httpx.post(f"{gristmill_env.url}/endpoints/path-{unique}", json={"text": "hi"},
                         headers={"Authorization": f"EndpointToken {token}"}, timeout=120)
    assert at_path.status_code == 200, at_path.text
    execution_id = at_path.json()["execution_id"]
    results = httpx.get(f"{gristmill_env.url}/endpoints/v1/path-{unique}/executions/"
                        f"{execution_id}", params={"token": token}, follow_redirects=True,
                        timeout=120)
    assert results.json() == {"execution_id": execution_id,
                              "outputs": {"text": {"value": at_path.json()["outputs"]["text"]}}}
    assert_error(httpx.get(f"{gristmill_env.url}/endpoints/v1/path-{unique}/executions/"
                           f"{execution_id}", params={"token": "wrong" * 5}), 401, "Invalid")
    execution = api.get(f"/executions/{execution_id}")
    assert execution.status_code == 200
    assert_error(api.post(f"/endpoints/f-{unique}/generate-new-token",
                          data={"endpoint_token": "short"}), 400, "endpoint_token must be")


def test_update_and_trigger_with_sdk_token(api, echo, unique) -> None:
    assert create(api, "/endpoints", pipeline_name=echo, name=f"u-{unique}").status_code == 201
    updated = api.patch(f"/deployments/u-{unique}", json={
        "outputs_mapping": [{"pipeline_output_name": "text", "endpoint_output_name": "out"}]})
    assert updated.status_code == 200, updated.text
    assert updated.json()["outputs_mapping"][0]["endpoint_output_name"] == "out"
    assert updated.json()["inputs_mapping"][0]["endpoint_input_name"] == "text"  # kept
    assert_error(api.patch(f"/deployments/u-{unique}", json={"schedule": "0 0 * * *"}), 400,
                 "schedule only applies to periodic")
    assert_error(api.patch(f"/deployments/u-{unique}", json={
        "inputs_mapping": [{"pipeline_input_name": "nope", "constant_value": 1}]}), 400,
        "does not declare")
    triggered = api.post(f"/deployments/u-{unique}/executions", json={"text": "hey"})
    assert triggered.status_code == 201, triggered.text
    outputs = api.get(f"/executions/{triggered.json()['execution_id']}/outputs",
                      params={"wait_for_completion": "true"}, follow_redirects=True)
    assert outputs.json()["outputs"][0]["pipeline_output_name"] == "text"
    assert_error(api.post(f"/deployments/u-{unique}/executions", json={"other": 1}), 400, "")
    assert_error(api.post(f"/deployments/none-{unique}/executions", json={}), 404, "not found")
    periodic = create(api, "/periodic-deployment", pipeline_name=echo, name=f"p-{unique}",
                      schedule="0 0 * * *",
                      inputs_mapping=[{"pipeline_input_name": "text", "constant_value": "a"}],
                      outputs_mapping=[{"pipeline_output_name": "text", "is_null": True}])
    assert periodic.status_code == 201, periodic.text
    assert_error(api.post(f"/deployments/p-{unique}/executions", json={}), 400,
                 "cannot be triggered")
    assert_error(api.patch(f"/deployments/p-{unique}", json={"schedule": "61 * * * *"}), 400,
                 "")
