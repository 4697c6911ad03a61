"""Step routes (contract §2)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse

from gristmill_platform.auth.principal import Principal
from gristmill_platform.deps import AppStateDep, PrincipalDep, SessionDep, transaction
from gristmill_platform.errors import NotFound
from gristmill_platform.http.bodies import structured_form
from gristmill_platform.http.clients import is_legacy_client
from gristmill_platform.state import AppState
from gristmill_platform.steps.build_failures import creation_failed
from gristmill_platform.steps.repository import StepRepository
from gristmill_platform.steps.schemas import step_list_item, step_read
from gristmill_platform.steps.service import StepService

router = APIRouter(prefix="/steps", tags=["steps"])

ClientHeader = Annotated[str | None, Header(alias="craft-ai-client")]


async def step_service(state: AppStateDep, session: SessionDep) -> StepService:
    return state.factories.steps(session)


ServiceDep = Annotated[StepService, Depends(step_service)]


async def create_and_wait(state: AppState, request: Request, principal: Principal,
                          *, name_field: str) -> tuple[str, str]:
    """Record the step in its own transaction, start its build once committed, wait a
    while for it. Returns (step id, status)."""
    fields, upload = await structured_form(request, "step_file")
    name = fields.get(name_field)
    async with transaction(state) as session:
        service = state.factories.steps(session)
        created = await service.create(fields, upload.file if upload else None, principal,
                                       name=name if isinstance(name, str) else "")
    state.builds.schedule(created.step.id, created.deploy_key)
    await state.builds.wait(created.step.id, state.settings.step_build_wait_s)
    return created.step.id, created.step.name


@router.post("")
async def create_step(request: Request, state: AppStateDep, principal: PrincipalDep
                      ) -> JSONResponse:
    step_id, _ = await create_and_wait(state, request, principal, name_field="step_name")
    async with transaction(state) as session:
        step = await StepRepository(session).get(step_id)
    if step is None:
        raise NotFound("The step was deleted while it was being created")
    if step.status == "creation_failed":
        raise creation_failed("step", step.name, step.status_reason, step.build_log)
    body = step_read(step)
    return JSONResponse(body, status_code=201 if step.status == "ready" else 206)


@router.get("")
async def list_steps(principal: PrincipalDep, service: ServiceDep) -> list[dict[str, Any]]:
    return [step_list_item(s) for s in await service.list()]


@router.get("/{step_name}")
async def get_step(step_name: str, principal: PrincipalDep, service: ServiceDep,
                   client: ClientHeader = None) -> dict[str, Any]:
    step = await service.get(step_name)
    if step.status == "creation_failed" and is_legacy_client(client):
        # craft-ai-sdk 0.50 only stops waiting on a 404 (contract §2.1)
        raise NotFound(f"Creation of step {step_name!r} failed: {step.status_reason}",
                       name="StepCreationFailed")
    return step_read(step)


@router.get("/{step_name}/logs")
async def get_step_build_logs(step_name: str, principal: PrincipalDep, service: ServiceDep
                              ) -> dict[str, Any]:
    step = await service.get(step_name)
    return {"step_name": step.name, "status": step.status, "status_reason": step.status_reason,
            "logs": step.build_log}


@router.delete("/{step_name}")
async def delete_step(step_name: str, state: AppStateDep, principal: PrincipalDep,
                      force_dependents_deletion: bool = False) -> dict[str, Any]:

    stopped: list[str] = []
    running: list[Any] = []
    async with transaction(state) as session:
        service = state.factories.steps(session)
        if force_dependents_deletion:
            step = await service.get(step_name)
            deployments = state.factories.deployments(session)
            for pipeline in await service.repository.pipelines_using(step.id):
                removed, handles = await deployments.delete_for_pipeline(pipeline, principal,
                                                                         force=True)
                stopped += [d["name"] for d in removed]
                running += handles
        step, pipelines = await service.delete(step_name, principal,
                                               force=force_dependents_deletion)
        body = {"step_name": step.name, "deleted_pipelines": [p.name for p in pipelines]}
    for handle in running:
        await state.executions.stop_worker(handle)
    for name in stopped:
        await state.executions.workers.stop(name)
    await state.builds.prune_environments()
    return body


@router.get("/{step_name}/download")
async def download_step(step_name: str, principal: PrincipalDep, service: ServiceDep
                        ) -> dict[str, str]:
    return {"signed_url": await service.download_url(step_name)}
