"""The local data store's housekeeping (datastore/housekeeping.py) on a real SQLite index
and real blob files: expired multipart uploads go with their blob, orphaned blobs older
than the grace period go, everything referenced or recent stays."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta
from pathlib import Path

from gristmill_platform.datastore.blobs import BlobStore
from gristmill_platform.datastore.housekeeping import expire_uploads, sweep_orphans
from gristmill_platform.datastore.repository import DataStoreRepository
from gristmill_platform.db import migrate
from gristmill_platform.db.engine import create_engine, create_session_factory
from gristmill_platform.db.hooks import run_effects
from gristmill_platform.db.models.datastore import (
    DataStoreObject,
    MultipartPart,
    MultipartUpload,
)
from gristmill_platform.db.types import utcnow


def blob(blobs: BlobStore, name: str, age_s: float = 0.0) -> Path:
    path = blobs.prepare(name)
    path.write_bytes(b"x")
    if age_s:
        past = time.time() - age_s
        os.utime(path, (past, past))
    return path


def test_expired_uploads_and_orphans_are_removed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    migrate.upgrade(url)
    blobs = BlobStore(tmp_path / "ds")
    blobs.ensure()
    now = utcnow()
    kept_object = blob(blobs, "aa01", age_s=3600)
    old_upload = blob(blobs, "bb01", age_s=3600)
    new_upload = blob(blobs, "bb02", age_s=3600)
    old_orphan = blob(blobs, "cc01", age_s=3600)
    young_orphan = blob(blobs, "cc02")

    async def scenario() -> tuple[int, int]:
        engine = create_engine(url)
        sessions = create_session_factory(engine)
        try:
            async with sessions() as session, session.begin():
                session.add_all([
                    DataStoreObject(path="kept", blob="aa01", size=1, last_modified=now),
                    MultipartUpload(id="old", path="o", blob="bb01",
                                    created_at=now - timedelta(hours=25)),
                    MultipartUpload(id="new", path="n", blob="bb02",
                                    created_at=now - timedelta(hours=1)),
                ])
                await session.flush()
                session.add(MultipartPart(upload_id="old", number=1, size=1, etag="e",
                                          created_at=now))
            async with sessions() as session:
                async with session.begin():
                    expired = await expire_uploads(DataStoreRepository(session), blobs, now)
                run_effects(session, committed=True)
            async with sessions() as session, session.begin():
                swept = await sweep_orphans(DataStoreRepository(session), blobs)
                repository = DataStoreRepository(session)
                assert await repository.get_upload("old") is None
                assert await repository.parts("old") == []
                assert await repository.get_upload("new") is not None
            return expired, swept
        finally:
            await engine.dispose()

    expired, swept = asyncio.run(scenario())
    assert (expired, swept) == (1, 1)
    assert not old_upload.exists() and not old_orphan.exists()
    assert kept_object.exists() and new_upload.exists() and young_orphan.exists()
