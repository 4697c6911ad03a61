from __future__ import annotations

import httpx


def test_health_and_auth(gristmill_env) -> None:
    assert httpx.get(f"{gristmill_env.url}/healthz").json() == {"status": "ok"}
    token = gristmill_env.access_token()
    me = httpx.get(f"{gristmill_env.url}/api/v1/users/me",
                   headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200, me.text
    assert me.json()["email"] == "admin@localhost"
