"""Endpoint calls (``trigger_endpoint``, ``retrieve_endpoint_results``) go through the
SDK's transport: its ``httpx.Client`` (``http_client=``), its errors and its retry rules,
with the endpoint token instead of the SDK token. Against a scripted real HTTP server."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from gristmill import (
    APIConnectionError,
    AuthenticationError,
    Gristmill,
    InternalServerError,
)
from tests.sdk._scripted_server import Reply, ScriptedServer

TRIGGER = "POST /endpoints/ep"
RESULTS = "GET /endpoints/ep/executions/x-1"
DONE = Reply(200, {"execution_id": "x-1", "outputs": {"result": 40}})


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer().running() as srv:
        yield srv


def client(url: str, sleeps: list[float] | None = None, **options: object) -> Gristmill:
    gm = Gristmill(url, "gm_t_t", progress=False, **options)  # type: ignore[arg-type]
    if sleeps is not None:
        gm._transport._sleep = sleeps.append
    return gm


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_platform_is_an_api_connection_error() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    with client(url, max_retries=0) as gm:
        with pytest.raises(APIConnectionError, match="Could not reach the platform"):
            gm.trigger_endpoint("ep", "tok", inputs={"a": 1})
        with pytest.raises(APIConnectionError, match="Could not reach the platform"):
            gm.retrieve_endpoint_results("ep", "x-1", "tok")


def test_a_refused_connection_is_retried_even_for_a_post() -> None:
    # the request never left: replaying it cannot run the execution twice
    url = f"http://127.0.0.1:{_closed_port()}"
    sleeps: list[float] = []
    with client(url, sleeps, max_retries=2) as gm, pytest.raises(APIConnectionError):
        gm.trigger_endpoint("ep", "tok", inputs={"a": 1})
    assert len(sleeps) == 2


def test_calls_go_through_the_given_http_client_with_the_endpoint_token(
    server: ScriptedServer,
) -> None:
    server.script(TRIGGER, Reply(200, {"execution_id": "x-1"}, {"craft-ai-execution-id": "x-1"}))
    server.script(RESULTS, DONE)
    seen: list[str] = []
    http = httpx.Client(event_hooks={"request": [lambda r: seen.append(r.url.path)]})
    with client(server.url, http_client=http) as gm:
        result = gm.trigger_endpoint("ep", "ep-token", inputs={"number1": 4})
    http.close()
    assert result == {"execution_id": "x-1", "outputs": {"result": 40}}
    assert seen == ["/endpoints/ep", "/endpoints/ep/executions/x-1"]
    # the endpoint token, never the SDK token: no access token is even fetched
    assert server.paths() == [TRIGGER, RESULTS]
    for request in server.seen:
        assert request.headers["authorization"] == "EndpointToken ep-token"
        assert request.headers["gristmill-client"].startswith("gristmill@")
    assert json.loads(server.seen[0].body) == {"number1": 4}


def test_results_follow_the_servers_redirects_to_itself(server: ScriptedServer) -> None:
    server.script(
        RESULTS,
        Reply(307, b"", {"Location": "/endpoints/ep/executions/x-1"}),
        Reply(307, b"", {"Location": "/endpoints/ep/executions/x-1"}),
        DONE,
    )
    with client(server.url, max_retries=0) as gm:
        result = gm.retrieve_endpoint_results("ep", "x-1", "tok")
    assert result["outputs"] == {"result": 40}
    assert server.paths() == [RESULTS] * 3


def test_a_trigger_that_may_have_reached_the_server_is_not_replayed(
    server: ScriptedServer,
) -> None:
    sleeps: list[float] = []
    # a gateway error: the execution may have started
    server.script(TRIGGER, Reply(502, {"message": "bad gateway"}))
    with client(server.url, sleeps, max_retries=3) as gm:
        with pytest.raises(InternalServerError, match="could not be reached"):
            gm.trigger_endpoint("ep", "tok", inputs={"a": 1})
        assert server.paths(TRIGGER) == [TRIGGER]
        # an answer cut half-way: the request was received
        server.script(TRIGGER, Reply(200, b"{}", truncate_to_length=100))
        with pytest.raises(APIConnectionError):
            gm.trigger_endpoint("ep", "tok", inputs={"a": 1}, wait_for_results=False)
    assert server.paths(TRIGGER) == [TRIGGER] * 2
    assert sleeps == []


def test_a_503_is_retried_and_a_file_input_sent_again_in_full(server: ScriptedServer) -> None:
    # 503 "too many waiting": answered before anything is recorded, safe to replay
    server.script(
        TRIGGER,
        Reply(503, {"message": "busy"}, {"Retry-After": "1"}),
        Reply(200, {"execution_id": "x-1"}),
    )
    sleeps: list[float] = []
    with client(server.url, sleeps) as gm:
        started = gm.trigger_endpoint(
            "ep", "tok", inputs={"doc": io.BytesIO(b"file-bytes"), "label": "x"},
            wait_for_results=False,
        )
    assert started == {"execution_id": "x-1"}
    assert sleeps == [1.0]
    first, second = (_without_boundary(s.body) for s in server.seen)
    assert first == second
    assert b"file-bytes" in second and b'"x"' in second


def _without_boundary(body: bytes) -> bytes:
    boundary = body.split(b"\r\n", 1)[0]
    return body.replace(boundary, b"--boundary")


def test_a_wrong_endpoint_token_hints_at_the_endpoint_token(server: ScriptedServer) -> None:
    server.script(
        TRIGGER, Reply(401, {"message": "Invalid endpoint token", "name": "InvalidEndpointToken"})
    )
    with client(server.url) as gm, pytest.raises(AuthenticationError) as err:
        gm.trigger_endpoint("ep", "nope", inputs={})
    text = str(err.value)
    assert "endpoint token" in err.value.hint  # type: ignore[operator]
    assert "generate_new_endpoint_token" in text
    assert "GRISTMILL_SDK_TOKEN" not in text
    # a single try: a 401 of an endpoint is not an expired access token
    assert server.paths() == [TRIGGER]
