"""A request id on every request (in the error body and the X-Request-Id header), and
body size limits checked before a body is read.

Plain ASGI rather than BaseHTTPMiddleware: it adds no task or stream copy per request,
which matters on the endpoint hot path."""

from __future__ import annotations

import itertools
import json
import secrets
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gristmill_platform.errors import AppError, PayloadTooLarge, error_document
from gristmill_platform.http.limits import body_limit
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


class BodyLimitMiddleware:
    """Refuse a body larger than its route accepts (http/limits.py) from its declared
    Content-Length, before any of it is read; a body without one (chunked) is counted as
    it is read and refused as soon as it passes the limit."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key: value for key, value in scope["headers"]
                   if key in (b"content-length", b"content-type")}
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        limit = body_limit(scope["method"], path,
                           headers.get(b"content-type", b"").decode("latin-1"))
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _refuse(scope, send, too_large(int(declared), limit))
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise too_large(received, limit)
            return message

        await self.app(scope, counted, send)


def too_large(size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body is at least {size} bytes; this route accepts at most {limit} "
        "bytes", additional_data={"limit_bytes": limit})


async def _refuse(scope: Scope, send: Send, error: AppError) -> None:
    request_id = str(scope.get("state", {}).get("request_id", "NO_REQUEST_ID"))
    body = json.dumps(error_document(error.message, error.name, request_id,
                                     error.additional_data)).encode()
    await send({"type": "http.response.start", "status": error.status_code, "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("latin-1")),
        # the unread body stays on the connection: the client must not reuse it
        (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
