"""What execution routes and the endpoint gateway answer alike: a stored value's bytes,
an execution that failed."""

from __future__ import annotations

from fastapi import Response

from gristmill_platform.datastore.local import LocalDataStore
from gristmill_platform.datastore.streaming import blob_response
from gristmill_platform.errors import AppError
from gristmill_platform.executions.service import ExecutionService


class ExecutionFailed(AppError):
    status_code = 500
    name = "ExecutionFailed"


async def stream_object(service: ExecutionService, path: str, filename: str) -> Response:
    backend = service.datastore
    if not isinstance(backend, LocalDataStore):
        url = await backend.presign_download(path)
        return Response(status_code=307, headers={"Location": url})
    info, blob = await backend.blob_path(path)
    return await blob_response(info, blob, filename)
