"""A lean HTTP/1.1 load generator: N keep-alive connections, each sending the same
pre-encoded POST as soon as the answer to the last one is whole.

Why not httpx: its AsyncClient costs about 1.7 ms of the client's CPU per request on the
2-core machine, so "requests/s at 16 clients" through it measured the client. Against
bare FastAPI the client used 100 % of a core while the server used 15 %, and every server
in bench/endpoints.py topped out at the same 550-630 requests/s
(docs/performance-log.md#latency). This costs tens of microseconds per request, so the
figure is the server's.

Every answer is checked: a status other than 200, an answer without a Content-Length
(a chunked body is not read here) or a connection closed mid-run fails the run."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

try:
    import uvloop
except ImportError:  # the loop of the standard library: slower, still correct
    uvloop = None  # type: ignore[assignment]

WARM_UP_PER_CONNECTION = 5


class LoadError(RuntimeError):
    """An answer that was not a whole 200."""


@dataclass(frozen=True)
class LoadResult:
    requests: int  # counted; the warm-up's are not
    warm_up: int  # sent before, not timed
    seconds: float
    client_cpu_s: float  # the generator's own CPU time while it measured

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    @property
    def client_busy(self) -> float:
        """The share of one core the generator used: near 1 means it was the bottleneck."""
        return self.client_cpu_s / self.seconds


def encode_post(url: str, body: bytes, headers: dict[str, str]) -> bytes:
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    head = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}",
            "Content-Type: application/json", f"Content-Length: {len(body)}",
            *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def answer_size(head: bytes) -> int:
    """The body's length of a whole 200 answer's head (without its blank line)."""
    status = head[9:12]
    if status != b"200":
        raise LoadError(f"answer {status.decode('latin-1')}: {head[:200]!r}")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise LoadError(f"an answer without Content-Length: {head[:200]!r}")


class _Connection(asyncio.Protocol):
    def __init__(self, request: bytes, budget: list[int]) -> None:
        self._request = request
        self._budget = budget  # requests left to send, shared by the connections
        self._buffer = b""
        self._need: int | None = None  # the whole answer's size, once its head is in
        self._transport: asyncio.Transport | None = None
        self.answered = 0
        self.closing = False  # closed by the generator: not an error
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses)
        self._transport = cast(asyncio.Transport, transport)

    def start(self) -> None:
        if not self._take():
            self.ended.set_result(None)

    def _take(self) -> bool:
        if self._budget[0] <= 0:
            return False
        self._budget[0] -= 1
        assert self._transport is not None
        self._transport.write(self._request)
        return True

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            while True:
                if self._need is None:
                    end = self._buffer.find(b"\r\n\r\n")
                    if end < 0:
                        return
                    self._need = end + 4 + answer_size(self._buffer[:end])
                if len(self._buffer) < self._need:
                    return
                self._buffer = self._buffer[self._need:]
                self._need = None
                self.answered += 1
                if not self._take():
                    if not self.ended.done():
                        self.ended.set_result(None)
                    return
        except LoadError as exc:
            if not self.ended.done():
                self.ended.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing and not self.ended.done():
            self.ended.set_exception(LoadError(f"connection closed mid-run: {exc}"))


async def _round(connections: list[_Connection], budget: list[int], count: int) -> None:
    budget[0] = count
    loop = asyncio.get_running_loop()
    for connection in connections:
        connection.ended = loop.create_future()
        connection.start()
    await asyncio.gather(*(connection.ended for connection in connections))


async def _load(url: str, body: bytes, headers: dict[str, str], connections: int,
                total: int) -> LoadResult:
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"{url}: a URL with a host and a port is needed")
    request = encode_post(url, body, headers)
    budget = [0]
    loop = asyncio.get_running_loop()
    opened = [await loop.create_connection(lambda: _Connection(request, budget),
                                           parts.hostname, parts.port)
              for _ in range(connections)]
    protocols = [protocol for _, protocol in opened]
    try:
        await _round(protocols, budget, WARM_UP_PER_CONNECTION * connections)
        cpu, start = time.process_time(), time.perf_counter()
        await _round(protocols, budget, total)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        for transport, protocol in opened:
            protocol.closing = True
            transport.close()
    return LoadResult(requests=total, warm_up=WARM_UP_PER_CONNECTION * connections,
                      seconds=seconds, client_cpu_s=cpu)


def load(url: str, body: bytes, headers: dict[str, str], *, connections: int, total: int
         ) -> LoadResult:
    """total requests over connections keep-alive connections, after a warm-up of
    WARM_UP_PER_CONNECTION requests each (not counted)."""
    if uvloop is not None:
        return uvloop.run(_load(url, body, headers, connections, total))
    return asyncio.run(_load(url, body, headers, connections, total))
