"""Keeping the local data store's disk to what its index knows (run by the control
service: at start-up, then every few minutes).

- A multipart upload never completed holds its blob (the parts written in place) for
  ever; after ``MULTIPART_TTL`` it is removed, parts and blob.
- A blob no row points at is left by a crash between writing it and committing its row
  (blobs.py); at start-up such blobs older than ``ORPHAN_GRACE_S`` are removed (younger
  ones may belong to an upload another request is still writing)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from datetime import datetime, timedelta
from pathlib import Path

from gristmill_platform.datastore.blobs import BlobStore
from gristmill_platform.datastore.repository import DataStoreRepository
from gristmill_platform.db.hooks import on_commit
from gristmill_platform.db.transactions import Transactions
from gristmill_platform.db.types import utcnow

log = logging.getLogger("gristmill.datastore")

MULTIPART_TTL = timedelta(hours=24)
ORPHAN_GRACE_S = 600.0


async def expire_uploads(repository: DataStoreRepository, blobs: BlobStore, now: datetime,
                         ttl: timedelta = MULTIPART_TTL) -> int:
    """Remove multipart uploads started before now - ttl; their blobs go once committed."""
    expired = await repository.uploads_before(now - ttl)
    for upload in expired:
        blob = upload.blob
        await repository.remove_upload(upload)
        on_commit(repository.session, functools.partial(blobs.remove, blob))
    return len(expired)


def unreferenced(blobs: BlobStore, referenced: set[str], older_than: float) -> list[Path]:
    """Blob files no row points at, last written before ``older_than`` (epoch seconds)."""
    found: list[Path] = []
    if not blobs.blobs.is_dir():
        return found
    for fan in blobs.blobs.iterdir():
        if not fan.is_dir():
            continue
        for blob in fan.iterdir():
            try:
                stale = blob.stat().st_mtime < older_than
            except FileNotFoundError:
                continue
            if stale and blob.name not in referenced:
                found.append(blob)
    return found


async def sweep_orphans(repository: DataStoreRepository, blobs: BlobStore,
                        grace_s: float = ORPHAN_GRACE_S) -> int:
    referenced = await repository.referenced_blobs()
    orphans = await asyncio.to_thread(unreferenced, blobs, referenced, time.time() - grace_s)
    for path in orphans:
        await asyncio.to_thread(path.unlink, missing_ok=True)
    if orphans:
        log.info("removed %d orphaned data store blob(s)", len(orphans))
    return len(orphans)


SWEEP_EVERY_S = 600.0


class DataStoreHousekeeping:
    """The local data store's sweeps, for the app's lifetime: orphans and expired uploads
    at start-up, expired uploads every SWEEP_EVERY_S after."""

    def __init__(self, transactions: Transactions, blobs: BlobStore) -> None:
        self.transactions = transactions
        self.blobs = blobs
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            async with self.transactions() as session:
                repository = DataStoreRepository(session)
                await sweep_orphans(repository, self.blobs)
                await expire_uploads(repository, self.blobs, utcnow())
        except Exception:
            log.exception("data store housekeeping failed at start-up")
        self._task = asyncio.get_running_loop().create_task(self._forever())

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY_S)
            try:
                async with self.transactions() as session:
                    expired = await expire_uploads(DataStoreRepository(session), self.blobs,
                                                   utcnow())
                if expired:
                    log.info("removed %d multipart upload(s) never completed", expired)
            except Exception:
                log.exception("data store housekeeping failed")

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
