"""Blob files of the local data store.

Bytes are written to a fresh blob file and only become an object when the index row
pointing at them commits, so readers never see a half-written object and an interrupted
upload leaves only an unreferenced blob (removed at once on failure)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from pathlib import Path

import anyio

BUFFER_BYTES = 1024 * 1024
# a page-cache write of a received chunk takes well under a millisecond
SLOW_WRITE_S = 0.02


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"

    def ensure(self) -> None:
        self.blobs.mkdir(parents=True, exist_ok=True)

    def new_name(self) -> str:
        return secrets.token_hex(16)

    def path_of(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"bad blob name {name!r}")
        # fan out so no directory grows past a few thousand entries
        return self.blobs / name[:2] / name

    def prepare(self, name: str) -> Path:
        target = self.path_of(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path_of(name).unlink()


class BlobWriter:
    """Writes a stream of chunks to a file.

    Each chunk is written as it arrives, on the event loop: a write into the page cache
    takes microseconds, and writing a chunk while it is still in the CPU's cache is what
    makes the transfer cheap. Handing chunks to a worker thread instead (writev of 4 MiB
    batches of them, or copies into reused buffers) cost 1.5 to 3 times the server CPU of
    the whole transfer in bench/datastore.py, and the throughput with it.

    A disk that does block (writeback throttling, a network filesystem) must not stall
    every other request: once one write of this stream has taken ``slow_write_s`` or
    more, the rest of the stream goes through a worker thread, copied into one of two
    reused buffers of ``BUFFER_BYTES`` while the other one is being written.
    """

    def __init__(self, target: Path, *, offset: int | None = None,
                 slow_write_s: float = SLOW_WRITE_S) -> None:
        self.target = target
        self.offset = offset
        self.size = 0
        self.slow_write_s = slow_write_s
        self.threaded = False
        self._buffers: list[bytearray] = []
        self._current = 0
        self._fill = 0
        self._pending: asyncio.Future[None] | None = None
        self._fd: int | None = None

    async def open(self) -> BlobWriter:
        flags = os.O_WRONLY | os.O_CREAT | (0 if self.offset is not None else os.O_TRUNC)
        self._fd = await anyio.to_thread.run_sync(os.open, self.target, flags, 0o600)
        return self

    async def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        view = memoryview(chunk)
        self.size += len(view)
        if not self.threaded:
            assert self._fd is not None
            started = time.monotonic()
            _write_all(self._fd, view, self.offset)
            if self.offset is not None:
                self.offset += len(view)
            if time.monotonic() - started >= self.slow_write_s:
                self.threaded = True
                self._buffers = [bytearray(BUFFER_BYTES), bytearray(BUFFER_BYTES)]
            return
        while view:
            buffer = self._buffers[self._current]
            taken = min(len(view), BUFFER_BYTES - self._fill)
            buffer[self._fill:self._fill + taken] = view[:taken]
            self._fill += taken
            view = view[taken:]
            if self._fill == BUFFER_BYTES:
                await self._flush()

    async def _flush(self) -> None:
        # the write in flight is the other buffer's: once it is done, that one is free
        await self._wait_pending()
        if not self._fill:
            return
        fd = self._fd
        assert fd is not None
        data = memoryview(self._buffers[self._current])[:self._fill]
        position = self.offset
        if position is not None:
            self.offset = position + self._fill
        self._current ^= 1
        self._fill = 0
        self._pending = asyncio.ensure_future(
            anyio.to_thread.run_sync(_write_all, fd, data, position)
        )

    async def _wait_pending(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            await pending

    async def close(self) -> None:
        try:
            await self._flush()
            await self._wait_pending()
        finally:
            self._close_fd()

    def abort(self) -> None:
        pending, self._pending = self._pending, None
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if pending is None or pending.done():
            os.close(fd)
            return

        # The thread may still be writing: closing now could let the fd number be reused
        # by another file before the write lands. Close once the write has finished.
        def close_after(future: asyncio.Future[None]) -> None:
            if not future.cancelled():
                future.exception()  # consumed: the upload is being abandoned anyway
            os.close(fd)

        pending.add_done_callback(close_after)

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _write_all(fd: int, data: memoryview, position: int | None) -> None:
    # a short write leaves the rest to write
    while data:
        if position is None:
            written = os.write(fd, data)
        else:
            written = os.pwrite(fd, data, position)
            position += written
        data = data[written:]
