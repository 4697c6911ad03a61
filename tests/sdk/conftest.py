"""SDK fixtures on top of the shared ``gristmill_env`` (a real control service)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from gristmill import Gristmill
from tests.conftest import GristmillEnv


class RequestLog:
    """Records what the SDK sends, through httpx's own event hooks (nothing is mocked)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> None:
        self.requests.append(request)

    def paths(self) -> list[str]:
        return [f"{r.method} {r.url.path}" for r in self.requests]

    def clear(self) -> None:
        self.requests.clear()


@pytest.fixture
def request_log() -> RequestLog:
    return RequestLog()


@pytest.fixture
def gm(gristmill_env: GristmillEnv, request_log: RequestLog) -> Iterator[Gristmill]:
    """A client of the test environment, progress bars off, logging its requests."""
    http = httpx.Client(timeout=60, event_hooks={"request": [request_log]})
    client = Gristmill(
        gristmill_env.url,
        gristmill_env.sdk_token,
        progress=False,
        http_client=http,
    )
    try:
        yield client
    finally:
        client.close()
        http.close()
