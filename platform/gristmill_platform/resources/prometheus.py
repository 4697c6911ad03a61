"""Resource metrics of a cluster, read from Prometheus' HTTP API.

Series come from the exporters the infra stack installs (gristmill_infra.monitoring):
node exporter (CPU, RAM, root filesystem, network of every node), NVIDIA's DCGM exporter
(GPU utilisation, frame-buffer memory of GPU nodes) and cAdvisor through the kubelet (one
pod's CPU time and memory: the per-execution usage of Kubernetes workers).

A worker is a node, named by node exporter's ``node_uname_info{nodename}`` (joined on
``instance``, so it works whatever the scrape config calls the target) and by DCGM's
``Hostname`` label. "All cumulate" pools the nodes: used over total capacity for CPU, RAM,
disk and VRAM, the mean over GPUs for GPU utilisation, the sum for network.

PromQL building and the conversion of Prometheus' answers are pure functions (tested
without a server); ``PrometheusSource`` only sends them."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any

import httpx

from gristmill_platform.errors import AppError
from gristmill_platform.resources.probes import VIRTUAL_INTERFACES
from gristmill_platform.resources.shape import (
    ALL_CUMULATE,
    CPU,
    DISK,
    GPU,
    METRIC_NAMES,
    NETWORK_IN,
    NETWORK_OUT,
    RAM,
    VRAM,
    ResourceMetrics,
    Series,
    Totals,
)
from gristmill_platform.resources.usage import usage_document
from gristmill_platform.resources.window import Window

WORKER_LABEL = "nodename"
# the node's root filesystem (node exporter in a pod sees it through --path.rootfs)
ROOT_FS = 'mountpoint="/",fstype!="rootfs"'
PHYSICAL_NICS = f'device!~"{VIRTUAL_INTERFACES.pattern[1:-1]}"'
MIB = 1024 * 1024
# rates span at least this many scrapes, so each window holds two samples or more
RATE_SCRAPES = 4


class PrometheusUnavailable(AppError):
    status_code = 502
    name = "ResourceMetricsUnavailable"


def duration(seconds: float) -> str:
    """A PromQL duration, in whole milliseconds."""
    return f"{max(1, round(seconds * 1000))}ms"


def rate_window_s(step_s: float, scrape_interval_s: float) -> float:
    return max(step_s, RATE_SCRAPES * scrape_interval_s)


def on_node(expr: str) -> str:
    """Give a per-instance node-exporter expression its node's name."""
    return (f"({expr}) * on(instance) group_left({WORKER_LABEL}) "
            f"max by (instance, {WORKER_LABEL}) (node_uname_info)")


def on_gpu_node(expr: str) -> str:
    """Give a DCGM exporter expression its node's name (its Hostname label)."""
    return f'label_replace({expr}, "{WORKER_LABEL}", "$1", "Hostname", "(.+)")'


def metric_queries(rate_window: str) -> dict[str, tuple[str, str]]:
    """metric -> (per-worker PromQL, "All cumulate" PromQL); percent, bytes per second."""
    w, by = rate_window, f"by ({WORKER_LABEL})"
    idle = f'rate(node_cpu_seconds_total{{mode=~"idle|iowait"}}[{w}])'
    cpus = 'node_cpu_seconds_total{mode="idle"}'
    avail, size = f"node_filesystem_avail_bytes{{{ROOT_FS}}}", \
        f"node_filesystem_size_bytes{{{ROOT_FS}}}"
    receive = f"rate(node_network_receive_bytes_total{{{PHYSICAL_NICS}}}[{w}])"
    transmit = f"rate(node_network_transmit_bytes_total{{{PHYSICAL_NICS}}}[{w}])"
    used, framebuffer = "DCGM_FI_DEV_FB_USED", "(DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE)"
    return {
        CPU: (f"100 * (1 - sum {by} ({on_node(idle)}) / count {by} ({on_node(cpus)}))",
              f"100 * (1 - sum({idle}) / count({cpus}))"),
        RAM: (f"100 * (1 - sum {by} ({on_node('node_memory_MemAvailable_bytes')})"
              f" / sum {by} ({on_node('node_memory_MemTotal_bytes')}))",
              "100 * (1 - sum(node_memory_MemAvailable_bytes)"
              " / sum(node_memory_MemTotal_bytes))"),
        DISK: (f"100 * (1 - sum {by} ({on_node(avail)}) / sum {by} ({on_node(size)}))",
               f"100 * (1 - sum({avail}) / sum({size}))"),
        NETWORK_IN: (f"sum {by} ({on_node(receive)})", f"sum({receive})"),
        NETWORK_OUT: (f"sum {by} ({on_node(transmit)})", f"sum({transmit})"),
        GPU: (f"avg {by} ({on_gpu_node('DCGM_FI_DEV_GPU_UTIL')})",
              "avg(DCGM_FI_DEV_GPU_UTIL)"),
        VRAM: (f"100 * sum {by} ({on_gpu_node(used)})"
               f" / sum {by} ({on_gpu_node(framebuffer)})",
               f"100 * sum({used}) / sum({framebuffer})"),
    }


