"""Blob files of the local data store.

Bytes are written to a fresh blob file and only become an object when the index row
pointing at them commits, so readers never see a half-written object and an interrupted
upload leaves only an unreferenced blob (removed at once on failure)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from pathlib import Path

import anyio

WRITE_BATCH = 4 * 1024 * 1024
IOV_MAX = 512


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
    """Writes a stream of chunks to a file off the event loop.

    Chunks are handed to a worker thread in batches of about 4 MiB with writev (no copy
    into a staging buffer), and the next batch is received from the network while the
    previous one is being written: receiving and writing overlap instead of taking turns.
    """

    def __init__(self, target: Path, *, offset: int | None = None) -> None:
        self.target = target
        self.offset = offset
        self.size = 0
        self._batch: list[bytes] = []
        self._batch_bytes = 0
        self._pending: asyncio.Future[None] | None = None
        self._fd: int | None = None

    async def open(self) -> BlobWriter:
        flags = os.O_WRONLY | os.O_CREAT | (0 if self.offset is not None else os.O_TRUNC)
        self._fd = await anyio.to_thread.run_sync(os.open, self.target, flags, 0o600)
        return self

    async def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        self._batch.append(chunk)
        self._batch_bytes += len(chunk)
        self.size += len(chunk)
        if self._batch_bytes >= WRITE_BATCH:
            await self._flush()

    async def _flush(self) -> None:
        await self._wait_pending()
        if not self._batch:
            return
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        fd = self._fd
        assert fd is not None
        position = self.offset
        if position is not None:
            self.offset = position + sum(len(b) for b in batch)
        self._pending = asyncio.ensure_future(
            anyio.to_thread.run_sync(_writev_all, fd, batch, position)
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


def _writev_all(fd: int, buffers: list[bytes], position: int | None) -> None:
    views = [memoryview(b) for b in buffers]
    while views:
        chunk = views[:IOV_MAX]
        if position is None:
            written = os.writev(fd, chunk)
        else:
            written = os.pwritev(fd, chunk, position)
            position += written
        # drop what was written; a short write leaves the rest of the first view
        while written and views:
            if written >= len(views[0]):
                written -= len(views[0])
                views.pop(0)
            else:
                views[0] = views[0][written:]
                written = 0
