"""A deployment's traffic rule, validations and execution export (docs/rollout.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from gristmill_platform.auth import policy
from gristmill_platform.db.models.deployments import Deployment
from gristmill_platform.deployments.export import export_executions, parse_request
from gristmill_platform.deployments.traffic_service import TrafficService
from gristmill_platform.deps import AppStateDep, PrincipalDep, transaction
from gristmill_platform.http.bodies import json_or_form
from gristmill_platform.http.dates import iso

router = APIRouter(tags=["deployments"])


async def traffic_read(service: TrafficService, deployment: Deployment) -> dict[str, Any]:
    row = await service.row(deployment)
    return {
        "deployment_name": deployment.name,
        "pipeline_name": deployment.pipeline_name,
        "rule": row.rule if row is not None else {},
        "validations": row.validations if row is not None else {},
        "changes": [{"changed_by": c.changed_by, "changed_at": iso(c.changed_at),
                     "what": c.what, "value": c.value}
                    for c in await service.changes(deployment)],
    }


@router.get("/deployments/{name}/traffic")
async def get_traffic(name: str, state: AppStateDep, principal: PrincipalDep
                      ) -> dict[str, Any]:
    async with transaction(state) as session:
        service = state.factories.deployments.traffic(session)
        return await traffic_read(service, await service.deployments.get(name))


@router.put("/deployments/{name}/traffic")
async def set_traffic(name: str, request: Request, state: AppStateDep,
                      principal: PrincipalDep) -> dict[str, Any]:
    body = await json_or_form(request)
    async with transaction(state) as session:
        service = state.factories.deployments.traffic(session)
        await service.set_traffic(name, body, principal)
    async with transaction(state) as session:
        service = state.factories.deployments.traffic(session)
        return await traffic_read(service, await service.deployments.get(name))


@router.put("/deployments/{name}/validations")
async def set_validations(name: str, request: Request, state: AppStateDep,
                          principal: PrincipalDep) -> dict[str, Any]:
    body = await json_or_form(request)
    async with transaction(state) as session:
        await state.factories.deployments.traffic(session).set_validations(name, body,
                                                                            principal)
    async with transaction(state) as session:
        service = state.factories.deployments.traffic(session)
        return await traffic_read(service, await service.deployments.get(name))


@router.post("/deployments/{name}/executions/export")
async def export(name: str, request: Request, state: AppStateDep, principal: PrincipalDep
                 ) -> dict[str, Any]:
    """One row per execution to the data store (deployments/export.py)."""
    principal.require_user_scope("Exporting a deployment's executions")
    policy.require_create(principal, "Exporting a deployment's executions")
    wanted = parse_request(await json_or_form(request))
    async with transaction(state) as session:
        deployment = await state.factories.deployments(session).get(name)
    rows = await export_executions(state.transactions, state.datastore, deployment, wanted)
    return {"path": wanted.datastore_path, "rows": rows, "format": wanted.format}
