"""Every answer carries X-Request-Id, the unexpected 500 included: the request id wraps
Starlette's own error middleware (app.ControlApp), not the other way round."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from gristmill_platform.app import create_app
from gristmill_platform.settings import Settings


def test_an_unhandled_error_is_a_500_with_the_request_id(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path,
                              database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}"))

    async def broken() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/broken", broken)

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/broken")

    response = asyncio.run(call())
    assert response.status_code == 500
    body = response.json()
    assert body == {"message": "Internal server error", "name": "InternalServerError",
                    "request_id": response.headers["x-request-id"], "additional_data": None}
    assert "a bug" not in response.text
