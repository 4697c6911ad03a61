"""The URLs the local data store signs: upload (POST policy), multipart part (PUT) and
download (GET). No Authorization: the signature is the credential. Errors are S3-style
XML. The database is touched only in short transactions around the transfer, so a slow
or large transfer holds no connection."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from gristmill_platform.datastore.blobs import BlobWriter
from gristmill_platform.datastore.formstream import FormError, read_upload_form
from gristmill_platform.datastore.local import PRESIGNED_PREFIX, LocalDataStore
from gristmill_platform.datastore.s3errors import S3StyleError
from gristmill_platform.datastore.signing import SignatureError
from gristmill_platform.datastore.streaming import blob_response
from gristmill_platform.deps import AppStateDep, transaction
from gristmill_platform.errors import AppError
from gristmill_platform.state import AppState
from gristmill_platform.telemetry.metrics import DATASTORE_ERRORS, DATASTORE_IN

router = APIRouter(prefix=PRESIGNED_PREFIX, include_in_schema=False)



def _store(state: AppState, session: object) -> LocalDataStore:
    store = state.datastore(session)  # type: ignore[arg-type]
    if not isinstance(store, LocalDataStore):
        raise S3StyleError(404, "NotImplemented", "This environment's data store is not local")
    return store


def _verify(state: AppState, op: str, request: Request) -> dict[str, str]:
    params = dict(request.query_params)
    try:
        state.signer.verify(op, params)
    except SignatureError as exc:
        raise S3StyleError(403, exc.code, str(exc)) from exc
    return params


def _as_s3(exc: AppError) -> S3StyleError:
    return S3StyleError(exc.status_code, exc.name, exc.message)




@router.post("/upload", status_code=204)
async def upload(request: Request, state: AppStateDep) -> Response:
    async with transaction(state) as session:
        blobs = _store(state, session).blobs
    blob = blobs.new_name()
    target = blobs.prepare(blob)
    writer = BlobWriter(target)
    key: str | None = None
    max_size = 0

    async def on_file_start(fields: dict[str, str]) -> None:
        nonlocal key, max_size
        try:
            key, max_size = state.signer.verify_post_policy(fields)
            async with transaction(state) as session:
                _store(state, session).check_path(key)
        except SignatureError as exc:
            raise S3StyleError(403, exc.code, str(exc)) from exc
        except AppError as exc:
            raise _as_s3(exc) from exc
        await writer.open()

    async def on_file_chunk(data: bytes) -> None:
        await writer.write(data)
        if writer.size > max_size:
            raise S3StyleError(400, "EntityTooLarge",
                               f"The object exceeds the maximum of {max_size} bytes")

    try:
        await read_upload_form(
            request.headers.get("content-type", ""), request.stream(),
            file_field="file", on_file_start=on_file_start, on_file_chunk=on_file_chunk,
        )
        await writer.close()
        assert key is not None
        async with transaction(state) as session:
            await _store(state, session).commit_blob(key, blob, writer.size)
    except FormError as exc:
        writer.abort()
        blobs.remove(blob)
        raise S3StyleError(400, exc.code, str(exc)) from exc
    except BaseException as exc:
        # an interrupted or refused upload leaves no object and no blob behind
        writer.abort()
        blobs.remove(blob)
        if isinstance(exc, OSError):  # the disk's fault (full, failing), not the caller's
            DATASTORE_ERRORS.labels("upload").inc()
        raise
    DATASTORE_IN.inc(writer.size)
    return Response(status_code=204)


@router.put("/part")
async def put_part(request: Request, state: AppStateDep) -> Response:
    params = _verify(state, "put-part", request)
    number, chunk_size = int(params["part_number"]), int(params["chunk_size"])
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > chunk_size:
        raise S3StyleError(400, "EntityTooLarge",
                           f"A part may hold at most chunk_size ({chunk_size}) bytes")
    try:
        async with transaction(state) as session:
            upload, target = await _store(state, session).start_part(params["upload_id"], number)
    except AppError as exc:
        raise _as_s3(exc) from exc
    writer = await BlobWriter(target, offset=(number - 1) * chunk_size).open()
    try:
        async for chunk in request.stream():
            await writer.write(chunk)
            if writer.size > chunk_size:
                raise S3StyleError(400, "EntityTooLarge",
                                   f"A part may hold at most chunk_size ({chunk_size}) bytes")
        await writer.close()
    except BaseException as exc:
        writer.abort()
        if isinstance(exc, OSError):
            DATASTORE_ERRORS.labels("upload_part").inc()
        raise
    try:
        async with transaction(state) as session:
            etag = await _store(state, session).record_part(upload, number, writer.size)
    except AppError as exc:
        raise _as_s3(exc) from exc
    DATASTORE_IN.inc(writer.size)
    return Response(status_code=200, headers={"ETag": f'"{etag}"'})


@router.get("/object")
async def download(request: Request, state: AppStateDep) -> StreamingResponse:
    params = _verify(state, "get", request)
    try:
        async with transaction(state) as session:
            info, path = await _store(state, session).blob_path(params["path"])
    except AppError as exc:
        raise S3StyleError(404, "NoSuchKey", exc.message, Key=params["path"]) from exc
    return await blob_response(info, path, params["path"].rsplit("/", 1)[-1] or "object")
