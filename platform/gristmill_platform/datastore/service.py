"""Data store use cases behind the API routes (backend-neutral)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gristmill_platform.auth.principal import Principal
from gristmill_platform.datastore.backend import (
    CompletedPart,
    DataStoreBackend,
    ListPage,
    ObjectInfo,
    PresignedPart,
    PresignedPost,
)
from gristmill_platform.datastore.paths import validate_user_path
from gristmill_platform.errors import NotFound


class NoSuchKey(NotFound):
    name = "NoSuchKey"


class DataStoreService:
    def __init__(self, backend: DataStoreBackend, *, max_path_length: int, page_size: int) -> None:
        self.backend = backend
        self.max_path_length = max_path_length
        self.page_size = page_size

    def _path(self, path: str) -> str:
        return validate_user_path(path, max_length=self.max_path_length)

    async def _existing(self, path: str) -> ObjectInfo:
        info = await self.backend.head(self._path(path))
        if info is None:
            raise NoSuchKey(f"Object {path!r} not found in the data store",
                            additional_data={"path": path})
        return info

    async def presign_upload(self, path: str) -> PresignedPost:
        return await self.backend.presign_upload(self._path(path))

    async def presign_download(self, path: str) -> str:
        await self._existing(path)
        return await self.backend.presign_download(path)

    async def information(self, path: str) -> ObjectInfo:
        return await self._existing(path)

    def folder_prefix(self, folder_path: str | None) -> str:
        """The prefix of the objects in a folder (`a/b` or `a/b/` → `a/b/`; none: every
        object). The folder is checked as an object path is: same refusals, same messages."""
        folder = (folder_path or "").rstrip("/")
        return self._path(folder) + "/" if folder else ""

    async def list_page(self, continuation_token: str | None, *, prefix: str = "") -> ListPage:
        # the backend filters (an index range, S3's Prefix): a folder of a large store
        # costs its own objects, not the whole store's
        return await self.backend.list(
            continuation_token=continuation_token, page_size=self.page_size, prefix=prefix
        )

    async def list_all(self, *, prefix: str = "") -> list[ObjectInfo]:
        items: list[ObjectInfo] = []
        token: str | None = None
        while True:
            page = await self.list_page(token, prefix=prefix)
            items.extend(page.items)
            token = page.continuation_token
            if not token:
                return items

    async def delete(self, path: str) -> str:
        if not await self.backend.delete(self._path(path)):
            raise NoSuchKey(f"Object {path!r} not found in the data store",
                            additional_data={"path": path})
        return path

    async def create_multipart(self, path: str, principal: Principal) -> dict[str, Any]:
        return await self.backend.create_multipart(self._path(path), created_by=principal.user_id)

    async def presign_part(self, path: str, config: Any, *, part_number: int, chunk_size: int,
                           total_size: int | None) -> PresignedPart:
        return await self.backend.presign_part(
            self._path(path), config, part_number=part_number, chunk_size=chunk_size,
            total_size=total_size,
        )

    async def complete_multipart(self, path: str, config: Any,
                                 parts: Sequence[CompletedPart]) -> ObjectInfo:
        return await self.backend.complete_multipart(self._path(path), config, parts)
