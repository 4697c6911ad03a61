"""Execution tracking: the list (filters, key paging, sorting, live rows), the execution
page (timeline, I/O with mapping, files, live logs, metrics, run again) and Compare."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse

from gristmill_platform.console import rerun, services
from gristmill_platform.console.charts import overlay_spec
from gristmill_platform.console.graphs import execution_drawing
from gristmill_platform.console.web import ConsoleRoute, ViewerDep, render
from gristmill_platform.datastore.local import LocalDataStore
from gristmill_platform.datastore.streaming import blob_response
from gristmill_platform.db.models.executions import Execution, ListMetricValue, MetricValue
from gristmill_platform.deps import AppStateDep, SessionDep
from gristmill_platform.errors import BadRequest
from gristmill_platform.executions import transitions as t
from gristmill_platform.executions.listing import ExecutionFilters, ExecutionListing
from gristmill_platform.metrics.repository import MetricFilters

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)
LOG_LINES = 5000
MAX_COMPARED = 6


def _moment(value: str | None, what: str) -> datetime | None:
    """A datetime-local field (no zone): read as UTC, as every time the console shows."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise BadRequest(f"{what} must be a date and time such as 2026-12-05T10:00") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@router.get("/executions")
async def executions_page(
    request: Request, viewer: ViewerDep, state: AppStateDep, session: SessionDep,
    pipeline: str = "", deployment: str = "", status: str = "", trigger: str = "",
    since: str = "", until: str = "", sort: str = "created_at", order: str = "desc",
    cursor: str = "", limit: int = 50,
) -> HTMLResponse:
    filters = ExecutionFilters(pipeline_name=pipeline or None,
                               deployment_name=deployment or None, status=status or None,
                               trigger=trigger or None, since=_moment(since, "From"),
                               until=_moment(until, "To"))
    page = await ExecutionListing(session).page(filters, sort=sort, descending=order != "asc",
                                                cursor=cursor or None, limit=limit)
    params = {"pipeline": pipeline, "deployment": deployment, "status": status,
              "trigger": trigger, "since": since, "until": until}
    base = urlencode({k: v for k, v in params.items() if v})
    return render(request, "executions.html", page=page, params=params, sort=sort, base=base,
                  order=order, cursor=cursor, limit=limit,
                  pipeline_names=[p.name for p, _ in
                                  await services.pipelines(state, session).all()],
                  deployment_names=[d.name for d in
                                    await services.deployments(state, session).all()],
                  statuses=list(t.DISPLAY), triggers=["run", "endpoint", "periodic"])


@router.get("/executions/compare")
async def compare_page(request: Request, viewer: ViewerDep, session: SessionDep,
                       ids: list[str] = Query(default=[])) -> HTMLResponse:
    if not 2 <= len(ids) <= MAX_COMPARED:
        raise BadRequest(f"Select from 2 to {MAX_COMPARED} executions to compare "
                         f"({len(ids)} selected)")
    executions = await ExecutionListing(session).by_ids(ids)
    missing = set(ids) - {e.id for e in executions}
    if missing:
        raise BadRequest(f"No execution {', '.join(sorted(missing))}")
    metric_service = services.metrics(session)
    singles: dict[str, dict[str, float]] = defaultdict(dict)
    lists: dict[str, dict[str, list[float]]] = defaultdict(dict)
    for execution in executions:
        rows, _ = await metric_service.page(
            MetricValue, MetricFilters(None, None, None, execution.id), 1, 5000)
        for row in rows:
            singles[row.name][execution.id] = row.value
        values, _ = await metric_service.page(
            ListMetricValue, MetricFilters(None, None, None, execution.id), 1, 5000)
        for value in values:
            lists[value.name].setdefault(execution.id, []).append(value.value)
    input_names = sorted({i["pipeline_input_name"] for e in executions for i in e.inputs})
    output_names = sorted({o["pipeline_output_name"] for e in executions for o in e.outputs})
    return render(request, "compare.html", executions=executions,
                  input_names=input_names, output_names=output_names,
                  values=lambda e, kind, name: _io_value(e, kind, name),
                  singles=dict(sorted(singles.items())),
                  charts={name: overlay_spec(per) for name, per in sorted(lists.items())})


def _io_value(execution: Execution, kind: str, name: str) -> Any:
    items = execution.inputs if kind == "inputs" else execution.outputs
    key = "pipeline_input_name" if kind == "inputs" else "pipeline_output_name"
    item = next((i for i in items if i[key] == name), None)
    if item is None:
        return ""
    if item.get("data_type") == "file":
        return (item.get("file") or {}).get("filename") or "(file)"
    return item.get("value")


