"""Hostile input over HTTP, against the real control service (SQLite and PostgreSQL): every
refusal is a 4xx with the documented error body and its X-Request-Id, and nothing is
parsed, stored or run on the way."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.platform.stepkit import archive_of, write_folder
from tests.platform.test_auth import assert_error
from tests.platform.test_runs import STEP_CODE, make_pipeline

ECHO_IN = [{"name": "text", "data_type": "string"}, {"name": "n", "data_type": "number"},
           {"name": "flag", "data_type": "boolean"}, {"name": "cfg", "data_type": "json"},
           {"name": "items", "data_type": "array"}]
ECHO_OUT = [{"name": "text", "data_type": "string"}, {"name": "n", "data_type": "number"},
            {"name": "flag", "data_type": "boolean"}, {"name": "cfg", "data_type": "json"},
            {"name": "items", "data_type": "array"}]
TEXT = [{"name": "text", "data_type": "string"}]
GOOD = {"text": "a", "n": 1, "flag": True, "cfg": {"k": [1]}, "items": [1, 2]}
MODES = ("elastic", "low_latency")


@pytest.fixture(scope="module")
def endpoints(gristmill_env: Any, tmp_path_factory: pytest.TempPathFactory
              ) -> dict[str, str]:
    """name → endpoint token: echo and boom, each elastic and low-latency."""
    archive = archive_of(write_folder(tmp_path_factory.mktemp("hostile"),
                                      {"src/steps.py": STEP_CODE}))
    kind = gristmill_env.database.kind
    tokens = {}
    with gristmill_env.client() as api:
        for function, inputs, outputs in (("echo", ECHO_IN, ECHO_OUT), ("boom", TEXT, TEXT)):
            pipeline = make_pipeline(api, archive, f"hostile-{function}-{kind}", function,
                                     inputs, outputs)
            for mode in MODES:
                name = f"h-{function}-{mode.replace('_', '-')}-{kind}"
                response = api.post("/endpoints", json={"pipeline_name": pipeline,
                                                        "name": name, "mode": mode})
                assert response.status_code == 201, response.text
                tokens[name] = response.json()["endpoint_token"]
    return tokens


def endpoint(env: Any, endpoints: dict[str, str], function: str, mode: str
             ) -> tuple[str, dict[str, str]]:
    name = f"h-{function}-{mode.replace('_', '-')}-{env.database.kind}"
    return f"{env.url}/endpoints/{name}", {"Authorization": f"EndpointToken {endpoints[name]}"}


def post_raw(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(url, content=body, timeout=60,
                      headers={"content-type": "application/json", **headers})


def executions_of(api: httpx.Client, deployment: str) -> list[Any]:
    response = api.get(f"/deployments/{deployment}/executions")
    assert response.status_code == 200, response.text
    return list(response.json())


@pytest.mark.parametrize("mode", MODES)
def test_non_finite_numbers_are_refused_at_the_endpoint(gristmill_env, api, endpoints,
                                                        mode) -> None:
    url, headers = endpoint(gristmill_env, endpoints, "echo", mode)
    for number in ("NaN", "Infinity", "-Infinity", "1e999"):
        body = json.dumps({**GOOD, "n": 0}).replace('"n": 0', f'"n": {number}').encode()
        assert_error(post_raw(url, body, headers), 400, "not valid JSON")
    # nested in a json input too
    body = json.dumps({**GOOD, "cfg": {"a": [0]}}).replace("[0]", "[NaN]").encode()
    assert_error(post_raw(url, body, headers), 400, "NaN is not a JSON number")
    assert executions_of(api, urlsplit(url).path.rsplit("/", 1)[1]) == []


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("depth", [900, 5_000, 100_000])
def test_deep_json_is_refused_at_the_endpoint(gristmill_env, api, endpoints, mode,
                                              depth) -> None:
    url, headers = endpoint(gristmill_env, endpoints, "echo", mode)
    deep = "[" * depth + "]" * depth
    body = json.dumps({**GOOD, "cfg": 0}).replace('"cfg": 0', f'"cfg": {deep}').encode()
    assert_error(post_raw(url, body, headers), 400, "nests deeper")
    assert executions_of(api, urlsplit(url).path.rsplit("/", 1)[1]) == []


def test_a_good_call_still_runs(gristmill_env, endpoints) -> None:
    for mode in MODES:
        url, headers = endpoint(gristmill_env, endpoints, "echo", mode)
        response = httpx.post(url, json=GOOD, headers=headers, timeout=120,
                              follow_redirects=True)
        assert response.status_code == 200, response.text
        assert response.json()["outputs"]["n"] == 2


def test_a_multipart_field_that_is_not_finite_is_refused_by_type(gristmill_env, endpoints
                                                                 ) -> None:
    url, headers = endpoint(gristmill_env, endpoints, "echo", "elastic")
    fields = {k: json.dumps(v) for k, v in GOOD.items()} | {"n": "NaN"}
    body = b"".join(f'--b0\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
                    .encode() for k, v in fields.items()) + b"--b0--\r\n"
    response = httpx.post(url, content=body, timeout=60, headers={
        **headers, "content-type": "multipart/form-data; boundary=b0"})
    assert_error(response, 400, "must be of type number")


def declared_only(url: str, path: str, declared: int, headers: dict[str, str]
                  ) -> tuple[int, bytes]:
    """Send headers announcing ``declared`` bytes and none of the body: an answer proves
    the service refused the body without reading it."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as conn:
        lines = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}",
                 "Content-Type: application/json", f"Content-Length: {declared}",
                 *(f"{k}: {v}" for k, v in headers.items())]
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"x-request-id" in head.lower()
    return int(head.split(b" ")[1]), body


