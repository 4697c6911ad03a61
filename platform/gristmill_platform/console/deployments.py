"""Deployments: list, deployment page, token reveal/rotate, enable/disable, delete."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from gristmill_platform.console import services
from gristmill_platform.console.charts import chart_spec
from gristmill_platform.console.rollout import traffic_section
from gristmill_platform.console.web import ConsoleRoute, ViewerDep, render
from gristmill_platform.db.models.executions import MetricValue
from gristmill_platform.db.types import utcnow
from gristmill_platform.deployments.schedule import human_readable, next_fire
from gristmill_platform.deps import AppStateDep, SessionDep, transaction
from gristmill_platform.executions.listing import ExecutionFilters, ExecutionListing
from gristmill_platform.metrics.repository import MetricFilters

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)


def next_fire_times(schedule: str, after: datetime, count: int = 5) -> list[datetime]:
    times: list[datetime] = []
    for _ in range(count):
        after = next_fire(schedule, after)
        times.append(after)
    return times


@router.get("/deployments")
async def deployments_page(request: Request, viewer: ViewerDep, state: AppStateDep,
                           session: SessionDep) -> HTMLResponse:
    rows = await services.deployments(state, session).all()
    health = {d.name: _health(state, d) for d in rows}
    return render(request, "deployments.html", deployments=rows, health=health)


def _health(state: Any, deployment: Any) -> str:
    if not deployment.is_enabled:
        return "disabled"
    if deployment.mode != "low_latency":
        return "ready" if deployment.status == "up" else deployment.status
    pods = state.executions.workers.pods(deployment.name)
    return "ready" if any(p.get("status") == "running" for p in pods) else "unavailable"


async def _page(request: Request, name: str, state: Any, session: Any, principal: Any,
                **extra: Any
                ) -> HTMLResponse:
    service = services.deployments(state, session)
    deployment, pipeline, step = await service.with_step(name)
    pods = (state.executions.workers.pods(deployment.name)
            if deployment.mode == "low_latency" else [])
    executions = await ExecutionListing(session).page(
        ExecutionFilters(deployment_name=name), limit=20)
    logs = await service.logs(name, {"limit": 200})
    rows, _ = await services.metrics(session).page(
        MetricValue, MetricFilters(None, None, name, None), 1, 5000)
    by_name: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        by_name[row.name].append(row)
    charts = {metric: chart_spec([(r.created_at, r.value) for r in values], metric)
              for metric, values in sorted(by_name.items())}
    schedule = None
    if deployment.schedule:
        schedule = {"text": human_readable(deployment.schedule),
                    "next": next_fire_times(deployment.schedule, utcnow())
                    if deployment.is_enabled else []}
    return render(request, "deployment.html", deployment=deployment, step=step,
                  pipeline=pipeline, pods=pods, executions=executions.rows, logs=logs,
                  charts=charts, schedule=schedule, health=_health(state, deployment),
                  token=service.token_of(deployment, principal),
                  endpoint_url=f"{state.settings.environment_url}/endpoints/{deployment.name}",
                  **extra)


@router.get("/deployments/{name}")
async def deployment_page(name: str, request: Request, viewer: ViewerDep, state: AppStateDep,
                          session: SessionDep, created: bool = False) -> HTMLResponse:
    return await _page(request, name, state, session, viewer.principal, created=created)


@router.get("/deployments/{name}/traffic")
async def traffic(name: str, request: Request, viewer: ViewerDep, state: AppStateDep,
                  session: SessionDep) -> HTMLResponse:
    """The page's Traffic section, loaded after the page: its comparison reads the
    deployment's last 10,000 executions, as the API's deployment read does."""
    service = state.factories.deployments.traffic(session)
    deployment = await service.deployments.get(name)
    section = await traffic_section(service, services.auth(state, session).users, deployment)
    return render(request, "_traffic.html", deployment=deployment, traffic=section)


@router.post("/deployments/{name}/rotate-token")
async def rotate_token(name: str, request: Request, viewer: ViewerDep, state: AppStateDep,
                       session: SessionDep) -> HTMLResponse:
    token = await services.deployments(state, session).rotate_token(name, viewer.principal)
    return render(request, "_endpoint_token.html", token=token, rotated=True,
                  deployment_name=name)


@router.post("/deployments/{name}/enabled", response_model=None)
async def set_enabled(name: str, request: Request, viewer: ViewerDep, state: AppStateDep
                      ) -> Response:
    enable = (await request.form()).get("enable") == "true"
    async with transaction(state) as session:
        deployment = await services.deployments(state, session).update(
            name, {"is_enabled": enable}, viewer.principal)
        roll = deployment.mode == "low_latency" and deployment.status == "creation_pending"
    if roll:
        await state.executions.workers.ensure(name, wait_s=state.settings.step_build_wait_s,
                                              restart=True)
    return Response(status_code=303, headers={"Location": f"/console/deployments/{name}"})


@router.post("/deployments/{name}/delete", response_model=None)
async def delete(name: str, request: Request, viewer: ViewerDep, state: AppStateDep
                 ) -> Response:
    async with transaction(state) as session:
        deployment, running = await services.deployments(state, session).delete(
            name, viewer.principal)
        mode = deployment.mode
    for handle in running:
        await state.executions.stop_worker(handle)
    if mode == "low_latency":
        await state.executions.workers.stop(name)
    return Response(status_code=303, headers={"Location": "/console/deployments"})
