"""A request id on every request (in the error body and the X-Request-Id header).

Plain ASGI rather than BaseHTTPMiddleware: it adds no task or stream copy per request,
which matters on the endpoint hot path."""

from __future__ import annotations

import itertools
import secrets
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gristmill_platform.logs import RequestContext, request_context


class RequestIds:
    """Request ids only need to be unique, not secret: a random prefix per process and a
    counter (uuid4 costs a system call per request)."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp, ids: RequestIds | None = None) -> None:
        self.app = app
        self.ids = ids or RequestIds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = self.ids()
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[Any] = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        # what logs say they happened under (gristmill_platform/logs.py)
        bound = request_context.set(RequestContext(request_id, scope))
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_context.reset(bound)
