from __future__ import annotations

import time
from datetime import timedelta

import httpx
import jwt
import pytest

from tests.platform.helpers import new_user_token, run_admin


def refresh(env, token: str) -> httpx.Response:
    return httpx.post(f"{env.url}/api/v1/auth/refresh", json={"refresh_token": token})


def me(env, access: str) -> httpx.Response:
    return httpx.get(f"{env.url}/api/v1/users/me", headers={"Authorization": f"Bearer {access}"})


def assert_error(response: httpx.Response, status: int, fragment: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"message", "name", "request_id", "additional_data"}
    assert fragment in body["message"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def test_refresh_gives_a_jwt_with_numeric_exp_and_iat(gristmill_env) -> None:
    response = refresh(gristmill_env, gristmill_env.sdk_token)
    assert response.status_code == 200
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert isinstance(claims["exp"], int) and isinstance(claims["iat"], int)
    assert claims["exp"] - claims["iat"] >= 600  # well above the client's 30 s margin


@pytest.mark.parametrize("token", ["", "nonsense", "gm_0000000000000000_wrongsecret"])
def test_bad_refresh_tokens_get_401(gristmill_env, token: str) -> None:
    response = refresh(gristmill_env, token)
    assert response.status_code in (401, 422)
    assert response.json()["message"]


def test_wrong_secret_for_a_real_token_id_gets_401(gristmill_env) -> None:
    token_id = gristmill_env.sdk_token.split("_")[1]
    assert_error(refresh(gristmill_env, f"gm_{token_id}_not-the-secret"), 401,
                 "Invalid refresh token")


def test_revoked_token_stops_refreshing_and_its_access_tokens_stop_working(
    gristmill_env, unique
) -> None:
    created = new_user_token(gristmill_env.settings, f"rev-{unique}@example.com")
    access = refresh(gristmill_env, created.plaintext).json()["access_token"]
    assert me(gristmill_env, access).status_code == 200
    run_admin(gristmill_env.settings, "revoke_token", created.token.id)
    assert_error(refresh(gristmill_env, created.plaintext), 401, "revoked")
    assert_error(me(gristmill_env, access), 401, "revoked")


def test_expired_sdk_token_gets_401(gristmill_env, unique) -> None:
    created = new_user_token(gristmill_env.settings, f"exp-{unique}@example.com",
                             expires_in=timedelta(seconds=1))
    time.sleep(1.2)
    body = assert_error(refresh(gristmill_env, created.plaintext), 401, "expired")
    assert body["name"] == "TokenExpired"


def test_every_api_route_needs_a_bearer_token(gristmill_env) -> None:
    for method, path in [("GET", "/users/me"), ("GET", "/environment-variables"),
                         ("GET", "/data-store/list"), ("POST", "/data-store/information")]:
        response = httpx.request(method, f"{gristmill_env.url}/api/v1{path}")
        assert_error(response, 401, "Authorization")


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Bearer not.a.jwt"])
def test_malformed_bearer_gets_401(gristmill_env, header: str) -> None:
    response = httpx.get(f"{gristmill_env.url}/api/v1/users/me",
                         headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json()["name"] in ("Unauthorized",)


def test_get_user_by_id_and_unknown_user(gristmill_env, api) -> None:
    mine = api.get("/users/me").json()
    assert api.get(f"/users/{mine['id']}").json() == mine
    assert set(mine) == {"id", "name", "email"}
    assert_error(api.get("/users/no-such-user"), 404, "not found")


def test_execution_token_cannot_manage_env_vars(gristmill_env, unique) -> None:
    import asyncio

    from gristmill_platform.admin import AdminConsole

    async def mint() -> str:
        async with AdminConsole(gristmill_env.settings) as console, console._auth() as auth:
            admin = await auth.find_user("admin@localhost")
            created = await auth.create_sdk_token(
                admin.id, scope="execution", execution_id=f"exec-{unique}")
            return created.plaintext

    access = refresh(gristmill_env, asyncio.run(mint())).json()["access_token"]
    response = httpx.put(f"{gristmill_env.url}/api/v1/environment-variables",
                         json={"environment_variables": {"A": "1"}},
                         headers={"Authorization": f"Bearer {access}"})
    body = assert_error(response, 403, "execution token")
    assert body["name"] == "ForbiddenInExecution"


def test_unknown_route_has_the_error_body(gristmill_env, api) -> None:
    assert_error(api.get("/no-such-route"), 404, "No route")
