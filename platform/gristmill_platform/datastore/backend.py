"""The data store interface both backends (local directory, S3) implement."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True)
class ObjectInfo:
    path: str
    size: int
    last_modified: datetime


@dataclass(frozen=True)
class PresignedPost:
    url: str
    fields: dict[str, str]


@dataclass(frozen=True)
class PresignedPart:
    url: str
    headers: dict[str, str]


@dataclass(frozen=True)
class CompletedPart:
    number: int
    etag: str | None


@dataclass(frozen=True)
class ListPage:
    items: Sequence[ObjectInfo]
    continuation_token: str | None


class DataStoreBackend(Protocol):
    async def presign_upload(self, path: str) -> PresignedPost: ...

    async def presign_download(self, path: str) -> str: ...

    async def head(self, path: str) -> ObjectInfo | None: ...

    async def list(self, *, continuation_token: str | None, page_size: int,
                   prefix: str = "") -> ListPage:
        """A page of the objects whose path starts with ``prefix``, in path order."""
        ...

    async def delete(self, path: str) -> bool: ...

    async def create_multipart(self, path: str, *, created_by: str | None) -> dict[str, Any]: ...

    async def presign_part(
        self, path: str, config: dict[str, Any], *, part_number: int, chunk_size: int,
        total_size: int | None,
    ) -> PresignedPart: ...

    async def complete_multipart(
        self, path: str, config: dict[str, Any], parts: Sequence[CompletedPart]
    ) -> ObjectInfo: ...

    # For executions: move objects between the data store and a worker's files.
    async def download_to(self, path: str, destination: Path) -> ObjectInfo: ...

    async def upload_from(self, source: Path, path: str) -> ObjectInfo: ...


# The data store of one transaction: the local backend keeps its index in the session.
DataStoreFor = Callable[[AsyncSession], DataStoreBackend]
