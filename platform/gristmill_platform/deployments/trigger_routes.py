"""Triggering an endpoint with an SDK token (craft-ai-sdk 0.74's trigger_endpoint when no
endpoint token is given): `POST /api/v1/deployments/<name>/executions`. The answer is the
execution id; the client then waits on /executions/<id>/outputs."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from gristmill_platform.deployments.gateway import inputs_of
from gristmill_platform.deployments.routes import deployment_services
from gristmill_platform.deps import AppStateDep, PrincipalDep, transaction

router = APIRouter(tags=["deployments"])


@router.post("/deployments/{name}/executions")
async def trigger_deployment(name: str, request: Request, state: AppStateDep,
                             principal: PrincipalDep) -> JSONResponse:
    body, files = await inputs_of(request)
    async with transaction(state) as session:
        launch = await deployment_services(state, session).trigger_as_user(
            name, body, files, principal)
    state.executions.launch(launch)
    return JSONResponse({"execution_id": launch.execution_id}, status_code=201,
                        headers={"Craft-Ai-Execution-Id": launch.execution_id})
