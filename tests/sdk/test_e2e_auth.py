"""Authentication, users and configuration against the real control service."""

from __future__ import annotations

import pytest

import gristmill
from gristmill import AuthenticationError, CraftAiSdk, Gristmill, NotFoundError
from tests.conftest import GristmillEnv
from tests.sdk._scripted_server import make_jwt
from tests.sdk.conftest import RequestLog

REFRESH = "POST /api/v1/auth/refresh"
ME = "GET /api/v1/users/me"


def test_who_am_i_and_get_user(gm: Gristmill) -> None:
    me = gm.who_am_i()
    assert set(me) == {"id", "name", "email"}
    assert isinstance(me["id"], str) and me["id"]
    user = gm.get_user(me["id"])
    assert {k: user[k] for k in ("id", "name", "email")} == me


def test_unknown_user_is_not_found(gm: Gristmill) -> None:
    with pytest.raises(NotFoundError) as err:
        gm.get_user("no-such-user")
    assert err.value.status_code == 404
    assert err.value.message


def test_token_is_exchanged_once_then_reused(gm: Gristmill, request_log: RequestLog) -> None:
    gm.who_am_i()
    gm.who_am_i()
    assert request_log.paths() == [REFRESH, ME, ME]
    refresh, me = request_log.requests[0], request_log.requests[1]
    assert "authorization" not in refresh.headers
    assert me.headers["authorization"].startswith("Bearer ")
    assert me.headers["gristmill-client"] == f"gristmill@{gristmill.__version__}"


def test_forgotten_token_is_refreshed(gm: Gristmill, request_log: RequestLog) -> None:
    gm.who_am_i()
    gm._transport.forget_access_token()
    gm.who_am_i()
    assert request_log.paths() == [REFRESH, ME, REFRESH, ME]


def test_a_refused_access_token_is_replaced_and_the_call_replayed(
    gm: Gristmill, request_log: RequestLog
) -> None:
    gm.who_am_i()
    # A well-formed, unexpired JWT the server did not sign: it answers 401.
    gm._transport._access_token = make_jwt(sub="intruder")
    request_log.clear()
    assert set(gm.who_am_i()) == {"id", "name", "email"}
    assert request_log.paths() == [ME, REFRESH, ME]


def test_bad_sdk_token_is_an_authentication_error(gristmill_env: GristmillEnv) -> None:
    client = Gristmill(gristmill_env.url, "gm_0000_notavalidsecret", progress=False)
    with client, pytest.raises(AuthenticationError) as err:
        client.who_am_i()
    assert err.value.status_code == 401
    assert err.value.message
    assert err.value.request_id
    text = str(err.value)
    assert err.value.message in text and err.value.request_id in text
    assert "notavalidsecret" not in text


def test_garbage_sdk_token_is_an_authentication_error(gristmill_env: GristmillEnv) -> None:
    client = Gristmill(gristmill_env.url, "not-even-a-token", progress=False)
    with client, pytest.raises(AuthenticationError):
        client.who_am_i()


def test_configuration_from_gristmill_variables(
    gristmill_env: GristmillEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (
        "CRAFT_AI_ENVIRONMENT_URL",
        "CRAFT_AI_SDK_TOKEN",
        "CRAFT_AI_CONTROL_URL",
        "GRISTMILL_CONTROL_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GRISTMILL_ENVIRONMENT_URL", gristmill_env.url + "/")
    monkeypatch.setenv("GRISTMILL_SDK_TOKEN", gristmill_env.sdk_token)
    with Gristmill(progress=False) as client:
        assert client.base_control_url == gristmill_env.url
        assert client.who_am_i()["id"]


def test_craft_ai_code_runs_unchanged(
    gristmill_env: GristmillEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("GRISTMILL_ENVIRONMENT_URL", "GRISTMILL_SDK_TOKEN", "GRISTMILL_CONTROL_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CRAFT_AI_ENVIRONMENT_URL", gristmill_env.url)
    monkeypatch.setenv("CRAFT_AI_SDK_TOKEN", gristmill_env.sdk_token)
    monkeypatch.setenv("CRAFT_AI_CONTROL_URL", gristmill_env.url)
    monkeypatch.setenv("GRISTMILL_PROGRESS", "0")
    with CraftAiSdk() as sdk:
        assert sdk.who_am_i()["id"]
    # craft-ai-sdk's positional order: token first.
    with CraftAiSdk(gristmill_env.sdk_token, gristmill_env.url) as sdk:
        assert sdk.base_environment_api_url == f"{gristmill_env.url}/api/v1"
        assert sdk.who_am_i()["id"]
    assert issubclass(CraftAiSdk, Gristmill)
