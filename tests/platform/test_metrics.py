"""Metrics routes: recorded with an execution's token, read with filters and pages."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.platform.test_auth import assert_error
from tests.platform.test_runs import BASE, run_and_wait


@pytest.fixture(scope="module")
def metrics_pipeline(gristmill_env, tmp_path_factory) -> str:
    from tests.platform.stepkit import archive_of, write_folder
    from tests.platform.test_runs import ECHO_IN, ECHO_OUT, STEP_CODE, make_pipeline

    archive = archive_of(write_folder(tmp_path_factory.mktemp("metrics"),
                                      {"src/steps.py": STEP_CODE}))
    with gristmill_env.client() as api:
        return make_pipeline(api, archive, f"metrics-echo-{gristmill_env.database.kind}",
                             "echo", ECHO_IN, ECHO_OUT)


@pytest.fixture
def execution(api, metrics_pipeline) -> tuple[str, httpx.Client]:
    execution_id, _ = run_and_wait(api, metrics_pipeline, {"text": "m", **BASE})
    return execution_id, api


def step_client(env, execution_id: str) -> httpx.Client:
    """A client holding an execution token, as code inside that step would."""
    from gristmill_platform.admin import AdminConsole

    async def mint() -> str:
        async with AdminConsole(env.settings) as console, console._auth() as auth:
            admin = await auth.find_user("admin@localhost")
            return (await auth.create_sdk_token(admin.id, scope="execution",
                                                execution_id=execution_id)).plaintext

    token = asyncio.run(mint())
    access = httpx.post(f"{env.url}/api/v1/auth/refresh",
                        json={"refresh_token": token}).json()["access_token"]
    # 10,000 values in one call can take more than httpx's default 5 s on a busy machine
    return httpx.Client(base_url=f"{env.url}/api/v1", timeout=60,
                        headers={"Authorization": f"Bearer {access}"})


def test_record_overwrite_append_and_read(gristmill_env, execution, unique) -> None:
    execution_id, api = execution
    with step_client(gristmill_env, execution_id) as step:
        body = {"execution_id": execution_id}
        assert step.put(f"/metrics/single-value/acc-{unique}", json={**body, "value": 0.5}
                        ).status_code == 200
        step.put(f"/metrics/single-value/acc-{unique}", json={**body, "value": 0.9})
        step.post(f"/metrics/list-values/loss-{unique}", json={**body, "values": [3, 2]})
        step.post(f"/metrics/list-values/loss-{unique}", json={**body, "values": [1]})
        other = step.put(f"/metrics/single-value/x-{unique}",
                         json={"execution_id": "someone-else", "value": 1})
        assert_error(other, 403, "its own execution")
    single = api.get("/metrics/single-value", params={"filters[name]": f"acc-{unique}"}).json()
    assert single["total_count"] == 1 and single["metrics"][0]["value"] == 0.9
    assert single["metrics"][0]["execution_id"] == execution_id
    listed = api.get("/metrics/list-values", params={
        "filters[execution_id]": execution_id, "filters[name]": f"loss-{unique}"}).json()
    assert [m["value"] for m in listed["metrics"]] == [3, 2, 1]  # concatenated, in order
    page = api.get("/metrics/list-values", params={
        "filters[name]": f"loss-{unique}", "items_per_page": 2, "page": 2}).json()
    assert page["total_count"] == 3 and [m["value"] for m in page["metrics"]] == [1]
    # craft-ai-sdk 0.74 documents one item per list, with its values
    current = {"craft-ai-client": "craft-ai-sdk@0.74.7"}
    lists = api.get("/metrics/list-values", headers=current,
                    params={"filters[name]": f"loss-{unique}"}).json()
    assert lists["total_count"] == 1
    [item] = lists["metrics"]
    assert (item["name"], item["values"], item["execution_id"]) == (
        f"loss-{unique}", [3, 2, 1], execution_id)
    assert set(item) == {"name", "values", "created_at", "execution_id", "deployment_name",
                         "pipeline_name"}
    legacy = {"craft-ai-client": "craft-ai-sdk@0.50.1"}
    assert [m["value"] for m in api.get("/metrics/list-values", headers=legacy, params={
        "filters[name]": f"loss-{unique}"}).json()["metrics"]] == [3, 2, 1]


@pytest.mark.parametrize(("route", "body", "fragment"), [
    ("single-value/ok", {"value": "high"}, "finite number"),
    ("single-value/ok", {"value": float("inf")}, None),
    # an integer beyond a float's range: JSON allows it, a metric cannot hold it
    ("single-value/ok", {"value": 10**400}, "finite number"),
    ("list-values/ok", {"values": [1, 10**400]}, "values[1]"),
    ("single-value/bad name", {"value": 1}, "Invalid metric name"),
    ("list-values/ok", {"values": []}, "non-empty list"),
    ("list-values/ok", {"values": [1, "x"]}, "values[1]"),
    ("list-values/ok", {"values": list(range(10_001))}, "10000"),
])
def test_metric_rejections(gristmill_env, execution, route, body, fragment) -> None:
    execution_id, _ = execution
    with step_client(gristmill_env, execution_id) as step:
        method = step.put if route.startswith("single") else step.post
        if fragment is None:  # not even valid JSON for the server: refused all the same
            response = method(f"/metrics/{route}", content=b'{"value": Infinity, '
                              + f'"execution_id": "{execution_id}"}}'.encode(),
                              headers={"Content-Type": "application/json"})
            assert response.status_code == 400
            return
        assert_error(method(f"/metrics/{route}", json={**body, "execution_id": execution_id}),
                     400, fragment)


def test_list_values_are_capped_per_list_metric(gristmill_env, execution, unique) -> None:
    execution_id, _ = execution
    with step_client(gristmill_env, execution_id) as step:
        for _ in range(5):
            assert step.post(f"/metrics/list-values/cap-{unique}", json={
                "execution_id": execution_id, "values": [0.0] * 10_000}).status_code == 200
        assert_error(step.post(f"/metrics/list-values/cap-{unique}", json={
            "execution_id": execution_id, "values": [1.0]}), 400, "at most 50000")
        # the cap is per list metric (documented): with 50,000 values in the execution
        # already, another list of it still takes values
        assert step.post(f"/metrics/list-values/other-{unique}", json={
            "execution_id": execution_id, "values": [0.0, 1.0]}).status_code == 200


def test_bad_paging_is_refused(api) -> None:
    assert_error(api.get("/metrics/single-value", params={"page": 0}), 400, "page")
    assert_error(api.get("/metrics/single-value", params={"items_per_page": 6000}), 400,
                 "items_per_page")
