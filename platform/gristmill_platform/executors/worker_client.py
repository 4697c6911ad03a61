"""The control service's HTTP client for warm workers (the runner's server mode), shared by
the local and the Kubernetes pools."""

from __future__ import annotations

import asyncio

SECRET_HEADER = "X-Gristmill-Worker-Secret"  # noqa: S105 - a header's name


class WorkerUnreachable(Exception):
    """The connection to a worker failed or broke before a whole answer came back."""


class WorkerClient:
    """Keep-alive HTTP/1.1 client for the worker API (two routes, JSON both ways, always a
    Content-Length): one request per connection at a time, idle connections reused.

    Not httpx: on this path httpx.AsyncClient costs about 0.9 ms per call on the control
    service's event loop, twice the worker's whole round trip (measured, see
    docs/performance-log.md); this costs a write and two reads."""

    def __init__(self, port: int, secret: str, host: str = "127.0.0.1",
                 unix_path: str | None = None) -> None:
        self._host, self._port, self._unix_path = host, port, unix_path
        self._headers = (f"Host: {host}:{port}\r\n{SECRET_HEADER}: {secret}\r\n"
                         "Content-Type: application/json\r\n").encode("latin-1")
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._closed = False

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self._closed:
            raise WorkerUnreachable("the worker is stopped")
        if self._idle:
            reader, writer = self._idle.pop()
        else:
            try:
                if self._unix_path is not None:
                    reader, writer = await asyncio.open_unix_connection(self._unix_path)
                else:
                    reader, writer = await asyncio.open_connection(self._host, self._port)
            except OSError as exc:
                raise WorkerUnreachable(str(exc)) from exc
        reusable = False
        try:
            writer.write(f"{method} {path} HTTP/1.1\r\nContent-Length: {len(body)}\r\n"
                         .encode("latin-1") + self._headers + b"\r\n" + body)
            head = await reader.readuntil(b"\r\n\r\n")
            status, length, reusable = parse_response_head(head)
            content = await reader.readexactly(length)
        except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError) as exc:
            reusable = False
            raise WorkerUnreachable(f"{type(exc).__name__}: {exc}") from exc
        finally:
            # a connection left mid-answer (error, cancellation) cannot carry another one
            if reusable and not self._closed:
                self._idle.append((reader, writer))
            else:
                writer.close()
        return status, content

    def close(self) -> None:
        self._closed = True
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


def parse_response_head(head: bytes) -> tuple[int, int, bool]:
    """(status, content length, whether the connection stays open)."""
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, keep_alive = 0, True
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value.strip().lower() == "close":
            keep_alive = False
    return status, length, keep_alive