@pytest.mark.parametrize("mode", MODES)
def test_a_50_mb_endpoint_body_is_refused_unread(gristmill_env, endpoints, mode) -> None:
    url, headers = endpoint(gristmill_env, endpoints, "echo", mode)
    status, body = declared_only(gristmill_env.url, urlsplit(url).path, 50 * 1024 * 1024,
                                 headers)
    assert status == 413
    assert json.loads(body)["name"] == "PayloadTooLarge"


def test_a_large_api_body_is_refused_unread(gristmill_env) -> None:
    status, body = declared_only(gristmill_env.url, "/api/v1/endpoints", 2 * 1024 * 1024,
                                 {"Authorization": f"Bearer {gristmill_env.access_token}"})
    assert status == 413
    assert set(json.loads(body)) == {"message", "name", "request_id", "additional_data"}


def chunks(total: int, size: int = 256 * 1024) -> Iterator[bytes]:
    yield b'{"text": "'
    for _ in range(total // size):
        yield b"a" * size
    yield b'"}'


@pytest.mark.parametrize("mode", MODES)
def test_a_chunked_body_is_cut_at_the_limit(gristmill_env, endpoints, mode) -> None:
    url, headers = endpoint(gristmill_env, endpoints, "echo", mode)
    response = httpx.post(url, content=chunks(8 * 1024 * 1024), timeout=60,
                          headers={"content-type": "application/json", **headers})
    assert_error(response, 413, "at most")


@pytest.mark.parametrize("route", ["/metrics/single-value", "/metrics/list-values"])
@pytest.mark.parametrize("params", [{"page": 9223372036854775807}, {"page": 10**30},
                                    {"page": 0}, {"page": -1}, {"items_per_page": 10**20}])
def test_page_numbers_are_bounded(api, route, params) -> None:
    assert_error(api.get(route, params=params), 400, "must be between")


@pytest.mark.parametrize("schedule", ["0 0 31 2 *", "1-0 * * * *"])
def test_impossible_schedules_are_refused_at_creation(api, endpoints, gristmill_env,
                                                      unique, schedule) -> None:
    name = f"cron-{unique}"
    payload = {"pipeline_name": f"hostile-echo-{gristmill_env.database.kind}", "name": name,
               "schedule": schedule,
               "inputs_mapping": [{"pipeline_input_name": k, "constant_value": v}
                                  for k, v in GOOD.items()],
               "outputs_mapping": [{"pipeline_output_name": o["name"], "is_null": True}
                                   for o in ECHO_OUT]}
    assert_error(api.post("/periodic-deployment", json=payload), 400, "Invalid schedule")
    assert api.get(f"/deployments/{name}").status_code == 404


@pytest.mark.parametrize("mode", MODES)
def test_a_failed_execution_answer_names_its_execution(gristmill_env, endpoints,
                                                       mode) -> None:
    url, headers = endpoint(gristmill_env, endpoints, "boom", mode)
    response = httpx.post(url, json={"text": "x"}, headers=headers, timeout=120,
                          follow_redirects=True)
    body = assert_error(response, 500, "bad text")
    assert response.headers["craft-ai-execution-id"] == body["additional_data"]["execution_id"]


def test_the_results_url_names_the_execution(gristmill_env, endpoints) -> None:
    url, headers = endpoint(gristmill_env, endpoints, "echo", "elastic")
    response = httpx.post(url, json=GOOD, headers={**headers, "craft-ai-client": "x"},
                          timeout=60)
    assert response.status_code == 303, response.text
    execution_id = response.json()["execution_id"]
    final = httpx.get(f"{gristmill_env.url}{response.headers['location']}", headers=headers,
                      timeout=120, follow_redirects=True)
    assert final.status_code == 200, final.text
    assert final.headers["craft-ai-execution-id"] == execution_id
