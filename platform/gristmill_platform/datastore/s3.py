"""The data store on an S3 bucket (or an S3-compatible store: MinIO, Ceph).

Users' bytes never pass through the control service: uploads go to an S3 POST policy,
downloads to presigned GETs, multipart parts to presigned UploadPart URLs. Object ``p`` is
the key ``<prefix>p``. S3 itself is the index (no database rows), so one instance, with
one thread-safe client, serves every request; boto3 blocks, so every call runs in a
worker thread (``s3calls.call``) and the event loop never waits on S3.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gristmill_platform.datastore.backend import (
    CompletedPart,
    ListPage,
    ObjectInfo,
    PresignedPart,
    PresignedPost,
)
from gristmill_platform.datastore.local import (
    MAX_PART_SIZE,
    MAX_PARTS,
    InvalidPart,
    NoSuchUpload,
    decode_continuation,
    encode_continuation,
    strip_etag,
)
from gristmill_platform.datastore.paths import (
    INTERNAL_PREFIX,
    InvalidPath,
    is_internal,
    validate_object_path,
)
from gristmill_platform.datastore.s3calls import S3CallError, call
from gristmill_platform.errors import AppError, BadRequest, NotFound

# S3 accepts at most 5 GiB through a POST form; larger objects go through multipart.
MAX_POST_BYTES = 5 * 1024**3
MISSING = ("404", "NoSuchKey", "NotFound")
# Every key under the internal prefix sorts before this one (our internal keys are ASCII),
# so a listing that reaches the internal range can jump over it in one request instead of
# paging through every step archive and execution file.
SKIP_INTERNAL = INTERNAL_PREFIX + "/\U0010ffff"


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


class S3DataStore:
    def __init__(
        self,
        *,
        client: Any,
        presign_client: Any,
        bucket: str,
        prefix: str = "",
        ttl_s: int,
        max_object_bytes: int,
        max_path_length: int,
        transfer_config: Any = None,
    ) -> None:
        self.client = client
        self.presign_client = presign_client
        self.bucket = bucket
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.max_object_bytes = max_object_bytes
        self.max_path_length = max_path_length
        self.transfer_config = transfer_config

    def key(self, path: str) -> str:
        return self.prefix + validate_object_path(path, max_length=self.max_path_length)

    def _info(self, key: str, size: int, last_modified: datetime) -> ObjectInfo:
        return ObjectInfo(path=key[len(self.prefix):], size=int(size),
                          last_modified=_utc(last_modified))

    # -- presigned URLs (signed for the public endpoint) ---------------------------------------

    async def presign_upload(self, path: str) -> PresignedPost:
        key = self.key(path)
        if "${filename}" in path:
            # S3 replaces this variable in a POST form's key by the uploaded file's name
            raise InvalidPath(f"Invalid object path {path!r}: '${{filename}}' cannot be used "
                              "in an S3 data store path")
        post = await call(
            self.presign_client.generate_presigned_post, Bucket=self.bucket, Key=key,
            Conditions=[["content-length-range", 0, min(self.max_object_bytes,
                                                         MAX_POST_BYTES)]],
            ExpiresIn=self.ttl_s,
        )
        return PresignedPost(url=post["url"], fields={k: str(v) for k, v in
                                                      post["fields"].items()})

    async def presign_download(self, path: str) -> str:
        url: str = await call(
            self.presign_client.generate_presigned_url, ClientMethod="get_object",
            # No response-content-disposition override: the key's last segment already
            # names the file, and with an override moto answers a missing key with a
            # non-S3 error body the clients cannot read (contract §0.5).
            Params={"Bucket": self.bucket, "Key": self.key(path)},
            ExpiresIn=self.ttl_s,
        )
        return url

    # -- objects ------------------------------------------------------------------------------

    async def head(self, path: str) -> ObjectInfo | None:
        key = self.key(path)
        try:
            answer = await call(self.client.head_object, Bucket=self.bucket, Key=key)
        except S3CallError as exc:
            if exc.code in MISSING:
                return None
            raise
        return self._info(key, answer["ContentLength"], answer["LastModified"])

    async def list(self, *, continuation_token: str | None, page_size: int,
                   prefix: str = "") -> ListPage:
        # The token is the path to start after (as with the local backend), not S3's opaque
        # token: that is what lets a page skip the internal range.
        start_after = decode_continuation(continuation_token) if continuation_token else None
        while True:
            request: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix + prefix,
                                       "MaxKeys": page_size}
            if start_after is not None:
                request["StartAfter"] = self.prefix + start_after
            answer = await call(self.client.list_objects_v2, **request)
            contents = answer.get("Contents") or []
            items = [self._info(o["Key"], o["Size"], o["LastModified"]) for o in contents]
            visible = [i for i in items if not is_internal(i.path)]
            if not answer.get("IsTruncated") or not contents:
                return ListPage(items=visible, continuation_token=None)
            last = items[-1].path
            # only ever move forward, so a client following tokens always reaches the end
            start_after = SKIP_INTERNAL if is_internal(last) and last < SKIP_INTERNAL else last
            if visible:  # a page may be short (internal keys were dropped), never empty
                return ListPage(items=visible,
                                continuation_token=encode_continuation(start_after))

    async def delete(self, path: str) -> bool:
        # S3's DeleteObject succeeds on missing keys; the API answers 404 for those.
        if await self.head(path) is None:
            return False
        await call(self.client.delete_object, Bucket=self.bucket, Key=self.key(path))
        return True

    # -- multipart ----------------------------------------------------------------------------

    async def create_multipart(self, path: str, *, created_by: str | None) -> dict[str, Any]:
        answer = await call(self.client.create_multipart_upload, Bucket=self.bucket,
                            Key=self.key(path))
        return {"upload_id": answer["UploadId"], "key": path}

    def _upload_id(self, path: str, config: Any) -> str:
        if not isinstance(config, dict) or not isinstance(config.get("upload_id"), str):
            raise BadRequest(
                "multipart_upload_configuration must be the object returned when the "
                "upload was created"
            )
        upload_id: str = config["upload_id"]
        if config.get("key", path) != path:
            raise NoSuchUpload(f"No multipart upload {upload_id!r} for {path!r}")
        return upload_id

    async def _stored_parts(self, path: str, upload_id: str, *, first_only: bool = False
                            ) -> dict[int, tuple[str, int]]:
        """{part number: (ETag, size)} of what S3 holds for this upload."""
        parts: dict[int, tuple[str, int]] = {}
        marker = 0
        while True:
            try:
                answer = await call(self.client.list_parts, Bucket=self.bucket,
                                    Key=self.key(path), UploadId=upload_id,
                                    PartNumberMarker=marker, MaxParts=1 if first_only else 1000)
            except S3CallError as exc:
                if exc.code == "NoSuchUpload":
                    raise NoSuchUpload(f"No multipart upload {upload_id!r} for {path!r}"
                                       ) from exc
                raise
            for part in answer.get("Parts") or []:
                parts[int(part["PartNumber"])] = (strip_etag(part["ETag"]) or "",
                                                  int(part["Size"]))
            if first_only or not answer.get("IsTruncated"):
                return parts
            marker = int(answer["NextPartNumberMarker"])

    async def presign_part(
        self, path: str, config: dict[str, Any], *, part_number: int, chunk_size: int,
        total_size: int | None,
    ) -> PresignedPart:
        key = self.key(path)
        upload_id = self._upload_id(path, config)
        if not 1 <= part_number <= MAX_PARTS:
            raise InvalidPart(f"part_number must be between 1 and {MAX_PARTS}")
        if not 1 <= chunk_size <= MAX_PART_SIZE:
            raise InvalidPart(f"chunk_size must be between 1 and {MAX_PART_SIZE} bytes")
        if chunk_size * part_number > self.max_object_bytes:
            raise AppError(
                f"Object would exceed the data store's limit of {self.max_object_bytes} bytes",
                status_code=400, name="EntityTooLarge",
            )
        # Checked here, not only at the end: the client never looks at its PUTs' status, so
        # an unknown upload must be refused while it can still tell the user.
        await self._stored_parts(path, upload_id, first_only=True)
        url: str = await call(
            self.presign_client.generate_presigned_url, ClientMethod="upload_part",
            Params={"Bucket": self.bucket, "Key": key, "UploadId": upload_id,
                    "PartNumber": part_number},
            ExpiresIn=self.ttl_s,
        )
        return PresignedPart(url=url, headers={})

    async def complete_multipart(
        self, path: str, config: dict[str, Any], parts: Sequence[CompletedPart]
    ) -> ObjectInfo:
        key = self.key(path)
        upload_id = self._upload_id(path, config)
        if not parts:
            raise InvalidPart("No part listed: upload at least one part before ending")
        numbers = [p.number for p in parts]
        if numbers != list(range(1, len(parts) + 1)):
            raise InvalidPart(
                "Parts must be listed in order, numbered from 1 with no gap "
                f"(got {numbers[:10]}{'...' if len(numbers) > 10 else ''})",
                name="InvalidPartOrder",
            )
        # Checked against S3's own list (the same messages as the local backend), and the
        # ETags sent to S3 are its own: the client leaves out those it did not receive.
        stored = await self._stored_parts(path, upload_id)
        for listed in parts:
            if listed.number not in stored:
                raise InvalidPart(f"Part {listed.number} was never uploaded (or its PUT failed)")
            etag = strip_etag(listed.etag)
            if etag is not None and etag != stored[listed.number][0]:
                raise InvalidPart(f"Part {listed.number}'s ETag does not match the upload")
        # A presigned part URL does not sign its length: S3 takes a part of any size, so
        # the chunk size and the object limit the URLs were given for are checked here,
        # as the local backend checks them as the parts arrive.
        sizes = [stored[n][1] for n in numbers]
        if sum(sizes) > self.max_object_bytes:
            raise AppError(
                f"Object would exceed the data store's limit of {self.max_object_bytes} bytes",
                status_code=400, name="EntityTooLarge",
            )
        chunk = sizes[0]
        odd = next((n for n, size in zip(numbers[:-1], sizes[:-1], strict=True)
                    if size != chunk), None)
        if odd is not None or sizes[-1] > chunk:
            shown = odd if odd is not None else numbers[-1]
            raise InvalidPart(f"Part {shown} holds {stored[shown][1]} bytes: every part but "
                              f"the last must hold the chunk size ({chunk} bytes), the last "
                              "at most that")
        try:
            await call(
                self.client.complete_multipart_upload, Bucket=self.bucket, Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": f'"{stored[n][0]}"'}
                                           for n in numbers]},
            )
        except S3CallError as exc:
            raise _multipart_error(exc, path, upload_id) from exc
        info = await self.head(path)
        if info is None:  # deleted by someone else between the two calls
            raise NotFound(f"Object {path!r} not found in the data store", name="NoSuchKey")
        return info

    # -- executions ---------------------------------------------------------------------------

    async def download_to(self, path: str, destination: Path) -> ObjectInfo:
        info = await self.head(path)
        if info is None:
            raise NotFound(f"Object {path!r} not found in the data store", name="NoSuchKey")
        # boto3's transfer manager: ranged GETs in parallel, streamed to the file
        await call(self.client.download_file, Bucket=self.bucket, Key=self.key(path),
                   Filename=str(destination), Config=self.transfer_config)
        return ObjectInfo(path=path, size=destination.stat().st_size,
                          last_modified=info.last_modified)

    async def upload_from(self, source: Path, path: str) -> ObjectInfo:
        await call(self.client.upload_file, Filename=str(source), Bucket=self.bucket,
                   Key=self.key(path), Config=self.transfer_config)
        info = await self.head(path)
        if info is None:
            raise NotFound(f"Object {path!r} vanished right after its upload", name="NoSuchKey")
        return info


def _multipart_error(exc: S3CallError, path: str, upload_id: str) -> AppError:
    """S3's refusals of CompleteMultipartUpload, named as the local backend names them."""
    extra = {"s3_code": exc.code}
    if exc.code == "NoSuchUpload":
        return NoSuchUpload(f"No multipart upload {upload_id!r} for {path!r}",
                            additional_data=extra)
    if exc.code == "InvalidPartOrder":
        return InvalidPart(f"Parts must be listed in order: {exc.s3_message}",
                           name="InvalidPartOrder", additional_data=extra)
    if exc.code == "InvalidPart":
        return InvalidPart(f"A part was not found or its ETag does not match: {exc.s3_message}",
                           additional_data=extra)
    if exc.code == "EntityTooSmall":
        return InvalidPart("Every part but the last must be at least 5 MiB on S3 "
                           f"({exc.s3_message})", additional_data=extra)
    return exc
