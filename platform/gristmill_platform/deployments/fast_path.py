"""The endpoint gateway's fast path as an ASGI middleware: a POST to a warm endpoint with a
JSON body is answered here, ahead of the framework's routing, dependency injection and
exception middlewares — about a third of the control service's time per warm call
(measured with py-spy, docs/deployments.md#latency). Everything else, and every endpoint
this cannot answer (unknown, elastic, files), goes on to the routes in gateway.py, which
give the same answers."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gristmill_platform.deployments import gateway
from gristmill_platform.deployments.service import check_endpoint_token
from gristmill_platform.errors import AppError, app_error_response
from gristmill_platform.state import AppState

PREFIX = "/endpoints/"


def endpoint_name(scope: Scope) -> str | None:
    """<name> when the request is POST /endpoints/<name>, else None."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    if not path.startswith(PREFIX):
        return None
    name = path[len(PREFIX):]
    return name if name and "/" not in name else None


def _is_json(scope: Scope) -> bool:
    for key, value in scope["headers"]:
        if key == b"content-type":
            return bool(value.split(b";")[0].strip().lower() == b"application/json")
    return True  # no body type: read as JSON, as the route does


class EndpointFastPath:
    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = endpoint_name(scope)
        if name is not None and _is_json(scope):
            endpoint = await self.state.endpoints.lookup(name)
            if endpoint is not None and endpoint.fast:
                request = Request(scope, receive)
                try:
                    check_endpoint_token(name, endpoint.deployment, gateway.token_of(request))
                    body, _ = await gateway.inputs_of(request)
                    response = await gateway.trigger_fast(self.state, request, endpoint,
                                                          body)
                except AppError as exc:
                    response = app_error_response(request, exc)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
