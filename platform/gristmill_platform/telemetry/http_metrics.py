"""HTTP request counts and latencies by route template, as plain ASGI middleware (no task
or stream copy per request). The endpoint fast path, which answers before any middleware,
records its requests itself (deployments/fast_path.py)."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gristmill_platform.route_templates import UNMATCHED, template_of
from gristmill_platform.telemetry.metrics import observe_http


class HttpMetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees if the app raises before answering

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            # unmatched paths share one label: a scanner must not create series
            observe_http(scope["method"], template_of(scope) or UNMATCHED, status,
                         time.perf_counter() - started)
