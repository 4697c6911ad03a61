"""Deployment management routes (contract §4.1-4.5, 4.8)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from gristmill_platform.auth.principal import Principal
from gristmill_platform.db.models.deployments import Deployment
from gristmill_platform.deployments.endpoint_inputs import inputs_of
from gristmill_platform.deployments.schemas import (
    deployment_list_item,
    deployment_log_read,
    deployment_read,
)
from gristmill_platform.deployments.service import DeploymentService
from gristmill_platform.deps import AppStateDep, PrincipalDep, SessionDep, transaction
from gristmill_platform.executions.repository import ExecutionRepository
from gristmill_platform.executions.schemas import execution_summary
from gristmill_platform.http.bodies import json_or_form
from gristmill_platform.state import AppState

router = APIRouter(tags=["deployments"])
# how often a client waiting for a deployment that is not up yet gets an answer
PENDING_POLL_S = 1.0


async def service_dep(state: AppStateDep, session: SessionDep) -> DeploymentService:
    return state.factories.deployments(session)


ServiceDep = Annotated[DeploymentService, Depends(service_dep)]


def render(state: AppState, service: DeploymentService, deployment: Deployment,
           step: Any, principal: Principal) -> dict[str, Any]:
    pods = state.executions.workers.pods(deployment.name) \
        if deployment.mode == "low_latency" else None
    return deployment_read(deployment, step.inputs, step.outputs,
                           token=service.token_of(deployment, principal), pods=pods)


async def _create(rule: str, request: Request, state: AppState, principal: Any
                  ) -> JSONResponse:
    body = await json_or_form(request)
    async with transaction(state) as session:
        deployment, token = await state.factories.deployments(session).create(
            rule, body, principal)
        name, low_latency = deployment.name, deployment.mode == "low_latency"
    if low_latency:
        await state.executions.workers.ensure(name, wait_s=state.settings.step_build_wait_s)
    async with transaction(state) as session:
        service = state.factories.deployments(session)
        deployment, _, step = await service.with_step(name)
        body = render(state, service, deployment, step, principal)
    if token:
        body["endpoint_token"] = token
    if deployment.status == "creation_failed":
        return JSONResponse(body, status_code=400 if not low_latency else 201)
    return JSONResponse(body, status_code=206 if deployment.status == "creation_pending"
                        else 201)


@router.post("/endpoints")
async def create_endpoint(request: Request, state: AppStateDep, principal: PrincipalDep
                          ) -> JSONResponse:
    return await _create("endpoint", request, state, principal)


@router.post("/periodic-deployment")
async def create_periodic(request: Request, state: AppStateDep, principal: PrincipalDep
                          ) -> JSONResponse:
    return await _create("periodic", request, state, principal)


@router.get("/deployments")
async def list_deployments(principal: PrincipalDep, service: ServiceDep
                           ) -> list[dict[str, Any]]:
    return [deployment_list_item(d) for d in await service.all()]


@router.get("/deployments/{name}")
async def get_deployment(name: str, state: AppStateDep, principal: PrincipalDep,
                         wait_for_completion: bool = False) -> dict[str, Any]:
    async def read() -> tuple[str, dict[str, Any]]:
        async with transaction(state) as session:
            service = state.factories.deployments(session)
            deployment, _, step = await service.with_step(name)
            body = render(state, service, deployment, step, principal)
            # its traffic rule, validations and per-variant comparison (docs/rollout.md)
            body["traffic"] = await state.factories.deployments.traffic(session).summary(
                deployment)
            return deployment.status, body

    status, body = await read()
    if wait_for_completion and status == "creation_pending":
        # craft-ai-sdk 0.74 asks again at once: hold the answer while workers start
        await state.executions.workers.ensure(name, wait_s=state.settings.long_poll_s)
        status, body = await read()
        if status == "creation_pending":
            await asyncio.sleep(PENDING_POLL_S)
    return body


@router.get("/deployments/{name}/executions/latest", response_model=None)
async def latest_execution(name: str, principal: PrincipalDep, service: ServiceDep
                           ) -> dict[str, Any] | Response:
    deployment = await service.get(name)
    execution = await service.repository.latest_execution(deployment.id)
    if execution is None:
        return Response(status_code=204)  # never 404 (contract §4.2)
    return execution_summary(execution)


@router.get("/deployments/{name}/executions")
async def deployment_executions(name: str, principal: PrincipalDep, service: ServiceDep,
                                session: SessionDep) -> list[dict[str, Any]]:
    deployment = await service.get(name)
    rows = await service.repository.executions(deployment.id)
    del session
    # a multi-step pipeline's node executions show in their execution's steps, not here
    return [execution_summary(e) for e in sorted(rows, key=lambda e: e.created_at)
            if e.parent_id is None]


# craft-ai-sdk 0.74's trigger_endpoint without an endpoint token: the SDK token instead;
# the client then waits on /executions/<id>/outputs
@router.post("/deployments/{name}/executions")
async def trigger_deployment(name: str, request: Request, state: AppStateDep,
                             principal: PrincipalDep) -> JSONResponse:
    body, files = await inputs_of(request)
    state.executions.check_room()  # 503 before anything is recorded when too many wait
    async with transaction(state) as session:
        launch = await state.factories.deployments(session).trigger_as_user(
            name, body, files, principal)
    state.executions.launch(launch)
    return JSONResponse({"execution_id": launch.execution_id}, status_code=201,
                        headers={"Craft-Ai-Execution-Id": launch.execution_id})


@router.patch("/deployments/{name}")
async def update_deployment(name: str, request: Request, state: AppStateDep,
                            principal: PrincipalDep) -> dict[str, Any]:
    body = await json_or_form(request)
    async with transaction(state) as session:
        deployment = await state.factories.deployments(session).update(name, body, principal)
        roll = deployment.mode == "low_latency" and deployment.status == "creation_pending"
    if roll:
        await state.executions.workers.ensure(name, wait_s=state.settings.step_build_wait_s,
                                              restart=True)
    async with transaction(state) as session:
        service = state.factories.deployments(session)
        deployment, _, step = await service.with_step(name)
        return render(state, service, deployment, step, principal)


@router.delete("/deployments/{name}")
async def delete_deployment(name: str, state: AppStateDep, principal: PrincipalDep
                            ) -> dict[str, Any]:
    async with transaction(state) as session:
        deployment, running = await state.factories.deployments(session).delete(name, principal)
        result = {"name": deployment.name, "execution_rule": deployment.execution_rule}
        mode = deployment.mode
    for handle in running:
        await state.executions.stop_worker(handle)
    if mode == "low_latency":
        await state.executions.workers.stop(name)
    return result


@router.post("/deployments/{name}/logs")
async def deployment_logs(name: str, request: Request, principal: PrincipalDep,
                          service: ServiceDep) -> list[dict[str, Any]]:
    lines = await service.logs(name, await json_or_form(request))
    return [deployment_log_read(line) for line in lines]


@router.post("/endpoints/{name}/generate-new-token")
async def generate_new_token(name: str, request: Request, principal: PrincipalDep,
                             service: ServiceDep) -> dict[str, str]:
    # craft-ai-sdk 0.74 may send the new token it chose (a form field)
    chosen = (await json_or_form(request)).get("endpoint_token")
    return {"endpoint_token": await service.rotate_token(name, principal, chosen)}


__all__ = ["ExecutionRepository", "router"]
