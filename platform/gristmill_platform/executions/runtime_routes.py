"""Routes the runner calls with its execution token (docs/internals/runtime-protocol.md).
Start, logs and finish are runtime_calls.py's, which a forked local worker reaches over its
channel instead (local_channel.py)."""

from __future__ import annotations

import os
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response

from gristmill_platform.auth import policy
from gristmill_platform.deps import AppStateDep, PrincipalDep, transaction
from gristmill_platform.errors import BadRequest
from gristmill_platform.executions.responses import stream_object
from gristmill_platform.http.bodies import json_or_form

router = APIRouter(prefix="/runtime/executions/{execution_id}", tags=["runtime"],
                   include_in_schema=False)
MAX_OUTPUT_FILE = 5 * 1024**3


@router.post("/start")
async def start(execution_id: str, state: AppStateDep, principal: PrincipalDep
                ) -> dict[str, Any]:
    policy.require_runner(principal, execution_id)
    return await state.executions.calls.start(execution_id)


@router.get("/inputs/{name}")
async def input_file(execution_id: str, name: str, state: AppStateDep, principal: PrincipalDep
                     ) -> Response:
    async with transaction(state) as session:
        service = state.factories.executions(session)
        service.require_runner(principal, execution_id)
        item = service.io_item(await service.get(execution_id), "inputs", name)
        if not item.get("file"):
            raise BadRequest(f"Input {name!r} is not a file of this execution")
        return await stream_object(service, item["file"]["object"], item["file"]["filename"])


@router.post("/logs")
async def logs(execution_id: str, request: Request, state: AppStateDep, principal: PrincipalDep
               ) -> dict[str, int]:
    body = await json_or_form(request)
    policy.require_runner(principal, execution_id)
    return await state.executions.calls.logs(execution_id, body)


@router.put("/outputs/{name}", status_code=204)
async def output_file(execution_id: str, name: str, request: Request, state: AppStateDep,
                      principal: PrincipalDep) -> Response:
    # the runner percent-encodes the name: header values cannot carry most non-ASCII
    raw = urllib.parse.unquote(request.headers.get("x-gristmill-filename") or "")
    filename = os.path.basename(raw) or name
    with tempfile.TemporaryDirectory(prefix="gristmill-output-") as scratch:
        target = Path(scratch) / "file"
        size = 0
        with target.open("wb") as handle:
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_OUTPUT_FILE:
                    raise BadRequest("A file output may hold at most 5 GiB")
                handle.write(chunk)
        async with transaction(state) as session:
            service = state.factories.executions(session)
            service.require_runner(principal, execution_id)
            await service.store_output_file(execution_id, name, filename, target)
    return Response(status_code=204)


@router.post("/finish")
async def finish(execution_id: str, request: Request, state: AppStateDep,
                 principal: PrincipalDep) -> dict[str, Any]:
    report = await json_or_form(request)
    policy.require_runner(principal, execution_id)
    return await state.executions.calls.finish(execution_id, report)
