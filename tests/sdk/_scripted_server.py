"""A tiny real HTTP server on 127.0.0.1 that answers from a script, to exercise the SDK's
retry, refresh and streaming logic without mocking httpx."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def make_jwt(exp: float | None = None, **claims: Any) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    payload = dict(claims)
    payload["exp"] = int(time.time() + 3600) if exp is None else exp
    return ".".join(
        [b64(b'{"alg":"HS256","typ":"JWT"}'), b64(json.dumps(payload).encode()), b64(b"sig")]
    )


@dataclass
class Reply:
    status: int = 200
    body: bytes | dict[str, Any] | list[Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # Announce this Content-Length but close the connection after `body` (a cut transfer).
    truncate_to_length: int | None = None


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class ScriptedServer:
    """Routes map "METHOD /path" to a queue of replies; the last reply repeats."""

    def __init__(self) -> None:
        self.routes: dict[str, deque[Reply]] = defaultdict(deque)
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                key = f"{self.command} {path}"
                with server._lock:
                    server.seen.append(
                        Seen(
                            self.command,
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                        )
                    )
                    queue = server.routes.get(key)
                    if not queue:
                        reply = Reply(404, {"message": f"no script for {key}", "name": "NotFound"})
                    elif len(queue) > 1:
                        reply = queue.popleft()
                    else:
                        reply = queue[0]
                payload = reply.body
                if isinstance(payload, dict | list):
                    data = json.dumps(payload).encode()
                    content_type = "application/json"
                else:
                    data = payload or b""
                    content_type = "application/octet-stream"
                self.send_response(reply.status)
                headers = {"Content-Type": content_type, **reply.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                if reply.truncate_to_length is not None:
                    self.send_header("Content-Length", str(reply.truncate_to_length))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(data)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def script(self, route: str, *replies: Reply) -> None:
        self.routes[route] = deque(replies)

    def paths(self, route: str | None = None) -> list[str]:
        return [
            f"{s.method} {s.path.split('?', 1)[0]}"
            for s in self.seen
            if route is None or f"{s.method} {s.path.split('?', 1)[0]}" == route
        ]

    def allow_login(self, token: str | None = None) -> None:
        self.script("POST /api/v1/auth/refresh", Reply(200, {"access_token": token or make_jwt()}))

    @contextmanager
    def running(self) -> Iterator[ScriptedServer]:
        thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join(timeout=5)
