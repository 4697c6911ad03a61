"""The endpoint gateway's fast path: a POST with a JSON body to a warm endpoint is answered
here, in plain ASGI, before the application's middleware stack, routing and dependency
injection; those cost more than the rest of a warm call in the control service (measured,
docs/performance-log.md#latency). Everything else, and every endpoint this cannot answer
(unknown, elastic, files, multipart), goes on to the routes in gateway.py, which give the
same answers: the same JSON bodies, the same errors with the same request id header."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from gristmill_platform import middleware
from gristmill_platform.deployments import gateway
from gristmill_platform.deployments.directory import Endpoint
from gristmill_platform.deployments.endpoint_inputs import json_inputs
from gristmill_platform.deployments.service import check_endpoint_token
from gristmill_platform.errors import UNEXPECTED, AppError, error_document
from gristmill_platform.http import limits
from gristmill_platform.state import AppState
from gristmill_platform.telemetry.metrics import observe_fast_path

log = logging.getLogger("gristmill.gateway")

PREFIX = "/endpoints/"
_WANTED = frozenset((b"authorization", b"content-length", b"content-type",
                     b"craft-ai-client", b"gristmill-client"))


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


def request_headers(scope: Scope) -> dict[bytes, bytes]:
    """The few headers the fast path reads (names are lower case in ASGI)."""
    return {key: value for key, value in scope["headers"] if key in _WANTED}


def is_json(headers: dict[bytes, bytes]) -> bool:
    value = headers.get(b"content-type")
    # no body type: read as JSON, as the route does
    return value is None or value.split(b";")[0].strip().lower() == b"application/json"


def json_body(status: int, payload: Any, headers: list[tuple[bytes, bytes]]
              ) -> tuple[Message, Message]:
    """The two ASGI messages of a JSON answer, encoded as Starlette's JSONResponse does."""
    body = json.dumps(payload, ensure_ascii=False, allow_nan=False, indent=None,
                      separators=(",", ":")).encode("utf-8")
    head = [(b"content-length", str(len(body)).encode("latin-1")),
            (b"content-type", b"application/json"), *headers]
    return ({"type": "http.response.start", "status": status, "headers": head},
            {"type": "http.response.body", "body": body})


class ClientGone(Exception):
    """The caller disconnected before its body was read."""


async def read_body(receive: Receive, declared: bytes | None) -> bytes:
    """The body, refused (413) from its declared length before any of it is read, or as
    soon as it passes the limit when it has none."""
    limit = limits.MAX_ENDPOINT_JSON_BODY
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise middleware.too_large(int(declared), limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise middleware.too_large(size, limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class EndpointFastPath:
    def __init__(self, state: AppState, request_id: Callable[[], str]) -> None:
        self.state = state
        self.request_id = request_id

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer the request if it is the fast path's; False leaves it to the app."""
        name = endpoint_name(scope)
        if name is None:
            return False
        arrived = time.perf_counter()
        headers = request_headers(scope)
        if not is_json(headers):
            return False
        services = self.state.started
        if services is None:  # not started yet
            return False
        endpoint = await services.endpoints.lookup(name)
        if endpoint is None or not endpoint.fast:
            return False
        self.state.traffic.enter()
        try:
            await self._answer(name, endpoint, headers, scope, receive, send, arrived)
        finally:
            self.state.traffic.leave()
        return True

    async def _answer(self, name: str, endpoint: Endpoint, headers: dict[bytes, bytes],
                      scope: Scope, receive: Receive, send: Send, arrived: float) -> None:
        request_id = self.request_id()
        # as RequestIdMiddleware does, for anything that reads it from the scope
        scope.setdefault("state", {})["request_id"] = request_id
        id_header = (b"x-request-id", request_id.encode("latin-1"))
        try:
            token = gateway.endpoint_token(
                headers.get(b"authorization", b"").decode("latin-1"), gateway.query_token(scope))
            check_endpoint_token(name, endpoint.deployment, token)
            body = json_inputs(await read_body(receive, headers.get(b"content-length")))
            is_sdk = bool(headers.get(b"craft-ai-client") or headers.get(b"gristmill-client"))
            ended, pipeline = await gateway.run_fast(self.state, endpoint, body,
                                                     wait=not is_sdk)
            pipeline_header = (b"x-gristmill-pipeline", pipeline.encode("latin-1"))
            if isinstance(ended, str):
                location = gateway.results_path(scope.get("root_path", ""), name, ended)
                messages = json_body(303, {"execution_id": ended}, [
                    (b"craft-ai-execution-id", ended.encode("latin-1")),
                    (b"location", location.encode("latin-1")), pipeline_header, id_header])
            else:
                messages = json_body(200, gateway.outputs_answer(ended), [
                    (b"craft-ai-execution-id", ended.id.encode("latin-1")), pipeline_header,
                    id_header])
        except ClientGone:
            return
        except AppError as exc:
            extra = [(key.lower().encode("latin-1"), value.encode("latin-1"))
                     for key, value in (exc.headers or {}).items()]
            messages = json_body(exc.status_code, error_document(
                exc.message, exc.name, request_id, exc.additional_data), [*extra, id_header])
        except Exception:
            # as the app's own handler for the unexpected (errors._unhandled)
            log.exception("unhandled error on POST %s", scope["path"])
            messages = json_body(500, error_document(*UNEXPECTED, request_id), [id_header])
        for message in messages:
            await send(message)
        # the middleware's HTTP metrics, which this path runs before (pre-bound children)
        observe_fast_path(messages[0]["status"], time.perf_counter() - arrived)
