"""Pipelines: list, pipeline page, Deploy form."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse
from markupsafe import escape

from gristmill_platform.console import services
from gristmill_platform.console.deploy_form import (
    INPUT_CHOICES,
    OUTPUT_CHOICES,
    deployment_body,
)
from gristmill_platform.console.graphs import draw, wiring
from gristmill_platform.console.web import ConsoleRoute, ViewerDep, render
from gristmill_platform.deployments.schedule import human_readable, validate_schedule
from gristmill_platform.deps import AppStateDep, SessionDep, transaction
from gristmill_platform.errors import AppError
from gristmill_platform.executions.listing import ExecutionFilters, ExecutionListing

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)


@router.get("/pipelines")
async def pipelines_page(request: Request, viewer: ViewerDep, state: AppStateDep,
                         session: SessionDep) -> HTMLResponse:
    rows = await services.pipelines(state, session).all()
    return render(request, "pipelines.html", pipelines=rows)


@router.get("/pipelines/{name}")
async def pipeline_page(name: str, request: Request, viewer: ViewerDep, state: AppStateDep,
                        session: SessionDep) -> HTMLResponse:
    pipeline, step = await services.pipelines(state, session).get(name)
    deployments = await services.deployments(state, session).repository.for_pipeline(
        pipeline.id)
    executions = await ExecutionListing(session).page(ExecutionFilters(pipeline_name=name),
                                                      limit=20)
    graph = pipeline.graph
    return render(request, "pipeline.html", pipeline=pipeline, step=step,
                  deployments=deployments, executions=executions.rows,
                  drawing=draw(graph) if graph else None,
                  wiring=wiring(graph) if graph else [])


@router.get("/pipelines/{name}/deploy")
async def deploy_page(name: str, request: Request, viewer: ViewerDep, state: AppStateDep,
                      session: SessionDep) -> HTMLResponse:
    pipeline, step = await services.pipelines(state, session).get(name)
    return render(request, "deploy.html", pipeline=pipeline, step=step, form={},
                  input_choices=INPUT_CHOICES, output_choices=OUTPUT_CHOICES,
                  gpu_available=state.settings.executor == "kubernetes")


@router.post("/pipelines/{name}/deploy", response_model=None)
async def deploy(name: str, request: Request, viewer: ViewerDep, state: AppStateDep
                 ) -> Response:
    form = {k: str(v) for k, v in (await request.form()).items()}
    async with transaction(state) as session:
        pipeline, step = await services.pipelines(state, session).get(name)
        inputs, outputs = step.inputs, step.outputs
    try:
        rule, body = deployment_body(name, inputs, outputs, form)
        async with transaction(state) as session:
            deployment, _ = await services.deployments(state, session).create(
                rule, body, viewer.principal)
            created, low_latency = deployment.name, deployment.mode == "low_latency"
    except AppError as exc:
        # the form comes back as it was filled, with the service's message
        return render(request, "deploy.html", status_code=exc.status_code,
                      pipeline=pipeline, step=step, form=form, error=exc.message,
                      input_choices=INPUT_CHOICES, output_choices=OUTPUT_CHOICES,
                      gpu_available=state.settings.executor == "kubernetes")
    if low_latency:
        await state.executions.workers.ensure(created, wait_s=state.settings.step_build_wait_s)
    target = f"/console/deployments/{created}?created=1"
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": target})
    return Response(status_code=303, headers={"Location": target})


@router.get("/cron-preview")
async def cron_preview(request: Request, viewer: ViewerDep, schedule: str = "") -> HTMLResponse:
    try:
        text = human_readable(validate_schedule(schedule))
        return HTMLResponse(f'<span class="muted">{escape(text)}</span>')
    except AppError as exc:
        return HTMLResponse(f'<span class="error">{escape(exc.message)}</span>')
