"""The alerts and the dashboard as files: valid for Prometheus (promtool), and asking only
for metrics the control service exports (compared with its registry, not a list kept by
hand)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from gristmill_infra.monitoring import ALERTS_FILE, ASSETS, alert_rules, dashboard

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package 'prometheus', which "
    "scripts/setup.sh installs when run as root); alert rule checks skipped")

# series Prometheus itself makes, or other exporters of the stack
EXTERNAL = {"up"}
# PromQL words that look like metric names
PROMQL_WORDS = {"sum", "by", "rate", "increase", "histogram_quantile", "max", "min",
                "absent", "le", "bool", "on", "ignoring", "without", "avg", "count"}


def exported_metric_names() -> set[str]:
    """Every series name the control service can expose."""
    from prometheus_client.core import Metric

    from gristmill_platform.telemetry.live import LiveGauges
    from gristmill_platform.telemetry.metrics import REGISTRY

    names: set[str] = set()
    families: list[Metric] = [*REGISTRY.collect(), *LiveGauges().describe()]
    for family in families:
        if family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "sum", "count", "created")}
        else:
            names.add(family.name)
    return names


def _exprs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "expr" and isinstance(item, str):
                yield item
            else:
                yield from _exprs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _exprs(item)


def metric_names_in(expr: str) -> set[str]:
    # drop label matchers, strings and durations, then keep identifiers
    bare = re.sub(r'\{[^}]*\}|"[^"]*"|\[[^\]]*\]', " ", expr)
    bare = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", bare)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare))
    return {w for w in words if w not in PROMQL_WORDS}


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_queries_use_only_exported_metrics(source: str) -> None:
    document = dashboard() if source == "dashboard" else alert_rules()
    exprs = list(_exprs(document))
    assert exprs
    exported = exported_metric_names() | EXTERNAL
    used = set().union(*(metric_names_in(e) for e in exprs))
    assert used - exported == set(), f"{source} asks for metrics nobody exports"
    assert any(name.startswith("gristmill_") for name in used)


def test_name_extraction_sees_what_a_query_asks_for() -> None:
    assert metric_names_in(
        'histogram_quantile(0.9, sum by (le, route) (rate(gristmill_x_bucket{a="b"}[5m])))'
    ) == {"gristmill_x_bucket"}
    assert metric_names_in("up{job=\"j\"} == 0") == {"up"}


def test_dashboard_panels_have_queries_and_unique_ids() -> None:
    board = dashboard()
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len(panels) >= 20
    assert all(p["targets"] and p["title"] for p in panels)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    json.dumps(board)  # serialisable as Grafana loads it


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    assert PROMTOOL is not None
    result = subprocess.run([PROMTOOL, "check", "rules", str(ALERTS_FILE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    assert PROMTOOL is not None
    result = subprocess.run([PROMTOOL, "test", "rules", "gristmill-alerts.test.yaml"],
                            cwd=ASSETS, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
