"""The read end of a forked worker's output pipe is closed exactly once, on either event
loop: uvloop closes the descriptor itself and then the file object, so the file object
must not own it there (a second close(2) once closed a number a test thread's CA bundle
had just been given: EBADF in CI); asyncio closes only the file object, which must."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import pytest

from gristmill_platform.executors.zygotes import pipe_file

uvloop = pytest.importorskip("uvloop")

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def identity(fd: int) -> tuple[int, int]:
    found = os.fstat(fd)
    return found.st_dev, found.st_ino


def closed(fd: int, pipe: tuple[int, int]) -> bool:
    """fd no longer refers to the pipe: closed, or closed and its number given to another
    file by another thread meanwhile (the test process has service threads of earlier
    tests opening files: a number alone would call that "left open")."""
    try:
        return identity(fd) != pipe
    except OSError:
        return True


@pytest.mark.parametrize("kind", sorted(LOOPS))
def test_the_read_end_is_closed_once_by_whoever_closes_it(kind: str) -> None:
    loop = LOOPS[kind]()
    read_fd, write_fd = os.pipe()
    pipe = identity(read_fd)

    async def follow() -> tuple[bytes, bool]:
        reader = asyncio.StreamReader()
        file = pipe_file(read_fd, asyncio.get_running_loop())
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), file)
        os.write(write_fd, b"a line\n")
        os.close(write_fd)
        data = await reader.read()
        transport.close()
        await asyncio.sleep(0.05)
        return data, file.closefd

    try:
        data, file_owns_fd = loop.run_until_complete(follow())
    finally:
        loop.close()
    assert data == b"a line\n"
    assert closed(read_fd, pipe), "the pipe's read end was left open"
    # the one closing the descriptor is the transport on uvloop, the file object on asyncio
    assert file_owns_fd is (kind == "asyncio")
