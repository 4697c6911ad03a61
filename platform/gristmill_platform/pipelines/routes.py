"""Pipeline routes (contract §3)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import JSONResponse

from gristmill_platform.auth import policy
from gristmill_platform.deps import AppStateDep, PrincipalDep, SessionDep, transaction
from gristmill_platform.errors import NotFound
from gristmill_platform.executions.schemas import execution_summary
from gristmill_platform.http.bodies import json_or_form, structured_form
from gristmill_platform.http.clients import CLIENT_HEADER, is_current_client, is_legacy_client
from gristmill_platform.pipelines.schemas import pipeline_list_item, pipeline_read
from gristmill_platform.pipelines.service import PipelineService
from gristmill_platform.pipelines.waiting import wait_for_build
from gristmill_platform.project.unsupported import pipeline_templates_not_supported
from gristmill_platform.steps.build_failures import creation_failed

router = APIRouter(prefix="/pipelines", tags=["pipelines"])


async def pipeline_service(state: AppStateDep, session: SessionDep) -> PipelineService:
    return state.factories.pipelines(session)


ServiceDep = Annotated[PipelineService, Depends(pipeline_service)]
ClientHeader = Annotated[str | None, Header(alias="craft-ai-client")]


@router.post("")
async def create_pipeline(request: Request, state: AppStateDep, principal: PrincipalDep
                          ) -> JSONResponse:
    fields, upload = await structured_form(request, "step_file")
    name = fields.get("pipeline_name")
    if "nodes" in fields:  # a multi-step pipeline (docs/pipelines.md)
        async with transaction(state) as session:
            pipeline, step = await state.factories.pipelines(session).create_graph(
                name, fields["nodes"], fields.get("outputs"), principal,
                fields.get("description"), fields.get("metric_bounds"))
            body = pipeline_read(pipeline, step)
        return JSONResponse(body, status_code=201)
    if "pipeline_template_name" in fields:
        pipeline_templates_not_supported()
    if "step_names" in fields or "step_name" in fields:
        async with transaction(state) as session:
            pipeline, step = await state.factories.pipelines(session).create_from_step(
                name, fields.get("step_names", fields.get("step_name")), principal)
            body = pipeline_read(pipeline, step)
        return JSONResponse(body, status_code=201)
    # a pipeline from a function: its hidden step is built like any other step
    async with transaction(state) as session:
        service = state.factories.pipelines(session)
        step_name = await service.prepare_function_pipeline(name)
        created = await service.steps.create(fields, upload.file if upload else None,
                                             principal, name=step_name, hidden=True)
        await service.attach_hidden_step(str(name), created.step, principal)
    state.builds.schedule(created.step.id, created.deploy_key)
    # a current craft-ai-sdk ignores this answer and waits with get_pipeline when asked
    # to: holding it for the build would make wait_for_completion=False wait, and a
    # failed build raise StepCreationFailed, not its documented CreationFailed
    if not is_current_client(request.headers.get(CLIENT_HEADER)):
        await state.builds.wait(created.step.id, state.settings.step_build_wait_s)
    async with transaction(state) as session:
        pipeline, step = await state.factories.pipelines(session).get(str(name))
        body = pipeline_read(pipeline, step)
    if step.status == "creation_failed":
        raise creation_failed("pipeline", pipeline.name, step.status_reason, step.build_log)
    return JSONResponse(body, status_code=201 if step.status == "ready" else 206)


@router.get("")
async def list_pipelines(principal: PrincipalDep, service: ServiceDep) -> list[dict[str, Any]]:
    return [pipeline_list_item(p, s) for p, s in await service.all()]


@router.get("/{pipeline_name}")
async def get_pipeline(pipeline_name: str, state: AppStateDep, principal: PrincipalDep,
                       client: ClientHeader = None, wait_for_completion: bool = False
                       ) -> dict[str, Any]:
    async with transaction(state) as session:
        pipeline, step = await state.factories.pipelines(session).get(pipeline_name)
    if wait_for_completion and step.status == "creation_pending":
        # craft-ai-sdk 0.74 asks again at once: hold the answer while the build runs
        async def status() -> str:
            async with transaction(state) as session:
                return (await state.factories.pipelines(session).get(pipeline_name))[1].status

        await wait_for_build(state.builds, step.id, state.settings.long_poll_s, status)
        async with transaction(state) as session:
            pipeline, step = await state.factories.pipelines(session).get(pipeline_name)
    if step.status == "creation_failed" and is_legacy_client(client):
        raise NotFound(f"Creation of pipeline {pipeline_name!r} failed: {step.status_reason}",
                       name="PipelineCreationFailed")
    return pipeline_read(pipeline, step)


@router.get("/{pipeline_name}/executions/latest", response_model=None)
async def latest_execution(pipeline_name: str, principal: PrincipalDep, service: ServiceDep
                           ) -> dict[str, Any] | Response:
    execution = await service.latest_execution(pipeline_name)
    if execution is None:
        return Response(status_code=204)  # "none yet", never 404 (contract §3.2)
    return execution_summary(execution)


@router.delete("/{pipeline_name}")
async def delete_pipeline(pipeline_name: str, state: AppStateDep, principal: PrincipalDep,
                          force_deployments_deletion: bool = False) -> dict[str, Any]:

    async with transaction(state) as session:
        pipelines = state.factories.pipelines(session)
        found, _ = await pipelines.get(pipeline_name)
        policy.require_owner(principal, found.created_by, f"Pipeline {pipeline_name!r}")
        deployments, running = await state.factories.deployments(session).delete_for_pipeline(
            found, principal, force=force_deployments_deletion)
        pipeline, _ = await pipelines.delete(pipeline_name, principal)
    for handle in running:
        await state.executions.stop_worker(handle)
    for deployment in deployments:
        await state.executions.workers.stop(deployment["name"])
    await state.builds.prune_environments()  # the pipeline's own step may be gone with it
    return {"pipeline": {"name": pipeline.name}, "deployments": deployments}


@router.post("/{pipeline_name}/logs")
async def pipeline_logs(pipeline_name: str, request: Request, principal: PrincipalDep,
                        service: ServiceDep) -> list[dict[str, Any]]:
    return await service.build_logs(pipeline_name, await json_or_form(request))


@router.get("/{pipeline_name}/download")
async def download_pipeline(pipeline_name: str, principal: PrincipalDep, service: ServiceDep
                            ) -> dict[str, str]:
    return {"signed_url": await service.download_url(pipeline_name)}
