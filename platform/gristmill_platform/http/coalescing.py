"""uvicorn's HTTP protocol (httptools), with each response's head sent together with its
first body bytes: one write, one TCP segment, one wake-up of the client, where uvicorn
writes the head at ``http.response.start`` and the body at ``http.response.body``, two
sends and often two wake-ups of the client for a small JSON answer. On this machine a
send on loopback cost tens of microseconds, a fair part of a warm call (measured,
docs/performance-log.md#latency).

The head is held until the next write on the connection, and at the latest until the
event loop's next turn (a response whose body comes later, a ``100 Continue``): what is
written keeps its order, and nothing waits for more than one turn of the loop."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_HEAD_START = b"HTTP/1.1 "
_HEAD_END = b"\r\n\r\n"


class HeadCoalescingTransport:
    """A transport that holds a response head written alone until the next write."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + bytes(data))
        elif isinstance(data, bytes) and data.startswith(_HEAD_START) \
                and data.endswith(_HEAD_END):
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are no asyncio.Transport subclasses; both write alike)
        held = HeadCoalescingTransport(cast(asyncio.Transport, transport), self.loop)
        super().connection_made(cast(asyncio.Transport, held))
