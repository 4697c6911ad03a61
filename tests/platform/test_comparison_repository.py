"""The per-variant comparison computed by the database (comparison_repository.py) agrees
with the same figures computed in Python from the rows, on SQLite and PostgreSQL: counts,
failure rates, nearest-rank latency percentiles, validation failures, and the window of
the most recent executions."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from gristmill_platform.db import migrate
from gristmill_platform.db.engine import create_engine, create_session_factory
from gristmill_platform.db.models.executions import Execution
from gristmill_platform.db.urls import sync_url
from gristmill_platform.deployments.comparison import percentile
from gristmill_platform.deployments.comparison_repository import ComparisonRepository
from tests.conftest import DatabaseUnderTest

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _rows(deployment: str, count: int) -> list[dict[str, Any]]:
    rng = random.Random(7)
    rows = []
    for i in range(count):
        pipeline = rng.choice(["champion", "challenger"])
        shadow = pipeline == "challenger" and rng.random() < 0.3
        status = rng.choice(["succeeded"] * 8 + ["failed", "running"])
        created = T0 + timedelta(seconds=i)
        ended = None if status == "running" else created + timedelta(
            milliseconds=rng.randint(1, 5000) + rng.random())
        failures = rng.choice([None, None, None, ["low"], ["low", "high"]])
        rows.append({"id": f"{deployment}-{i:05d}", "pipeline_name": pipeline,
                     "step_name": "s", "deployment_name": deployment,
                     "execution_rule": "endpoint", "status": status, "shadow": shadow,
                     "inputs": [], "outputs": [], "created_at": created, "ended_at": ended,
                     "validation_failures": failures})
    return rows


def _expected(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, bool], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["pipeline_name"], row["shadow"]), []).append(row)
    out = []
    for (pipeline, shadow), members in sorted(groups.items()):
        ended = [r for r in members if r["ended_at"] is not None]
        ms = sorted((r["ended_at"] - r["created_at"]).total_seconds() * 1000 for r in ended)
        failures: dict[str, int] = {}
        for r in members:
            for name in r["validation_failures"] or ():
                failures[name] = failures.get(name, 0) + 1
        out.append({"pipeline_name": pipeline, "shadow": shadow, "calls": len(members),
                    "ended": len(ended),
                    "failure_rate": round(sum(r["status"] == "failed" for r in ended)
                                          / len(ended), 4),
                    "latency_ms_p50": percentile(ms, 50), "latency_ms_p95": percentile(ms, 95),
                    "validation_failures": failures})
    return out


def test_the_database_computes_the_comparison_as_python_would(
        database: DatabaseUnderTest) -> None:
    migrate.upgrade(database.url)
    deployment = f"cmp-{uuid.uuid4().hex[:8]}"
    rows = _rows(deployment, 600)
    engine = sa.create_engine(sync_url(database.url))
    with engine.begin() as connection:
        connection.execute(sa.insert(Execution.__table__), rows)
    engine.dispose()

    async def compute(window: int) -> list[dict[str, Any]]:
        async_engine = create_engine(database.url)
        try:
            async with create_session_factory(async_engine)() as session:
                return await ComparisonRepository(session).variants(deployment, window)
        finally:
            await async_engine.dispose()

    for window, compared in ((10_000, rows), (250, rows[-250:])):
        got = asyncio.run(compute(window))
        expected = _expected(compared)
        assert [(v["pipeline_name"], v["shadow"], v["calls"], v["ended"], v["failure_rate"],
                 v["validation_failures"]) for v in got] == \
            [(v["pipeline_name"], v["shadow"], v["calls"], v["ended"], v["failure_rate"],
              v["validation_failures"]) for v in expected]
        for mine, reference in zip(got, expected, strict=True):
            # to the microsecond on both databases, rounded to 0.01 ms in the read
            for key in ("latency_ms_p50", "latency_ms_p95"):
                assert abs(mine[key] - reference[key]) < 0.01, (key, mine, reference)

    assert asyncio.run(compute(10)) and asyncio.run(compute(10_000)) != []
