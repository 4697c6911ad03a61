"""The per-variant comparison on a deployment's read (docs/rollout.md): for each pipeline
that answered (and each shadow), its calls, failure rate, latency percentiles and
validation failures. Pure: assembled from the figures the database computes over the
deployment's recent executions (comparison_repository.py)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# the executions compared: the most recent ones, so a read stays cheap on a busy endpoint
WINDOW = 10_000
PERCENTILES = (50, 95)

Variant = tuple[str, bool]  # (pipeline name, shadow)


@dataclass(frozen=True)
class Counts:
    calls: int
    ended: int
    failed: int  # among the ended


def rank(count: int, q: int) -> int:
    """The 1-based nearest rank of percentile ``q`` among ``count`` sorted values: the one
    the database picks (comparison_repository.py does the same integer arithmetic)."""
    return max(1, (count * q + 99) // 100)


def percentile(sorted_values: Sequence[float], q: int) -> float | None:
    """Nearest-rank percentile of values sorted ascending."""
    if not sorted_values:
        return None
    return sorted_values[rank(len(sorted_values), q) - 1]


def assemble(counts: Mapping[Variant, Counts],
             latencies: Mapping[Variant, Mapping[int, float]],
             failures: Iterable[tuple[Variant, Sequence[str]]]) -> list[dict[str, Any]]:
    """One entry per variant, in (pipeline, shadow) order. ``latencies`` holds each
    variant's latency percentiles in ms (by percentile), ``failures`` the validation
    failures of each execution that had some."""
    validation: dict[Variant, dict[str, int]] = {}
    for variant, names in failures:
        per = validation.setdefault(variant, {})
        for name in names:
            per[name] = per.get(name, 0) + 1
    variants = []
    for (pipeline, shadow), figures in sorted(counts.items()):
        at = latencies.get((pipeline, shadow), {})
        p50, p95 = at.get(50), at.get(95)
        variants.append({
            "pipeline_name": pipeline, "shadow": shadow, "calls": figures.calls,
            "ended": figures.ended,
            "failure_rate": round(figures.failed / figures.ended, 4) if figures.ended else None,
            "latency_ms_p50": round(p50, 2) if p50 is not None else None,
            "latency_ms_p95": round(p95, 2) if p95 is not None else None,
            "validation_failures": validation.get((pipeline, shadow), {}),
        })
    return variants


def validation_counts(variants: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Per validation, how many executions violated it (all variants)."""
    counts: dict[str, int] = {}
    for variant in variants:
        for name, count in variant["validation_failures"].items():
            counts[name] = counts.get(name, 0) + count
    return counts
