"""The control service's end of a forked local worker's channel
(sdk/gristmill/runtime/_channel.py): the runner's start, logs and finish, without HTTP.

Framing, both ways: a 4-byte big-endian length, then that many bytes; a request is
``b"<path>\\n" + JSON body``, an answer ``b"<status>\\n" + JSON body``. One request at a
time; the channel ends when the worker closes its end (it exited).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Awaitable, Callable

log = logging.getLogger("gristmill.executors")

# The worker's side of the protocol (gristmill.runtime._channel): the variable naming its
# descriptor, and the descriptor the fork server gives it.
RUNTIME_FD_VAR = "GRISTMILL_RUNTIME_FD"
RUNTIME_FD = 3
MAX_FRAME = 256 * 1024 * 1024
_HEADER = struct.Struct("!I")

# (execution id, path, body) -> (status, answer body)
ChannelHandler = Callable[[str, str, bytes], Awaitable[tuple[int, bytes]]]


def frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload)) + payload


async def serve_channel(sock: socket.socket, execution_id: str, handler: ChannelHandler,
                        start_answer: bytes | None = None,
                        recorded: Awaitable[None] | None = None) -> None:
    """Answer the worker's calls until it closes its end. ``start_answer``: the execution
    was started with the launch; the first /start gets this (a second one goes to the
    handler, which refuses it as the execution is no longer pending). ``recorded``: what
    the handler answers waits for it (the launch's transaction, which writes the start,
    is still open while the worker begins)."""
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    try:
        while True:
            try:
                header = await reader.readexactly(_HEADER.size)
            except asyncio.IncompleteReadError:
                return  # the worker exited
            size = _HEADER.unpack(header)[0]
            if size > MAX_FRAME:
                log.warning("execution %s: its worker sent a frame of %d bytes; closing "
                            "its channel", execution_id, size)
                return
            payload = await reader.readexactly(size)
            raw_path, _, body = payload.partition(b"\n")
            path = raw_path.decode("ascii", "replace")
            if path == "/start" and start_answer is not None:
                status, answer = 200, start_answer
                start_answer = None
            else:
                if recorded is not None:
                    await recorded
                    recorded = None
                status, answer = await handler(execution_id, path, body)
            writer.write(frame(b"%d\n" % status + answer))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        return  # the worker died mid-call: its exit is handled by the executor
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
