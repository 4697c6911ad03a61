"""Blob files of the local data store.

Bytes are written to a fresh blob file and only become an object when the index row
pointing at them commits, so readers never see a half-written object and an interrupted
upload leaves only an unreferenced blob (removed at once on failure)."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

import anyio

WRITE_BUFFER = 1024 * 1024


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
    """Buffers chunks and writes them off the event loop, 1 MiB at a time."""

    def __init__(self, target: Path, *, offset: int | None = None) -> None:
        self.target = target
        self.offset = offset
        self.size = 0
        self._buffer = bytearray()
        self._fd: int | None = None

    async def open(self) -> BlobWriter:
        flags = os.O_WRONLY | os.O_CREAT | (0 if self.offset is not None else os.O_TRUNC)
        self._fd = await anyio.to_thread.run_sync(os.open, self.target, flags, 0o600)
        return self

    async def write(self, chunk: bytes) -> None:
        self._buffer += chunk
        self.size += len(chunk)
        if len(self._buffer) >= WRITE_BUFFER:
            await self._flush()

    async def _flush(self) -> None:
        if not self._buffer:
            return
        data = bytes(self._buffer)
        self._buffer.clear()
        fd = self._fd
        assert fd is not None
        if self.offset is not None:
            position = self.offset
            self.offset += len(data)
            await anyio.to_thread.run_sync(_pwrite_all, fd, data, position)
        else:
            await anyio.to_thread.run_sync(_write_all, fd, data)

    async def close(self) -> None:
        try:
            await self._flush()
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _pwrite_all(fd: int, data: bytes, position: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, position)
        view = view[written:]
        position += written
