"""Resource metrics of an embedded environment, from the sampler's table.

Workers: the machine, named after its hostname (every metric), and each worker process,
named after its execution (CPU and RAM as a share of the machine's, VRAM where there is a
GPU). "All cumulate" is the environment as a whole, i.e. the machine(s): the processes
run on it, so adding them would count them twice. With several machines sampling into one
database it pools them: used over available capacity for RAM, disk and VRAM, the mean for
CPU and GPU, the sum for network."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

from gristmill_platform.resources.repository import (
    HOST,
    Bucket,
    ResourceSampleRepository,
)
from gristmill_platform.resources.shape import (
    ALL_CUMULATE,
    CPU,
    DISK,
    GPU,
    NETWORK_IN,
    NETWORK_OUT,
    RAM,
    VRAM,
    Point,
    ResourceMetrics,
    Series,
    Totals,
)
from gristmill_platform.resources.window import Window


def _percent(used: float | None, total: float | None) -> float | None:
    if used is None or not total:
        return None
    return 100.0 * used / total


def _values(bucket: Bucket) -> dict[str, float | None]:
    return {
        CPU: bucket.cpu_percent,
        RAM: _percent(bucket.ram_used, bucket.ram_total),
        DISK: _percent(bucket.disk_used, bucket.disk_total),
        GPU: bucket.gpu_percent,
        VRAM: _percent(bucket.vram_used, bucket.vram_total),
        NETWORK_IN: bucket.network_in,
        NETWORK_OUT: bucket.network_out,
    }


def _sum(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _cumulate(hosts: list[Bucket]) -> dict[str, float | None]:
    def pooled(used: Callable[[Bucket], float | None],
               total: Callable[[Bucket], float | None]) -> float | None:
        pairs: list[tuple[float, float]] = []
        for bucket in hosts:
            u, t = used(bucket), total(bucket)
            if u is not None and t:
                pairs.append((u, t))
        return _percent(sum(u for u, _ in pairs), sum(t for _, t in pairs)) if pairs else None

    return {
        CPU: _mean(b.cpu_percent for b in hosts),
        RAM: pooled(lambda b: b.ram_used, lambda b: b.ram_total),
        DISK: pooled(lambda b: b.disk_used, lambda b: b.disk_total),
        GPU: _mean(b.gpu_percent for b in hosts),
        VRAM: pooled(lambda b: b.vram_used, lambda b: b.vram_total),
        NETWORK_IN: _sum(b.network_in for b in hosts),
        NETWORK_OUT: _sum(b.network_out for b in hosts),
    }


def metrics_from_buckets(buckets: Iterable[Bucket]) -> dict[str, list[Series]]:
    """Buckets (any order) -> per-metric series, "All cumulate" included. Pure."""
    points: dict[tuple[str, str], list[Point]] = defaultdict(list)
    hosts_at: dict[int, list[Bucket]] = defaultdict(list)
    for bucket in sorted(buckets, key=lambda b: (b.timestamp_ms, b.worker)):
        for name, value in _values(bucket).items():
            if value is not None:
                points[(name, bucket.worker)].append((bucket.timestamp_ms, value))
        if bucket.kind == HOST:
            hosts_at[bucket.timestamp_ms].append(bucket)
    for timestamp in sorted(hosts_at):
        for name, value in _cumulate(hosts_at[timestamp]).items():
            if value is not None:
                points[(name, ALL_CUMULATE)].append((timestamp, value))
    result = ResourceMetrics()
    for (name, worker), values in points.items():
        result.add(name, Series(worker, values))
    return result.metrics


class SampledSource:
    """The ResourceMetricsSource of an embedded environment (one per request)."""

    def __init__(self, repository: ResourceSampleRepository, *, interval_s: float,
                 live_totals: Callable[[], Totals]) -> None:
        self.repository = repository
        self.interval_s = interval_s
        self.live_totals = live_totals

    @property
    def min_step_s(self) -> float:
        return self.interval_s

    async def query(self, window: Window) -> ResourceMetrics:
        metrics = metrics_from_buckets(await self.repository.buckets(window))
        hosts = await self.repository.latest_hosts(window)
        if hosts:
            vram = [h.vram_total_bytes for h in hosts if h.vram_total_bytes]
            totals = Totals(ram_bytes=sum(h.ram_total_bytes or 0 for h in hosts),
                            disk_bytes=sum(h.disk_total_bytes or 0 for h in hosts),
                            vram_bytes=sum(vram) if vram else None)
        else:  # nothing sampled in the period: the machine as it is now
            totals = self.live_totals()
        return ResourceMetrics(metrics=metrics, totals=totals)