TOTAL_QUERIES: dict[str, str] = {
    "ram": "sum(node_memory_MemTotal_bytes)",
    "disk": f"sum(node_filesystem_size_bytes{{{ROOT_FS}}})",
    "vram": f"sum(DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE) * {MIB}",
}


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def pod_usage_queries(namespace: str, pod: str, lookback_s: float,
                      resolution_s: float) -> dict[str, str]:
    """cAdvisor and DCGM queries for one pod's usage over its life (evaluated at its
    end): CPU seconds, peak working-set memory (bytes), peak GPU memory (bytes)."""
    selector = f"namespace={_quote(namespace)},pod={_quote(pod)}"
    containers = f'{{{selector},container!="",container!="POD"}}'
    window, res = duration(lookback_s), duration(resolution_s)
    return {
        "cpu_time_s": f"sum(max_over_time(container_cpu_usage_seconds_total{containers}"
                      f"[{window}]))",
        "peak_memory_bytes": f"max_over_time(sum(container_memory_working_set_bytes"
                             f"{containers})[{window}:{res}])",
        "gpu_memory_bytes": f"max_over_time(sum(DCGM_FI_DEV_FB_USED{{{selector}}})"
                            f"[{window}:{res}]) * {MIB}",
    }


# -- Prometheus' answers --------------------------------------------------------------------


def _sample(pair: Any) -> tuple[int, float] | None:
    try:
        timestamp, raw = pair
        value = float(raw)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value):
        return None
    return round(float(timestamp) * 1000), value


def series_from_matrix(result: list[dict[str, Any]], worker: str | None = None
                       ) -> list[Series]:
    """A range query's ``data.result`` -> series; each named after its worker label
    (or ``worker`` when given, for the "All cumulate" queries)."""
    found: list[Series] = []
    for item in result:
        labels = item.get("metric") or {}
        name = worker or labels.get(WORKER_LABEL) or labels.get("instance") or "unknown"
        points = [p for p in (_sample(v) for v in item.get("values") or []) if p is not None]
        if points:
            found.append(Series(str(name), points))
    return found


def scalar_from_vector(result: list[dict[str, Any]]) -> float | None:
    """An instant query's ``data.result`` (one aggregated series, or none) -> its value."""
    for item in result:
        sample = _sample(item.get("value"))
        if sample is not None:
            return sample[1]
    return None


def data_of(payload: Any, query: str) -> list[dict[str, Any]]:
    """``data.result`` of a successful answer; PrometheusUnavailable otherwise."""
    if not isinstance(payload, dict):
        raise PrometheusUnavailable("Prometheus answered something that is not its API's JSON")
    if payload.get("status") != "success":
        raise PrometheusUnavailable(
            f"Prometheus rejected a query ({payload.get('errorType', 'error')}: "
            f"{payload.get('error', 'no message')})", additional_data={"query": query})
    data = payload.get("data") or {}
    result = data.get("result")
    return result if isinstance(result, list) else []


