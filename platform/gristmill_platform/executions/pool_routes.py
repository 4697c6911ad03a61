"""The route a pre-started pool pod long-polls for its one execution
(executions/pool_claims.py). It carries a pool token, not an SDK token: no other route
accepts it, and it claims nothing but an execution given to that very pod."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from gristmill_platform.deps import AppStateDep
from gristmill_platform.errors import BadRequest, Unauthorized
from gristmill_platform.http.bodies import json_or_form

router = APIRouter(prefix="/runtime/pool", tags=["runtime"], include_in_schema=False)
POOL_TOKEN_HEADER = "X-Gristmill-Pool-Token"  # noqa: S105 - a header's name


@router.post("/claim")
async def claim(request: Request, state: AppStateDep) -> Response:
    body: dict[str, Any] = await json_or_form(request)
    pod, step_id, wait_s = body.get("pod"), body.get("step_id"), body.get("wait_s", 20)
    if not isinstance(pod, str) or not pod:
        raise BadRequest("pod must be the pool pod's name")
    if not isinstance(step_id, str) or not step_id:
        raise BadRequest("step_id must be the id of the pool pod's step")
    if isinstance(wait_s, bool) or not isinstance(wait_s, int | float) or wait_s < 0:
        raise BadRequest("wait_s must be a number of seconds >= 0")
    token = request.headers.get(POOL_TOKEN_HEADER) or ""
    if not token:
        raise Unauthorized(f"Missing {POOL_TOKEN_HEADER} header")
    given = await state.executions.pool_claims.claim(pod, step_id, token, float(wait_s))
    if given is None:
        return Response(status_code=204)
    return JSONResponse({"execution_id": given.execution_id, "env": given.env})
