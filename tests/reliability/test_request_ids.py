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


def test_a_busy_database_is_a_503_to_retry(tmp_path: Path) -> None:
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    app = create_app(Settings(data_dir=tmp_path,
                              database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}"))

    async def locked() -> None:
        raise OperationalError("INSERT ...", {}, Exception("database is locked"))

    async def exhausted() -> None:
        raise PoolTimeout("QueuePool limit of size 10 overflow 20 reached")

    async def corrupt() -> None:
        raise OperationalError("SELECT ...", {}, Exception("no such table: x"))

    app.add_api_route("/locked", locked)
    app.add_api_route("/exhausted", exhausted)
    app.add_api_route("/corrupt", corrupt)

    async def call(path: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get(path)

    for path in ("/locked", "/exhausted"):
        response = asyncio.run(call(path))
        assert response.status_code == 503, path
        assert response.headers["retry-after"] == "1"
        assert response.json()["name"] == "ServiceBusy"
        assert response.json()["request_id"] == response.headers["x-request-id"]
    assert asyncio.run(call("/corrupt")).status_code == 500