def assemble(ranges: dict[str, tuple[list[Series], list[Series]]],
             totals: dict[str, float | None]) -> ResourceMetrics:
    """Per-metric (per-worker series, cumulate series) and the totals -> the answer."""
    result = ResourceMetrics()
    for name in METRIC_NAMES:
        per_worker, cumulate = ranges.get(name, ([], []))
        for series in [*per_worker, *cumulate]:
            result.add(name, series)
    vram = totals.get("vram")
    result.totals = Totals(ram_bytes=round(totals.get("ram") or 0),
                           disk_bytes=round(totals.get("disk") or 0),
                           vram_bytes=round(vram) if vram else None)
    return result


# -- the adapter ----------------------------------------------------------------------------


@dataclass
class PrometheusSource:
    """The ResourceMetricsSource of a cluster environment."""

    url: str
    scrape_interval_s: float = 30.0
    timeout_s: float = 15.0
    transport: httpx.AsyncBaseTransport | None = None

    @property
    def min_step_s(self) -> float:
        return self.scrape_interval_s

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url.rstrip("/"), timeout=self.timeout_s,
                                 transport=self.transport)

    async def _get(self, client: httpx.AsyncClient, path: str, params: dict[str, str]
                   ) -> list[dict[str, Any]]:
        try:
            response = await client.get(path, params=params)
        except httpx.HTTPError as exc:
            raise PrometheusUnavailable(
                f"Prometheus at {self.url} is unreachable: {exc.__class__.__name__}: {exc}"
            ) from exc
        try:
            payload = response.json()
        except ValueError:
            raise PrometheusUnavailable(
                f"Prometheus at {self.url} answered HTTP {response.status_code} without "
                "JSON: is prometheus_url the server's address?") from None
        return data_of(payload, params["query"])

    async def range_query(self, client: httpx.AsyncClient, query: str, window: Window
                          ) -> list[dict[str, Any]]:
        return await self._get(client, "/api/v1/query_range", {
            "query": query, "start": f"{window.start_ms / 1000:.3f}",
            "end": f"{window.end_ms / 1000:.3f}", "step": f"{window.step_ms / 1000:.3f}"})

    async def instant_query(self, client: httpx.AsyncClient, query: str, at_s: float
                            ) -> list[dict[str, Any]]:
        return await self._get(client, "/api/v1/query", {"query": query,
                                                         "time": f"{at_s:.3f}"})

    async def query(self, window: Window) -> ResourceMetrics:
        rate = duration(rate_window_s(window.step_ms / 1000, self.scrape_interval_s))
        queries = metric_queries(rate)
        # the totals now if the period is still running, else at its end
        at_s = min(window.end_ms / 1000, time.time())
        async with self._client() as client:
            names = list(queries)
            ranges = await asyncio.gather(*(
                self.range_query(client, q, window)
                for name in names for q in queries[name]))
            total_names = list(TOTAL_QUERIES)
            total_results = await asyncio.gather(*(
                self.instant_query(client, TOTAL_QUERIES[t], at_s) for t in total_names))
        per_metric = {
            name: (series_from_matrix(ranges[2 * i]),
                   series_from_matrix(ranges[2 * i + 1], worker=ALL_CUMULATE))
            for i, name in enumerate(names)
        }
        totals = {t: scalar_from_vector(r) for t, r in zip(total_names, total_results,
                                                           strict=True)}
        return assemble(per_metric, totals)

    async def pod_usage(self, namespace: str, pod: str, started_s: float, ended_s: float
                        ) -> dict[str, Any] | None:
        """One pod's usage over its life (cAdvisor, DCGM), as Execution.resource_usage;
        None when Prometheus has nothing on it."""
        lookback = max(ended_s - started_s, self.scrape_interval_s) + self.scrape_interval_s
        queries = pod_usage_queries(namespace, pod, lookback, self.scrape_interval_s)
        async with self._client() as client:
            results = await asyncio.gather(*(
                self.instant_query(client, q, ended_s + self.scrape_interval_s)
                for q in queries.values()))
        values = dict(zip(queries, (scalar_from_vector(r) for r in results), strict=True))
        if values["cpu_time_s"] is None and values["peak_memory_bytes"] is None:
            return None
        gpu = values["gpu_memory_bytes"]
        return usage_document(values["cpu_time_s"] or 0.0,
                              round(values["peak_memory_bytes"] or 0),
                              round(gpu) if gpu is not None else None)
