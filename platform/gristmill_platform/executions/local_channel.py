"""The runner's calls from a forked local worker's channel (executors/runner_channel.py),
answered as the HTTP routes answer them (runtime_routes.py): the same bodies, the same
limits, the same code (runtime_calls.py), the same error documents and statuses. No
token is checked: the channel's socket exists for that one execution's worker only."""

from __future__ import annotations

import json
import logging
from typing import Any

from gristmill_platform.errors import (
    UNEXPECTED,
    AppError,
    error_document,
    is_transient_database_error,
)
from gristmill_platform.executions.runtime_calls import RuntimeCalls
from gristmill_platform.http.bodies import MAX_SMALL_BODY, json_object

log = logging.getLogger("gristmill.executions")
REQUEST_ID = "local-channel"


class LocalChannelCalls:
    def __init__(self, calls: RuntimeCalls) -> None:
        self.calls = calls

    async def __call__(self, execution_id: str, path: str, body: bytes) -> tuple[int, bytes]:
        try:
            payload = json_object(body, MAX_SMALL_BODY)
            answer: dict[str, Any]
            if path == "/start":
                answer = await self.calls.start(execution_id)
            elif path == "/logs":
                answer = await self.calls.logs(execution_id, payload)
            elif path == "/finish":
                answer = await self.calls.finish(execution_id, payload)
            else:
                return 404, _error(f"No call {path!r} on the local channel", "NotFound")
        except AppError as exc:
            return exc.status_code, _error(exc.message, exc.name, exc.additional_data)
        except Exception as exc:
            if is_transient_database_error(exc):
                log.warning("database busy on the local channel's %s: %s", path, exc)
                return 503, _error("The service is busy: send the request again shortly",
                                   "ServiceBusy")
            log.exception("unhandled error on the local channel's %s", path)
            return 500, _error(*UNEXPECTED)
        return 200, json.dumps(answer).encode()


def _error(message: str, name: str, additional_data: Any = None) -> bytes:
    return json.dumps(error_document(message, name, REQUEST_ID, additional_data)).encode()