@router.get("/executions/{execution_id}/row")
async def execution_row(execution_id: str, request: Request, viewer: ViewerDep,
                        state: AppStateDep, session: SessionDep, selectable: bool = False
                        ) -> HTMLResponse:
    execution = await services.executions(state, session).get(execution_id)
    return render(request, "_execution_row.html", e=execution, selectable=selectable)


@router.get("/executions/{execution_id}")
async def execution_page(execution_id: str, request: Request, viewer: ViewerDep,
                         state: AppStateDep, session: SessionDep) -> HTMLResponse:
    service = services.executions(state, session)
    execution = await service.get(execution_id)
    metric_service = services.metrics(session)
    singles, _ = await metric_service.page(
        MetricValue, MetricFilters(None, None, None, execution_id), 1, 5000)
    values, _ = await metric_service.page(
        ListMetricValue, MetricFilters(None, None, None, execution_id), 1, 5000)
    lists: dict[str, list[float]] = defaultdict(list)
    for value in values:
        lists[value.name].append(value.value)
    logs = await service.logs(execution_id, {"limit": LOG_LINES})
    graph, nodes = await service.graph_of(execution)
    return render(request, "execution.html", e=execution, singles=singles,
                  charts={name: overlay_spec({name: v}) for name, v in sorted(lists.items())},
                  logs=logs, active=execution.status in t.ACTIVE, log_limit=LOG_LINES,
                  drawing=execution_drawing(execution, graph, nodes) if graph else None)


@router.get("/executions/{execution_id}/graph")
async def execution_graph(execution_id: str, request: Request, viewer: ViewerDep,
                          state: AppStateDep, session: SessionDep) -> HTMLResponse:
    """The graph of a running execution, polled by its page (it stops polling once the
    execution ended: the answer then carries no trigger)."""
    service = services.executions(state, session)
    execution = await service.get(execution_id)
    graph, nodes = await service.graph_of(execution)
    if graph is None:
        raise BadRequest(f"Execution {execution_id} is not a multi-step pipeline's: it has "
                         "no graph")
    return render(request, "_graph.html", execution=execution,
                  drawing=execution_drawing(execution, graph, nodes),
                  active=execution.status in t.ACTIVE)


@router.get("/executions/{execution_id}/logs")
async def execution_logs(execution_id: str, request: Request, viewer: ViewerDep,
                         state: AppStateDep, session: SessionDep) -> HTMLResponse:
    service = services.executions(state, session)
    execution = await service.get(execution_id)
    active = execution.status in t.ACTIVE
    if not active:
        # it just ended: reload the page once, for its outputs, metrics and final status
        return HTMLResponse("", headers={"HX-Refresh": "true"})
    logs = await service.logs(execution_id, {"limit": LOG_LINES})
    return render(request, "_logs.html", e=execution, logs=logs, active=active,
                  log_limit=LOG_LINES)


@router.get("/executions/{execution_id}/{kind}/{name}/download", response_model=None)
async def download(execution_id: str, kind: str, name: str, viewer: ViewerDep,
                   state: AppStateDep, session: SessionDep) -> Response:
    if kind not in ("inputs", "outputs"):
        raise BadRequest("kind must be inputs or outputs")
    service = services.executions(state, session)
    item = service.io_item(await service.get(execution_id), kind, name)
    if item.get("file"):
        path, filename = item["file"]["object"], item["file"]["filename"]
    elif item.get("mapping_type") == "datastore":
        path = (item["mapping_value"].get("resolved_path")
                or item["mapping_value"].get("datastore_path"))
        filename = str(path).rsplit("/", 1)[-1]
    else:
        raise BadRequest(f"{kind[:-1].capitalize()} {name!r} has no file to download")
    backend = service.datastore
    if not isinstance(backend, LocalDataStore):
        return Response(status_code=307,
                        headers={"Location": await backend.presign_download(path)})
    info, blob = await backend.blob_path(path)
    return await blob_response(info, blob, filename)


@router.post("/executions/{execution_id}/run-again", response_model=None)
async def run_again(execution_id: str, viewer: ViewerDep, state: AppStateDep) -> Response:
    """Runs the pipeline again with the inputs this execution received (console/rerun.py)."""
    launch = await rerun.run_again(state, execution_id, viewer.principal)
    state.executions.launch(launch)
    return Response(status_code=303,
                    headers={"Location": f"/console/executions/{launch.execution_id}"})
