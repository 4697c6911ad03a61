"""The control service's HTTP protocol sends a response's head with its first body bytes
(gristmill_platform/http/coalescing.py): the transport below records what is written, as
the socket would receive it. Every test that calls the control service goes through it."""

from __future__ import annotations

import asyncio

from gristmill_platform.http.coalescing import HeadCoalescingTransport

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class RecordingTransport:
    """The socket's side of a transport: each write() as one send."""

    def __init__(self) -> None:
        self.sends: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.sends.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


async def settle() -> None:
    for _ in range(3):  # the loop's next turns
        await asyncio.sleep(0)


async def test_head_and_body_go_in_one_send() -> None:
    sent = RecordingTransport()
    transport = HeadCoalescingTransport(sent, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(HEAD)
    assert sent.sends == []
    transport.write(b"{}")
    assert sent.sends == [HEAD + b"{}"]
    await settle()
    assert sent.sends == [HEAD + b"{}"]  # nothing sent twice


async def test_a_head_alone_leaves_on_the_next_turn_of_the_loop() -> None:
    sent = RecordingTransport()
    transport = HeadCoalescingTransport(sent, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(HEAD)
    await settle()
    assert sent.sends == [HEAD]
    transport.write(b"later")
    assert sent.sends == [HEAD, b"later"]


async def test_other_writes_pass_at_once_and_close_sends_the_held_head_first() -> None:
    sent = RecordingTransport()
    transport = HeadCoalescingTransport(sent, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 not a head")
    transport.write(b"chunk\r\n\r\n")
    assert sent.sends == [b"HTTP/1.1 not a head", b"chunk\r\n\r\n"]
    transport.write(HEAD)
    transport.close()
    assert sent.sends[-1] == HEAD and sent.closed
    assert transport.get_extra_info("peername") == "info:peername"
