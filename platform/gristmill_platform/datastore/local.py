"""The embedded data store: blobs on the local disk, an index in the database, URLs
signed by the control service and served by its presigned routes."""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio

from gristmill_platform.datastore.backend import (
    CompletedPart,
    ListPage,
    ObjectInfo,
    PresignedPart,
    PresignedPost,
)
from gristmill_platform.datastore.blobs import BlobStore
from gristmill_platform.datastore.paths import validate_object_path
from gristmill_platform.datastore.repository import DataStoreRepository
from gristmill_platform.datastore.signing import UrlSigner
from gristmill_platform.db.hooks import on_commit, on_rollback
from gristmill_platform.db.models.datastore import DataStoreObject, MultipartPart, MultipartUpload
from gristmill_platform.db.types import utcnow
from gristmill_platform.errors import AppError, BadRequest, NotFound

PRESIGNED_PREFIX = "/presigned/data-store"
MAX_PARTS = 10_000
MAX_PART_SIZE = 5 * 1024**3


class NoSuchUpload(NotFound):
    name = "NoSuchUpload"


class InvalidPart(BadRequest):
    name = "InvalidPart"


def encode_continuation(path: str) -> str:
    return base64.urlsafe_b64encode(path.encode()).decode()


def decode_continuation(token: str) -> str:
    try:
        path = base64.b64decode(token.encode(), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise BadRequest("Invalid continuation token: pass back the one the last page gave"
                         ) from exc
    if not path:
        raise BadRequest("Invalid continuation token: pass back the one the last page gave")
    return path


def _info(row: DataStoreObject) -> ObjectInfo:
    return ObjectInfo(path=row.path, size=row.size, last_modified=row.last_modified)


def strip_etag(value: str | None) -> str | None:
    return value.strip().strip('"') if value is not None else None


class LocalDataStore:
    def __init__(
        self,
        *,
        blobs: BlobStore,
        repository: DataStoreRepository,
        signer: UrlSigner,
        public_url: str,
        ttl_s: int,
        max_object_bytes: int,
        max_path_length: int,
    ) -> None:
        self.blobs = blobs
        self.repository = repository
        self.signer = signer
        self.public_url = public_url
        self.ttl_s = ttl_s
        self.max_object_bytes = max_object_bytes
        self.max_path_length = max_path_length

    @property
    def session(self) -> Any:
        return self.repository.session

    def _url(self, route: str, params: dict[str, str]) -> str:
        return f"{self.public_url}{PRESIGNED_PREFIX}/{route}?{urlencode(params)}"

    def check_path(self, path: str) -> str:
        return validate_object_path(path, max_length=self.max_path_length)

    # -- signed URLs -------------------------------------------------------------------------

    async def presign_upload(self, path: str) -> PresignedPost:
        fields = self.signer.post_policy(
            key=self.check_path(path), max_size=self.max_object_bytes, ttl_s=self.ttl_s
        )
        return PresignedPost(url=f"{self.public_url}{PRESIGNED_PREFIX}/upload", fields=fields)

    async def presign_download(self, path: str) -> str:
        params = self.signer.sign("get", {"path": self.check_path(path)}, ttl_s=self.ttl_s)
        return self._url("object", params)

    # -- index -------------------------------------------------------------------------------

    async def head(self, path: str) -> ObjectInfo | None:
        row = await self.repository.get(self.check_path(path))
        return _info(row) if row else None

    async def list(self, *, continuation_token: str | None, page_size: int,
                   prefix: str = "") -> ListPage:
        after = decode_continuation(continuation_token) if continuation_token else None
        rows = list(await self.repository.page_after(after, page_size + 1, prefix=prefix))
        more = len(rows) > page_size
        rows = rows[:page_size]
        token = encode_continuation(rows[-1].path) if more and rows else None
        return ListPage(items=[_info(r) for r in rows], continuation_token=token)

    async def delete(self, path: str) -> bool:
        row = await self.repository.get(self.check_path(path))
        if row is None:
            return False
        blob = row.blob
        await self.repository.remove(row)
        on_commit(self.session, lambda: self.blobs.remove(blob))
        return True

    async def commit_blob(self, path: str, blob: str, size: int) -> ObjectInfo:
        """Make a fully written blob the object at ``path`` (replacing any previous one)."""
        on_rollback(self.session, lambda: self.blobs.remove(blob))
        row = await self.repository.get(path)
        now = utcnow()
        if row is None:
            row = DataStoreObject(path=path, blob=blob, size=size, last_modified=now)
            await self.repository.add(row)
        else:
            old_blob = row.blob
            row.blob, row.size, row.last_modified = blob, size, now
            await self.repository.session.flush()
            on_commit(self.session, lambda: self.blobs.remove(old_blob))
        return _info(row)

    async def blob_path(self, path: str) -> tuple[ObjectInfo, Path]:
        row = await self.repository.get(self.check_path(path))
        if row is None:
            raise NotFound(f"Object {path!r} not found in the data store", name="NoSuchKey")
        return _info(row), self.blobs.path_of(row.blob)

    # -- multipart ---------------------------------------------------------------------------

    async def create_multipart(self, path: str, *, created_by: str | None) -> dict[str, Any]:
        self.check_path(path)
        upload = MultipartUpload(
            id=secrets.token_hex(16), path=path, blob=self.blobs.new_name(),
            created_by=created_by, created_at=utcnow(),
        )
        await self.repository.add_upload(upload)
        return {"upload_id": upload.id, "key": path}

    async def _upload_for(self, path: str, config: Any) -> MultipartUpload:
        if not isinstance(config, dict) or not isinstance(config.get("upload_id"), str):
            raise BadRequest(
                "multipart_upload_configuration must be the object returned when the "
                "upload was created"
            )
        upload = await self.repository.get_upload(config["upload_id"])
        if upload is None or upload.path != path:
            raise NoSuchUpload(f"No multipart upload {config['upload_id']!r} for {path!r}")
        return upload

    async def presign_part(
        self, path: str, config: dict[str, Any], *, part_number: int, chunk_size: int,
        total_size: int | None,
    ) -> PresignedPart:
        self.check_path(path)
        upload = await self._upload_for(path, config)
        if not 1 <= part_number <= MAX_PARTS:
            raise InvalidPart(f"part_number must be between 1 and {MAX_PARTS}")
        if not 1 <= chunk_size <= MAX_PART_SIZE:
            raise InvalidPart(f"chunk_size must be between 1 and {MAX_PART_SIZE} bytes")
        if upload.chunk_size is not None and upload.chunk_size != chunk_size:
            raise InvalidPart(
                f"chunk_size {chunk_size} differs from this upload's {upload.chunk_size}"
            )
        if upload.chunk_size is None:
            upload.chunk_size = chunk_size
            await self.repository.session.flush()
        limit = chunk_size * (part_number - 1) + chunk_size
        if limit > self.max_object_bytes:
            raise AppError(
                f"Object would exceed the data store's limit of {self.max_object_bytes} bytes",
                status_code=400, name="EntityTooLarge",
            )
        params = self.signer.sign(
            "put-part",
            {"upload_id": upload.id, "part_number": str(part_number),
             "chunk_size": str(chunk_size)},
            ttl_s=self.ttl_s,
        )
        return PresignedPart(url=self._url("part", params), headers={})

    async def start_part(self, upload_id: str, part_number: int) -> tuple[MultipartUpload, Path]:
        upload = await self.repository.get_upload(upload_id)
        if upload is None:
            raise NoSuchUpload(f"No multipart upload {upload_id!r}")
        return upload, self.blobs.prepare(upload.blob)

    async def record_part(self, upload: MultipartUpload, number: int, size: int) -> str:
        etag = secrets.token_hex(16)
        part = await self.repository.get_part(upload.id, number)
        if part is None:
            await self.repository.add_part(MultipartPart(
                upload_id=upload.id, number=number, size=size, etag=etag, created_at=utcnow()))
        else:
            part.size, part.etag = size, etag
            await self.repository.session.flush()
        return etag

    async def complete_multipart(
        self, path: str, config: dict[str, Any], parts: Sequence[CompletedPart]
    ) -> ObjectInfo:
        self.check_path(path)
        upload = await self._upload_for(path, config)
        if not parts:
            raise InvalidPart("No part listed: upload at least one part before ending")
        numbers = [p.number for p in parts]
        if numbers != list(range(1, len(parts) + 1)):
            raise InvalidPart(
                "Parts must be listed in order, numbered from 1 with no gap "
                f"(got {numbers[:10]}{'...' if len(numbers) > 10 else ''})",
                name="InvalidPartOrder",
            )
        stored = {p.number: p for p in await self.repository.parts(upload.id)}
        chunk_size = upload.chunk_size or 0
        total = 0
        for index, listed in enumerate(parts):
            part = stored.get(listed.number)
            if part is None:
                raise InvalidPart(f"Part {listed.number} was never uploaded (or its PUT failed)")
            etag = strip_etag(listed.etag)
            if etag is not None and etag != part.etag:
                raise InvalidPart(f"Part {listed.number}'s ETag does not match the upload")
            is_last = index == len(parts) - 1
            if not is_last and part.size != chunk_size:
                raise InvalidPart(
                    f"Part {listed.number} has {part.size} bytes; every part but the last "
                    f"must have chunk_size ({chunk_size}) bytes"
                )
            total += part.size
        blob_path = self.blobs.path_of(upload.blob)
        # a retried part may have left bytes past the end; the object is exactly `total`
        await anyio.to_thread.run_sync(os.truncate, blob_path, total)
        blob = upload.blob
        await self.repository.remove_upload(upload)
        return await self.commit_blob(path, blob, total)

    # -- executions --------------------------------------------------------------------------

    async def download_to(self, path: str, destination: Path) -> ObjectInfo:
        info, source = await self.blob_path(path)
        await anyio.to_thread.run_sync(shutil.copyfile, source, destination)
        return info

    async def upload_from(self, source: Path, path: str) -> ObjectInfo:
        self.check_path(path)
        blob = self.blobs.new_name()
        target = self.blobs.prepare(blob)
        await anyio.to_thread.run_sync(shutil.copyfile, source, target)
        return await self.commit_blob(path, blob, target.stat().st_size)
