"""The documented answer of ``get_resource_metrics``, as data, JSON and CSV.

JSON (craft-ai-sdk 0.50.1 returns it as-is)::

    {"metrics": {"cpu_usage": [{"metric": {"worker": "node-1"},
                                "values": [[1707132918930, 12.5], ...]},
                               ...,
                               {"metric": {"worker": "All cumulate"}, "values": [...]}],
                 "disk_usage": [...], "ram_usage": [...], "vram_usage": [...],
                 "gpu_usage": [...], "network_input_usage": [...],
                 "network_output_usage": [...]},
     "additional_data": {"total_ram": 16616214528, "total_disk": 21462233088}}

Timestamps are epoch milliseconds (as in the documentation's example); usages are percents
(0-100), network usages bytes per second. Every metric key is always present (a list
without GPUs is empty); ``total_vram`` is only given where there is a GPU, as in the
documentation's example of a CPU-only environment.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ALL_CUMULATE = "All cumulate"

CPU = "cpu_usage"
DISK = "disk_usage"
RAM = "ram_usage"
VRAM = "vram_usage"
GPU = "gpu_usage"
NETWORK_IN = "network_input_usage"
NETWORK_OUT = "network_output_usage"
# the documentation's order
METRIC_NAMES: tuple[str, ...] = (CPU, DISK, RAM, VRAM, GPU, NETWORK_IN, NETWORK_OUT)

# CSV: one row per (timestamp, worker); a cell is empty where that worker has no value.
CSV_COLUMNS: tuple[tuple[str, str], ...] = (
    (CPU, "cpu_usage_percent"),
    (RAM, "ram_usage_percent"),
    (DISK, "disk_usage_percent"),
    (GPU, "gpu_usage_percent"),
    (VRAM, "vram_usage_percent"),
    (NETWORK_IN, "network_input_bytes_per_s"),
    (NETWORK_OUT, "network_output_bytes_per_s"),
)
CSV_HEADER: tuple[str, ...] = ("timestamp", "timestamp_ms", "worker",
                               *(column for _, column in CSV_COLUMNS))

Point = tuple[int, float]


@dataclass
class Series:
    worker: str
    values: list[Point]


@dataclass
class Totals:
    ram_bytes: int = 0
    disk_bytes: int = 0
    vram_bytes: int | None = None  # None: no GPU


def _empty() -> dict[str, list[Series]]:
    return {name: [] for name in METRIC_NAMES}


@dataclass
class ResourceMetrics:
    metrics: dict[str, list[Series]] = field(default_factory=_empty)
    totals: Totals = field(default_factory=Totals)

    def add(self, name: str, series: Series) -> None:
        if name not in self.metrics:
            raise KeyError(f"unknown resource metric {name!r}")
        points = [(t, v) for t, v in series.values if math.isfinite(v)]
        if points:
            self.metrics[name].append(Series(series.worker, points))


def order_series(series: list[Series]) -> list[Series]:
    """Workers by name, "All cumulate" last (as in the documentation's example)."""
    return sorted(series, key=lambda s: (s.worker == ALL_CUMULATE, s.worker))


def to_json(result: ResourceMetrics) -> dict[str, Any]:
    additional: dict[str, int] = {"total_ram": int(result.totals.ram_bytes),
                                  "total_disk": int(result.totals.disk_bytes)}
    if result.totals.vram_bytes is not None:
        additional["total_vram"] = int(result.totals.vram_bytes)
    return {
        "metrics": {
            name: [{"metric": {"worker": s.worker}, "values": [[t, v] for t, v in s.values]}
                   for s in order_series(result.metrics.get(name, []))]
            for name in METRIC_NAMES
        },
        "additional_data": additional,
    }


def iso_ms(timestamp_ms: int) -> str:
    moment = datetime.fromtimestamp(timestamp_ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{timestamp_ms % 1000:03d}Z"


def to_csv(result: ResourceMetrics) -> bytes:
    """``timestamp`` (ISO 8601, UTC), ``timestamp_ms`` (epoch ms), ``worker``, then one
    column per metric (see CSV_COLUMNS); rows by time, then worker ("All cumulate" last)."""
    rows: dict[tuple[int, str], dict[str, float]] = {}
    for name, column in CSV_COLUMNS:
        for series in result.metrics.get(name, []):
            for timestamp, value in series.values:
                rows.setdefault((timestamp, series.worker), {})[column] = value
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for (timestamp, worker), cells in sorted(
            rows.items(), key=lambda item: (item[0][0], item[0][1] == ALL_CUMULATE,
                                            item[0][1])):
        writer.writerow([iso_ms(timestamp), timestamp, worker,
                         *(_cell(cells.get(column)) for _, column in CSV_COLUMNS)])
    return buffer.getvalue().encode()


def _cell(value: float | None) -> str:
    return "" if value is None else repr(float(value))
