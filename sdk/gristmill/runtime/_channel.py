"""The local channel: how a worker of the local backend makes its runtime calls without
HTTP.

The local backend hands its workers (forked, or spawned when there is no fork server) one
end of a socket (descriptor ``GRISTMILL_RUNTIME_FD``, not inherited by the step's own
subprocesses) whose other end the control service holds for that execution only: holding
it is the credential. ``/start``, ``/logs`` and
``/finish`` go over it with the same bodies and answers as over HTTP; the control service
runs the same code for both. File inputs and outputs still go over HTTP, and so does
everything once the channel is gone (the control service restarted while the step ran:
its successor is reached over HTTP, with the execution token, as before).

Framing, both ways: a 4-byte big-endian length, then that many bytes.
  request   b"<path>\\n" + the JSON body          (path: /start, /logs, /finish)
  answer    b"<status>\\n" + the JSON answer      (an error document when status >= 300)

Standard library only, like the rest of the runner.
"""

from __future__ import annotations

import os
import socket
import struct
import threading

RUNTIME_FD_VAR = "GRISTMILL_RUNTIME_FD"
# The descriptor the fork server gives the channel in the worker.
RUNTIME_FD = 3
CALLS = frozenset({"/start", "/logs", "/finish"})
# A finish carries the outputs and the last batch of log lines: bounded by the control
# service's own limits well below this.
MAX_FRAME = 256 * 1024 * 1024
_HEADER = struct.Struct("!I")


class ChannelClosed(OSError):
    """The other end is gone or answered garbage: the caller goes back to HTTP."""


def frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload)) + payload


def read_frame(sock: socket.socket) -> bytes:
    size = _HEADER.unpack(_read_exactly(sock, _HEADER.size))[0]
    if size > MAX_FRAME:
        raise ChannelClosed(f"a frame of {size} bytes")
    return _read_exactly(sock, size)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        count = sock.recv_into(view[got:])
        if count == 0:
            raise ChannelClosed("the control service closed the channel")
        got += count
    return bytes(buffer)


class Channel:
    """One request at a time (the main thread and the log shipper share it)."""

    def __init__(self, fd: int, timeout_s: float) -> None:
        # A spawned worker gets it inheritable (pass_fds): the step's subprocesses must not.
        os.set_inheritable(fd, False)
        self._sock = socket.socket(fileno=fd)
        self._sock.settimeout(timeout_s)
        self._lock = threading.Lock()

    def call(self, path: str, body: bytes) -> tuple[int, bytes]:
        """(status, answer body). Raises OSError (ChannelClosed among them) when the
        channel is unusable; it is then closed."""
        with self._lock:
            try:
                self._sock.sendall(frame(path.encode("ascii") + b"\n" + body))
                answer = read_frame(self._sock)
                head, _, content = answer.partition(b"\n")
                try:
                    status = int(head)
                except ValueError:
                    raise ChannelClosed(f"an unreadable answer {head[:20]!r}") from None
            except OSError:
                self._sock.close()
                raise
        return status, content

    def close(self) -> None:
        with self._lock:
            self._sock.close()
