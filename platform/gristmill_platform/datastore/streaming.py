"""Streaming a local blob to a client: one implementation for signed downloads and for
execution files."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
from fastapi.responses import StreamingResponse

from gristmill_platform.datastore.backend import ObjectInfo
from gristmill_platform.http.dates import http_date
from gristmill_platform.telemetry.metrics import DATASTORE_ERRORS, DATASTORE_OUT

READ_CHUNK = 2 * 1024 * 1024


def safe_filename(name: str, fallback: str = "file") -> str:
    """A Content-Disposition filename: printable ASCII without quotes or backslashes."""
    return "".join(c for c in name if 32 <= ord(c) < 127 and c not in '"\\') or fallback


async def blob_response(info: ObjectInfo, blob: Path, filename: str) -> StreamingResponse:
    # Open now: a concurrent replacement may unlink the blob, and an open file survives that.
    fd = await anyio.to_thread.run_sync(os.open, blob, os.O_RDONLY)

    async def body() -> AsyncIterator[bytes]:
        # read the next chunk while the current one is being sent
        upcoming = asyncio.ensure_future(anyio.to_thread.run_sync(os.read, fd, READ_CHUNK))
        try:
            while chunk := await upcoming:
                upcoming = asyncio.ensure_future(
                    anyio.to_thread.run_sync(os.read, fd, READ_CHUNK))
                DATASTORE_OUT.inc(len(chunk))
                yield chunk
        except OSError:
            DATASTORE_ERRORS.labels("download").inc()
            raise
        finally:
            if not upcoming.done():
                upcoming.cancel()
                with contextlib.suppress(BaseException):
                    await upcoming
            os.close(fd)

    return StreamingResponse(body(), media_type="application/octet-stream", headers={
        "Content-Length": str(info.size),
        "Content-Disposition": f'attachment; filename="{safe_filename(filename)}"',
        "Last-Modified": http_date(info.last_modified),
    })
