"""The control service's side of the runtime protocol, just enough to drive the runner.

An edge double for tests only: a real HTTP server on 127.0.0.1 (stdlib ``http.server`` in a
thread) that implements docs/internals/runtime-protocol.md minimally and records what the
runner sends, while the real control-service routes are being written.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

SDK_TOKEN = "sdk-token-for-tests-0123456789abcdef"
EXECUTION_ID = "p1-3f2a9c1e"
PREFIX = f"/api/v1/runtime/executions/{EXECUTION_ID}"


def make_jwt(exp: float | None = None) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    payload = {"exp": int(time.time() + 3600) if exp is None else exp, "sub": "execution"}
    return ".".join(
        [b64(b'{"alg":"HS256","typ":"JWT"}'), b64(json.dumps(payload).encode()), b64(b"sig")]
    )


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class ControlDouble:
    """What to answer (set before the runner starts) and what was received."""

    start_status: int = 200
    start_body: dict[str, Any] = field(default_factory=dict)
    input_files: dict[str, bytes] = field(default_factory=dict)
    logs_status: int = 200
    # Answer to POST /finish from the payload; by default, the status the runner sent.
    finish_answer: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    # Statuses answered to the first calls of a route ("POST /finish") before the real one.
    fail_first: dict[str, list[int]] = field(default_factory=dict)
    access_token: str = field(default_factory=make_jwt)

    received: list[Received] = field(default_factory=list)
    log_posts: list[list[dict[str, str]]] = field(default_factory=list)
    outputs: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    finish: dict[str, Any] | None = None
    refreshes: int = 0
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- what tests read --

    def all_log_lines(self) -> list[dict[str, str]]:
        """Every line, in the order sent: the POST /logs batches, then finish's."""
        lines = [line for post in self.log_posts for line in post]
        return lines + list((self.finish or {}).get("logs", []))

    def messages(self, stream: str | None = None) -> list[str]:
        return [
            line["message"]
            for line in self.all_log_lines()
            if stream is None or line["stream"] == stream
        ]

    def routes(self) -> list[str]:
        return [f"{item.method} {item.path}" for item in self.received]

    # -- the server side --

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes
               ) -> tuple[int, dict[str, str], bytes]:
        path = urlsplit(raw_path).path
        with self._lock:
            self.received.append(Received(method, path, headers, body))
            queued = self.fail_first.get(f"{method} {path}")
            if queued:
                return _json(queued.pop(0), {"message": "scripted failure", "name": "Test"})
        if method == "POST" and path == "/api/v1/auth/refresh":
            payload = json.loads(body)
            if payload != {"refresh_token": SDK_TOKEN}:
                return _json(401, {"message": "Invalid refresh token", "name": "Unauthorized"})
            with self._lock:
                self.refreshes += 1
            return _json(200, {"access_token": self.access_token})
        if not path.startswith(PREFIX + "/"):
            return _json(404, {"message": f"no route {path}", "name": "NotFound"})
        if headers.get("authorization") != f"Bearer {self.access_token}":
            return _json(401, {"message": "bad access token", "name": "Unauthorized"})
        route = path[len(PREFIX):]
        if method == "POST" and route == "/start":
            if self.start_status != 200:
                return _json(self.start_status, {"message": "already started", "name": "Conflict"})
            return _json(200, {"execution_id": EXECUTION_ID, **self.start_body})
        if method == "GET" and route.startswith("/inputs/"):
            name = unquote(route[len("/inputs/"):])
            if name not in self.input_files:
                return _json(404, {"message": f"no input {name}", "name": "NotFound"})
            return 200, {"Content-Type": "application/octet-stream"}, self.input_files[name]
        if method == "POST" and route == "/logs":
            if self.logs_status != 200:
                return _json(self.logs_status, {"message": "gone", "name": "Conflict"})
            with self._lock:
                self.log_posts.append(json.loads(body)["lines"])
            return 204, {}, b""
        if method == "PUT" and route.startswith("/outputs/"):
            name = unquote(route[len("/outputs/"):])
            with self._lock:
                self.outputs[name] = (unquote(headers.get("x-gristmill-filename", "")), body)
            return 204, {}, b""
        if method == "POST" and route == "/finish":
            payload = json.loads(body)
            with self._lock:
                self.finish = payload
            if self.finish_answer is not None:
                return _json(200, self.finish_answer(payload))
            return _json(200, {"status": payload["status"], "reason": None})
        return _json(404, {"message": f"no route {method} {route}", "name": "NotFound"})


def _json(status: int, payload: Any) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()


@contextmanager
def serve(double: ControlDouble) -> Iterator[ControlDouble]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {key.lower(): value for key, value in self.headers.items()}
            status, reply_headers, content = double.handle(self.command, self.path, headers, body)
            self.send_response(status)
            for key, value in reply_headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        do_GET = do_POST = do_PUT = _any

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    double.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield double
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
