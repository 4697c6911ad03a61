from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from gristmill_platform.db.models.executions import ListMetricValue, MetricValue
from gristmill_platform.deps import PrincipalDep, SessionDep
from gristmill_platform.http.bodies import json_or_form
from gristmill_platform.http.clients import CLIENT_HEADER, is_current_client
from gristmill_platform.http.dates import iso
from gristmill_platform.metrics.repository import MetricFilters, MetricList, MetricRepository
from gristmill_platform.metrics.service import MetricService

router = APIRouter(prefix="/metrics", tags=["metrics"])


async def metric_service(session: SessionDep) -> MetricService:
    return MetricService(MetricRepository(session))


ServiceDep = Annotated[MetricService, Depends(metric_service)]


async def filters(
    name: Annotated[str | None, Query(alias="filters[name]")] = None,
    pipeline_name: Annotated[str | None, Query(alias="filters[pipeline_name]")] = None,
    deployment_name: Annotated[str | None, Query(alias="filters[deployment_name]")] = None,
    execution_id: Annotated[str | None, Query(alias="filters[execution_id]")] = None,
) -> MetricFilters:
    return MetricFilters(name, pipeline_name, deployment_name, execution_id)


FiltersDep = Annotated[MetricFilters, Depends(filters)]


def _item(row: MetricValue | ListMetricValue) -> dict[str, Any]:
    return {"name": row.name, "value": row.value, "created_at": iso(row.created_at),
            "execution_id": row.execution_id, "deployment_name": row.deployment_name,
            "pipeline_name": row.pipeline_name}


@router.put("/single-value/{name}")
async def record_metric(name: str, request: Request, principal: PrincipalDep,
                        service: ServiceDep) -> dict[str, Any]:
    body = await json_or_form(request)
    row = await service.record(principal, name, body.get("value"), body.get("execution_id"))
    return _item(row)


@router.post("/list-values/{name}")
async def record_list_metric(name: str, request: Request, principal: PrincipalDep,
                             service: ServiceDep) -> dict[str, Any]:
    body = await json_or_form(request)
    added = await service.append(principal, name, body.get("values"), body.get("execution_id"))
    return {"name": name, "added": added}


@router.get("/single-value")
async def get_metrics(principal: PrincipalDep, service: ServiceDep, selected: FiltersDep,
                      items_per_page: int = 5000, page: int = 1) -> dict[str, Any]:
    rows, total = await service.page(MetricValue, selected, page, items_per_page)
    return {"metrics": [_item(r) for r in rows], "total_count": total}


def _list(metric: MetricList) -> dict[str, Any]:
    return {"name": metric.name, "values": metric.values, "created_at": iso(metric.created_at),
            "execution_id": metric.execution_id, "deployment_name": metric.deployment_name,
            "pipeline_name": metric.pipeline_name}


@router.get("/list-values")
async def get_list_metrics(request: Request, principal: PrincipalDep, service: ServiceDep,
                           selected: FiltersDep, items_per_page: int = 5000, page: int = 1
                           ) -> dict[str, Any]:
    if is_current_client(request.headers.get(CLIENT_HEADER)):
        # one item per list with its values, as craft-ai-sdk 0.74 documents them; 0.50.1,
        # Gristmill's SDK and the product documentation have one item per value
        lists, total = await service.lists(selected, page, items_per_page)
        return {"metrics": [_list(m) for m in lists], "total_count": total}
    rows, total = await service.page(ListMetricValue, selected, page, items_per_page)
    return {"metrics": [_item(r) for r in rows], "total_count": total}
