"""The per-variant comparison on a deployment's read (docs/rollout.md): for each pipeline
that answered (and each shadow), its calls, failure rate, latency percentiles and
validation failures. Pure: computed from execution rows."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# the executions compared: the most recent ones, so a read stays cheap on a busy endpoint
WINDOW = 10_000


@dataclass(frozen=True)
class Row:
    pipeline_name: str
    shadow: bool
    status: str
    created_at: datetime
    ended_at: datetime | None
    validation_failures: Sequence[str] | None


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of values sorted ascending."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil without floats drifting
    return sorted_values[int(rank) - 1]


def compare(rows: Iterable[Row]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, bool], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.pipeline_name, row.shadow), []).append(row)
    variants = []
    for (pipeline, shadow), members in sorted(groups.items()):
        ended = [r for r in members if r.ended_at is not None]
        failed = sum(1 for r in ended if r.status == "failed")
        latencies = sorted((r.ended_at - r.created_at).total_seconds() * 1000
                           for r in ended if r.ended_at is not None)
        validation: dict[str, int] = {}
        for r in members:
            for name in r.validation_failures or ():
                validation[name] = validation.get(name, 0) + 1
        p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
        variants.append({
            "pipeline_name": pipeline, "shadow": shadow, "calls": len(members),
            "ended": len(ended),
            "failure_rate": round(failed / len(ended), 4) if ended else None,
            "latency_ms_p50": round(p50, 2) if p50 is not None else None,
            "latency_ms_p95": round(p95, 2) if p95 is not None else None,
            "validation_failures": validation,
        })
    return variants


def validation_counts(variants: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Per validation, how many executions violated it (all variants)."""
    counts: dict[str, int] = {}
    for variant in variants:
        for name, count in variant["validation_failures"].items():
            counts[name] = counts.get(name, 0) + count
    return counts
