"""Retries, token refresh and response decoding, against a scripted real HTTP server."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import datetime, timezone
from email.utils import format_datetime

import httpx
import pytest

import gristmill
from gristmill import errors
from gristmill._transport import (
    CLIENT_HEADER,
    MAX_RETRY_DELAY_S,
    Transport,
    backoff_delay,
    decode_response,
    jwt_expiry,
    parse_retry_after,
)
from gristmill.config import resolve_settings
from tests.sdk._scripted_server import Reply, ScriptedServer, make_jwt

# -- pure helpers --


def test_jwt_expiry_reads_exp_without_a_signature_check() -> None:
    assert jwt_expiry(make_jwt(exp=1_900_000_000, sub="u")) == 1_900_000_000


@pytest.mark.parametrize("token", ["opaque-token", "a.b", "a.!!!.c", make_jwt(exp="soon")])
def test_jwt_expiry_rejects_unusable_tokens(token: str) -> None:
    with pytest.raises(errors.InvalidResponseError):
        jwt_expiry(token)


def test_parse_retry_after_seconds_and_dates() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("soon") is None
    now = 1_700_000_000.0
    later = format_datetime(datetime.fromtimestamp(now + 20, tz=timezone.utc), usegmt=True)
    assert parse_retry_after(later, now=now) == pytest.approx(20.0)
    earlier = format_datetime(datetime.fromtimestamp(now - 20, tz=timezone.utc), usegmt=True)
    assert parse_retry_after(earlier, now=now) == 0.0


def test_backoff_grows_exponentially_with_bounded_jitter() -> None:
    no_jitter = [backoff_delay(a, rand=lambda: 0.0) for a in range(6)]
    assert no_jitter == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    full_jitter = [backoff_delay(a, rand=lambda: 1.0) for a in range(6)]
    assert full_jitter == [d * 0.75 for d in no_jitter]
    assert max(no_jitter) == MAX_RETRY_DELAY_S


def _response(status: int, body: bytes, content_type: str | None = None) -> httpx.Response:
    headers = {"content-type": content_type} if content_type else {}
    return httpx.Response(
        status, content=body, headers=headers, request=httpx.Request("GET", "http://h/x?sig=secret")
    )


def test_decode_response_rules() -> None:
    assert decode_response(_response(200, b'{"a": 1}', "application/json")) == {"a": 1}
    assert decode_response(_response(204, b"")) is None
    assert decode_response(_response(200, b"OK", "text/plain")) is None
    assert decode_response(_response(200, b"a,b\n", "text/csv; charset=utf-8")) == b"a,b\n"
    assert decode_response(_response(200, b"\x00\x01", "application/octet-stream")) == b"\x00\x01"
    with pytest.raises(errors.InvalidResponseError, match="empty body") as err:
        decode_response(_response(200, b""))
    assert "secret" not in str(err.value)
    with pytest.raises(errors.InvalidResponseError, match="not JSON"):
        decode_response(_response(200, b"<html/>", "text/html"))


# -- against a scripted server --


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer().running() as srv:
        yield srv


def transport(url: str, sleeps: list[float], **options: object) -> Transport:
    settings = resolve_settings(url, "gm_test_token", environ={}, **options)  # type: ignore[arg-type]
    return Transport(settings, sleep=sleeps.append)


def test_refresh_once_then_reuse_the_access_token(server: ScriptedServer) -> None:
    server.allow_login()
    server.script("GET /api/v1/ping", Reply(200, {"ok": True}))
    t = transport(server.url, [])
    assert t.request("GET", f"{server.url}/api/v1/ping") == {"ok": True}
    assert t.request("GET", f"{server.url}/api/v1/ping") == {"ok": True}
    assert server.paths() == ["POST /api/v1/auth/refresh", "GET /api/v1/ping", "GET /api/v1/ping"]
    refresh, ping = server.seen[0], server.seen[1]
    assert json.loads(refresh.body) == {"refresh_token": "gm_test_token"}
    assert "authorization" not in refresh.headers
    assert refresh.headers[CLIENT_HEADER] == f"gristmill@{gristmill.__version__}"
    assert ping.headers["authorization"].startswith("Bearer ")
    assert ping.headers[CLIENT_HEADER] == f"gristmill@{gristmill.__version__}"


def test_refresh_when_the_token_is_about_to_expire(server: ScriptedServer) -> None:
    now = 1_700_000_000.0
    # Valid for 10 more seconds: inside the 30 s margin, so every call refreshes first.
    server.allow_login(make_jwt(exp=now + 10))
    server.script("GET /api/v1/ping", Reply(200, {"ok": True}))
    settings = resolve_settings(server.url, "tok", environ={})
    t = Transport(settings, sleep=lambda _: None, clock=lambda: now)
    t.request("GET", f"{server.url}/api/v1/ping")
    t.request("GET", f"{server.url}/api/v1/ping")
    assert server.paths("POST /api/v1/auth/refresh") == ["POST /api/v1/auth/refresh"] * 2


def test_401_drops_the_token_refreshes_and_retries_once(server: ScriptedServer) -> None:
    server.allow_login()
    server.script(
        "GET /api/v1/ping",
        Reply(401, {"message": "expired", "name": "Unauthorized"}),
        Reply(200, {"ok": True}),
    )
    assert transport(server.url, []).request("GET", f"{server.url}/api/v1/ping") == {"ok": True}
    assert server.paths() == [
        "POST /api/v1/auth/refresh",
        "GET /api/v1/ping",
        "POST /api/v1/auth/refresh",
        "GET /api/v1/ping",
    ]


def test_a_second_401_is_raised(server: ScriptedServer) -> None:
    server.allow_login()
    server.script("GET /api/v1/ping", Reply(401, {"message": "revoked", "name": "Unauthorized"}))
    with pytest.raises(errors.AuthenticationError, match="revoked"):
        transport(server.url, []).request("GET", f"{server.url}/api/v1/ping")
    assert len(server.paths("GET /api/v1/ping")) == 2


def test_refused_refresh_token_is_an_authentication_error(server: ScriptedServer) -> None:
    server.script(
        "POST /api/v1/auth/refresh",
        Reply(
            401, {"message": "Invalid refresh token", "name": "Unauthorized", "request_id": "r-9"}
        ),
    )
    with pytest.raises(errors.AuthenticationError) as err:
        transport(server.url, []).request("GET", f"{server.url}/api/v1/ping")
    assert err.value.request_id == "r-9"
    assert "Invalid refresh token" in str(err.value)
    assert "gm_test_token" not in str(err.value)


def test_503_with_retry_after_is_retried_after_that_delay(server: ScriptedServer) -> None:
    server.allow_login()
    server.script(
        "GET /api/v1/ping",
        Reply(503, {"message": "starting"}, {"Retry-After": "3"}),
        Reply(200, {"ok": True}),
    )
    sleeps: list[float] = []
    assert transport(server.url, sleeps).request("GET", f"{server.url}/api/v1/ping") == {"ok": True}
    assert sleeps == [3.0]


def test_429_with_an_http_date_is_retried(server: ScriptedServer) -> None:
    now = 1_700_000_000.0
    when = format_datetime(datetime.fromtimestamp(now + 7, tz=timezone.utc), usegmt=True)
    server.allow_login(make_jwt(exp=now + 3600))
    server.script(
        "POST /api/v1/thing",
        Reply(429, {"message": "slow down"}, {"Retry-After": when}),
        Reply(200, {"done": True}),
    )
    sleeps: list[float] = []
    settings = resolve_settings(server.url, "tok", environ={})
    t = Transport(settings, sleep=sleeps.append, clock=lambda: now)
    # A POST: 429 means "not processed", so even non-idempotent calls are replayed.
    assert t.request("POST", f"{server.url}/api/v1/thing", json={}) == {"done": True}
    assert sleeps == [pytest.approx(7.0)]


def test_without_retry_after_backoff_is_used_and_attempts_are_bounded(
    server: ScriptedServer,
) -> None:
    server.allow_login()
    server.script("GET /api/v1/ping", Reply(503, {"message": "down", "name": "Unavailable"}))
    sleeps: list[float] = []
    with pytest.raises(errors.ServiceUnavailableError, match="down"):
        transport(server.url, sleeps, max_retries=3).request("GET", f"{server.url}/api/v1/ping")
    assert len(sleeps) == 3
    assert len(server.paths("GET /api/v1/ping")) == 4
    assert all(0.375 <= s <= 8.0 for s in sleeps)


def test_a_very_long_retry_after_is_not_waited_for(server: ScriptedServer) -> None:
    server.allow_login()
    server.script("GET /api/v1/ping", Reply(429, {"message": "quota"}, {"Retry-After": "3600"}))
    sleeps: list[float] = []
    with pytest.raises(errors.RateLimitError) as err:
        transport(server.url, sleeps).request("GET", f"{server.url}/api/v1/ping")
    assert sleeps == []
    assert err.value.retry_after == 3600.0


def test_gateway_errors_are_retried_only_for_idempotent_calls(server: ScriptedServer) -> None:
    server.allow_login()
    server.script("GET /api/v1/ping", Reply(502, {"message": "bad gateway"}), Reply(200, {"ok": 1}))
    server.script("POST /api/v1/ping", Reply(502, {"message": "bad gateway"}))
    sleeps: list[float] = []
    t = transport(server.url, sleeps)
    assert t.request("GET", f"{server.url}/api/v1/ping") == {"ok": 1}
    with pytest.raises(errors.InternalServerError, match="could not be reached"):
        t.request("POST", f"{server.url}/api/v1/ping", json={})
    assert len(server.paths("POST /api/v1/ping")) == 1


def test_no_retry_on_client_errors(server: ScriptedServer) -> None:
    server.allow_login()
    server.script("GET /api/v1/ping", Reply(404, {"message": "nope", "name": "NotFound"}))
    sleeps: list[float] = []
    with pytest.raises(errors.NotFoundError):
        transport(server.url, sleeps).request("GET", f"{server.url}/api/v1/ping")
    assert sleeps == []


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connection_refused_is_retried_then_raised_as_a_connection_error() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    sleeps: list[float] = []
    with pytest.raises(errors.APIConnectionError) as err:
        transport(url, sleeps, max_retries=2).request("GET", f"{url}/api/v1/ping")
    assert len(sleeps) == 2
    assert "Could not reach the platform" in str(err.value)


def test_undecodable_success_is_reported(server: ScriptedServer) -> None:
    server.allow_login()
    server.script("GET /api/v1/ping", Reply(200, b"", {"Content-Type": "application/json"}))
    with pytest.raises(errors.InvalidResponseError, match="empty body"):
        transport(server.url, []).request("GET", f"{server.url}/api/v1/ping")


def test_presigned_calls_carry_no_credentials(server: ScriptedServer) -> None:
    server.script("PUT /blob", Reply(200, b"", {"ETag": '"abc"'}))
    response = transport(server.url, []).presigned("PUT", f"{server.url}/blob?sig=1", content=b"x")
    assert response.headers["etag"] == '"abc"'
    seen = server.seen[-1]
    assert "authorization" not in seen.headers
    assert CLIENT_HEADER not in seen.headers
    assert server.paths("POST /api/v1/auth/refresh") == []


def test_presigned_xml_error_is_a_data_store_error(server: ScriptedServer) -> None:
    server.script(
        "GET /blob",
        Reply(
            403,
            b"<Error><Code>AccessDenied</Code><Message>expired</Message></Error>",
            {"Content-Type": "application/xml"},
        ),
    )
    with pytest.raises(errors.DataStoreError) as err:
        transport(server.url, []).presigned("GET", f"{server.url}/blob?sig=1")
    assert (err.value.code, err.value.message, err.value.status_code) == (
        "AccessDenied",
        "expired",
        403,
    )


def test_presigned_503_is_retried(server: ScriptedServer) -> None:
    server.script(
        "PUT /blob",
        Reply(
            503, b"<Error><Code>SlowDown</Code><Message>s</Message></Error>", {"Retry-After": "1"}
        ),
        Reply(200, b""),
    )
    sleeps: list[float] = []
    transport(server.url, sleeps).presigned("PUT", f"{server.url}/blob", content=b"x")
    assert sleeps == [1.0]
    assert [s.body for s in server.seen] == [b"x", b"x"]
