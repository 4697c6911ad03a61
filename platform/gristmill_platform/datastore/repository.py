"""Queries on the local data store's index."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gristmill_platform.datastore.paths import INTERNAL_PREFIX
from gristmill_platform.db.models.datastore import DataStoreObject, MultipartPart, MultipartUpload


class DataStoreRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, path: str) -> DataStoreObject | None:
        return await self.session.get(DataStoreObject, path)

    async def page_after(self, after: str | None, limit: int, *, prefix: str = ""
                         ) -> Sequence[DataStoreObject]:
        query = (
            select(DataStoreObject)
            .where(~DataStoreObject.path.startswith(INTERNAL_PREFIX + "/", autoescape=True))
            .order_by(DataStoreObject.path)
            .limit(limit)
        )
        if after is not None:
            query = query.where(DataStoreObject.path > after)
        if prefix:
            # exact and case-sensitive on both databases (SQLite's LIKE ignores case)
            query = query.where(func.substr(DataStoreObject.path, 1, len(prefix)) == prefix)
        result = await self.session.execute(query)
        return result.scalars().all()

    async def add(self, row: DataStoreObject) -> None:
        self.session.add(row)
        await self.session.flush()

    async def remove(self, row: DataStoreObject) -> None:
        await self.session.delete(row)
        await self.session.flush()

    async def get_upload(self, upload_id: str) -> MultipartUpload | None:
        return await self.session.get(MultipartUpload, upload_id)

    async def add_upload(self, upload: MultipartUpload) -> None:
        self.session.add(upload)
        await self.session.flush()

    async def get_part(self, upload_id: str, number: int) -> MultipartPart | None:
        return await self.session.get(MultipartPart, (upload_id, number))

    async def add_part(self, part: MultipartPart) -> None:
        self.session.add(part)
        await self.session.flush()

    async def parts(self, upload_id: str) -> Sequence[MultipartPart]:
        result = await self.session.execute(
            select(MultipartPart).where(MultipartPart.upload_id == upload_id)
            .order_by(MultipartPart.number)
        )
        return result.scalars().all()

    async def remove_upload(self, upload: MultipartUpload) -> None:
        await self.session.execute(
            delete(MultipartPart).where(MultipartPart.upload_id == upload.id)
        )
        await self.session.delete(upload)
        await self.session.flush()

    async def uploads_before(self, cutoff: datetime) -> Sequence[MultipartUpload]:
        result = await self.session.execute(
            select(MultipartUpload).where(MultipartUpload.created_at < cutoff))
        return result.scalars().all()

    async def referenced_blobs(self) -> set[str]:
        """Every blob an object or a multipart upload points at."""
        objects = await self.session.execute(select(DataStoreObject.blob))
        uploads = await self.session.execute(select(MultipartUpload.blob))
        return {*objects.scalars().all(), *uploads.scalars().all()}
