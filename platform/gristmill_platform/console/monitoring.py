"""Monitoring: a single metric over time (Pipeline metrics) and workers' resources
(Resource metrics: current cards, charts over a range, the SDK's CSV)."""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from gristmill_platform.console import services
from gristmill_platform.console.charts import chart_spec
from gristmill_platform.console.web import ConsoleRoute, ViewerDep, render
from gristmill_platform.db.models.executions import MetricValue
from gristmill_platform.deps import AppStateDep, SessionDep
from gristmill_platform.metrics.repository import MetricFilters
from gristmill_platform.resources.service import ResourceMetricsQuery
from gristmill_platform.resources.shape import (
    ALL_CUMULATE,
    METRIC_NAMES,
    NETWORK_IN,
    NETWORK_OUT,
    to_csv,
)

router = APIRouter(prefix="/console/monitoring", route_class=ConsoleRoute,
                   include_in_schema=False)
RANGES = {"15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400}
# a percent above this is highlighted on the cards
OVER_USE = 85.0
LABELS = {"cpu_usage": "CPU %", "ram_usage": "RAM %", "gpu_usage": "GPU %",
          "vram_usage": "VRAM %", "disk_usage": "Disk %",
          NETWORK_IN: "Network in (B/s)", NETWORK_OUT: "Network out (B/s)"}


@router.get("/pipeline-metrics")
async def pipeline_metrics(request: Request, viewer: ViewerDep, state: AppStateDep,
                           session: SessionDep, name: str = "", pipeline: str = "",
                           deployment: str = "") -> HTMLResponse:
    names = await services.metrics(session).repository.names(MetricValue)
    spec = None
    if name:
        rows, _ = await services.metrics(session).page(
            MetricValue, MetricFilters(name, pipeline or None, deployment or None, None),
            1, 5000)
        spec = chart_spec([(r.created_at, r.value) for r in rows], name,
                          empty="No value of this metric for this selection.")
    return render(request, "pipeline_metrics.html", names=names, name=name,
                  pipeline=pipeline, deployment=deployment, spec=spec,
                  pipeline_names=[p.name for p, _ in
                                  await services.pipelines(state, session).all()],
                  deployment_names=[d.name for d in
                                    await services.deployments(state, session).all()])


def _window(range_key: str) -> tuple[str, str]:
    span = RANGES.get(range_key, RANGES["1h"])
    end = int(time.time() * 1000)
    return str(end - span * 1000), str(end)


@router.get("/resource-metrics", response_model=None)
async def resource_metrics(request: Request, viewer: ViewerDep, state: AppStateDep,
                           session: SessionDep, range: str = "1h",
                           download: bool = False) -> Response:
    start, end = _window(range)
    result, _ = await services.resources(state, session).get(
        ResourceMetricsQuery(start, end, None))
    if download:
        return Response(to_csv(result), media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition":
                f'attachment; filename="resource-metrics-{start}-{end}.csv"'})
    cards: dict[str, dict[str, Any]] = {}
    charts: dict[str, str] = {}
    for metric in METRIC_NAMES:
        series = result.metrics.get(metric, [])
        for s in series:
            if s.values:
                value = s.values[-1][1]
                over = metric not in (NETWORK_IN, NETWORK_OUT) and value >= OVER_USE
                cards.setdefault(s.worker, {})[metric] = {"value": value, "over": over}
        if series:
            timeline = sorted({t for s in series for t, _ in s.values})
            index = {t: i for i, t in enumerate(timeline)}
            lines = []
            for s in series:
                values: list[float | None] = [None] * len(timeline)
                for t, v in s.values:
                    values[index[t]] = v
                lines.append({"label": s.worker, "values": values})
            charts[metric] = json.dumps({"x": [t / 1000 for t in timeline],
                                         "series": lines})
    return render(request, "resource_metrics.html", cards=cards, charts=charts,
                  labels=LABELS, range=range, ranges=list(RANGES),
                  all_cumulate=ALL_CUMULATE, totals=result.totals)
