"""SDK fixtures on top of the shared ``gristmill_env`` (a real control service)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gristmill import Gristmill
from tests.conftest import GristmillEnv


class RequestLog:
    """Records what the SDK sends, through httpx's own event hooks (nothing is mocked)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.responses: list[httpx.Response] = []

    def __call__(self, request: httpx.Request) -> None:
        self.requests.append(request)

    def response(self, response: httpx.Response) -> None:
        """A response hook: what the server answered to each try (retries included)."""
        self.responses.append(response)

    def hooks(self) -> dict[str, list[Any]]:
        return {"request": [self], "response": [self.response]}

    def paths(self) -> list[str]:
        return [f"{r.method} {r.url.path}" for r in self.requests]

    def answered(self, path: str, *, ok: bool = True) -> list[httpx.Response]:
        """Responses to ``"METHOD /path"`` that succeeded (or, with ``ok=False``, did not)."""
        return [r for r in self.responses
                if f"{r.request.method} {r.request.url.path}" == path and r.is_success == ok]

    def clear(self) -> None:
        self.requests.clear()
        self.responses.clear()


@pytest.fixture
def request_log() -> RequestLog:
    return RequestLog()


@pytest.fixture
def gm(gristmill_env: GristmillEnv, request_log: RequestLog) -> Iterator[Gristmill]:
    """A client of the test environment, progress bars off, logging its requests."""
    http = httpx.Client(timeout=60, event_hooks=request_log.hooks())
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
