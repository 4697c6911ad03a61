"""``GET /resource-metrics?start=<epoch ms>&end=<epoch ms>&download=True|False``
(craft-ai-sdk's ``get_resource_metrics``): JSON as documented, or CSV bytes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse

from gristmill_platform.deps import AppStateDep, PrincipalDep, SessionDep
from gristmill_platform.resources.service import ResourceMetricsQuery, ResourceMetricsService
from gristmill_platform.resources.shape import to_csv, to_json

router = APIRouter(prefix="/resource-metrics", tags=["resources"])


async def resource_service(state: AppStateDep, session: SessionDep) -> ResourceMetricsService:
    return ResourceMetricsService(state.services.resources.source(session))


ServiceDep = Annotated[ResourceMetricsService, Depends(resource_service)]


@router.get("")
async def get_resource_metrics(principal: PrincipalDep, service: ServiceDep,
                               start: str | None = None, end: str | None = None,
                               download: str | None = None) -> Response:
    # parameters taken as text: a wrong one is a 400 that says what is expected
    result, as_csv = await service.get(ResourceMetricsQuery(start, end, download))
    if as_csv:
        filename = f"resource-metrics-{int(str(start))}-{int(str(end))}.csv"
        return Response(to_csv(result), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})
    return JSONResponse(to_json(result))
