"""Keeping the local data store's disk to what its index knows (run by the control
service: at start-up, then every few minutes).

- A multipart upload never completed holds its blob (the parts written in place) for
  ever; after ``MULTIPART_TTL`` it is removed, parts and blob.
- A blob no row points at is left by a crash between writing it and committing its row
  (blobs.py); at start-up such blobs older than ``ORPHAN_GRACE_S`` are removed (younger
  ones may belong to an upload another request is still writing)."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from datetime import datetime, timedelta
from pathlib import Path

from gristmill_platform.datastore.blobs import BlobStore
from gristmill_platform.datastore.repository import DataStoreRepository
from gristmill_platform.db.hooks import on_commit

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
