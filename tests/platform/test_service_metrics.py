"""The control service's own Prometheus metrics: what is counted, where it is served, and
that it stays private unless configured."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from gristmill_platform.db import migrate
from gristmill_platform.db.engine import create_engine, create_session_factory
from gristmill_platform.db.types import utcnow
from gristmill_platform.telemetry import live
from gristmill_platform.telemetry.live import LiveGauges
from gristmill_platform.telemetry.metrics import HTTP_REQUESTS, Bound
from gristmill_platform.telemetry.sampler import DatabaseSampler, overdue_seconds
from tests.platform import test_upgrades as fill


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Exposition text as {(series name, labels): value}."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_label_children_are_bound_once() -> None:
    made: list[tuple[str, str]] = []

    def make(key: tuple[str, str]) -> object:
        made.append(key)
        return HTTP_REQUESTS.labels(key[0], key[1], "200")

    bound: Bound[tuple[str, str], object] = Bound(make)
    first = bound(("GET", "/x"))
    assert bound(("GET", "/x")) is first
    assert made == [("GET", "/x")]


def test_a_failing_reader_does_not_fail_the_scrape() -> None:
    gauges = LiveGauges()

    def broken() -> live.Reading:
        raise RuntimeError("shutting down")

    gauges.provide(live.JOURNAL_BACKLOG, broken)
    gauges.provide(live.WARM_WORKERS, lambda: {("scorer", "idle"): 2.0})
    families = {f.name: f for f in gauges.collect()}
    assert families["gristmill_journal_backlog"].samples == []
    (sample,) = families["gristmill_warm_workers"].samples
    assert sample.labels == {"deployment": "scorer", "state": "idle"} and sample.value == 2


def test_overdue_is_zero_until_the_due_time_passes() -> None:
    now = utcnow()
    assert overdue_seconds(now, None) == 0
    assert overdue_seconds(now, now + timedelta(seconds=5)) == 0
    assert overdue_seconds(now, now - timedelta(seconds=90)) == 90


def test_sampler_reads_the_queue_running_executions_and_overdue_schedule(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.sqlite3'}"
    migrate.upgrade(url)
    engine = sa.create_engine(url)
    for filler in fill.FILLERS.values():  # a periodic deployment due at fill.NOW
        filler(engine)
    executions = sa.table("executions", *(sa.column(c) for c in (
        "id", "pipeline_name", "step_name", "execution_rule", "status", "deployment_id")),
        sa.column("inputs", sa.JSON()), sa.column("outputs", sa.JSON()),
        sa.column("created_at", fill.UTCDateTime()))
    with engine.begin() as connection:
        # a low-latency endpoint beside the periodic (elastic) deployment of the fillers
        connection.execute(sa.text(
            "INSERT INTO deployments (id, name, pipeline_id, pipeline_name, execution_rule, "
            "mode, is_enabled, status, inputs_mapping, outputs_mapping, "
            "enable_parallel_executions, max_parallel_executions_per_pod, timeout_s, "
            "generation, created_at, updated_at) VALUES ('low', 'fast', :p, 'old-pipeline', "
            "'endpoint', 'low_latency', 1, 'up', '[]', '[]', 1, 4, 60, 1, :t, :t)"),
            {"p": fill.PIPELINE_ID, "t": "2026-01-01 00:00:00.000000"})
        rows = [("e1", "pending", None), ("e2", "pending", fill.DEPLOYMENT_ID),
                ("e3", "pending", "low"), ("e4", "running", None), ("e5", "running", "low")]
        for execution_id, status, deployment in rows:
            connection.execute(sa.insert(executions).values(
                id=execution_id, pipeline_name="old-pipeline", step_name="s",
                execution_rule="run", status=status, deployment_id=deployment, inputs=[],
                outputs=[], created_at=utcnow()))
    engine.dispose()

    async def sample() -> DatabaseSampler:
        async_engine = create_engine(url)
        try:
            sampler = DatabaseSampler(create_session_factory(async_engine), tmp_path)
            await sampler.sample()
            return sampler
        finally:
            await async_engine.dispose()

    sampler = asyncio.run(sample())
    gauges = LiveGauges()
    sampler.install(gauges)
    families = {f.name: {tuple(s.labels.values()): s.value for s in f.samples}
                for f in gauges.collect()}
    # e1 (a run) and e2 (an elastic deployment) wait; e3 waits for a warm worker
    assert families["gristmill_elastic_queue_depth"] == {(): 2}
    assert families["gristmill_executions_running"] == {("elastic",): 1, ("low_latency",): 1}
    assert families["gristmill_scheduler_overdue_seconds"][()] > 300 * 24 * 3600
    assert 0 < families["gristmill_data_dir_free_bytes"][()] <= (
        families["gristmill_data_dir_size_bytes"][()])


MULTIPROCESS_WORKER = """
import sys
from gristmill_platform.telemetry import metrics
for _ in range(int(sys.argv[1])):
    metrics.observe_fast_path(200, 0.002)
metrics.execution_started("elastic", "run")
"""

MULTIPROCESS_SCRAPE = """
from gristmill_platform.settings import Settings
from gristmill_platform.telemetry.exposition import MetricsEndpoint
from gristmill_platform.telemetry.live import LiveGauges
print(MetricsEndpoint(Settings(), LiveGauges()).render().decode())
"""


def test_several_worker_processes_are_summed_in_multiprocess_mode(tmp_path: Path) -> None:
    """PROMETHEUS_MULTIPROC_DIR: what two processes counted, a third one exports."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for calls in ("3", "4"):
        subprocess.run([sys.executable, "-c", MULTIPROCESS_WORKER, calls], env=env,
                       check=True, timeout=120)
    scraped = subprocess.run([sys.executable, "-c", MULTIPROCESS_SCRAPE], env=env,
                             check=True, timeout=120, capture_output=True, text=True).stdout
    values = samples(scraped)
    route = ("route", "/endpoints/{name}")
    assert values[("gristmill_http_requests_total",
                   frozenset({("method", "POST"), route, ("status", "200")}))] == 7
    assert values[("gristmill_http_request_duration_seconds_count",
                   frozenset({("method", "POST"), route}))] == 7
    assert values[("gristmill_executions_started_total",
                   frozenset({("mode", "elastic"), ("trigger", "run")}))] == 2
    # the live gauges are the answering process's own, present even with no value
    assert "gristmill_journal_backlog" in scraped


def test_s3_errors_count_the_stores_faults_not_the_callers() -> None:
    import pytest
    from botocore.exceptions import ClientError, EndpointConnectionError

    from gristmill_platform.datastore import s3calls
    from gristmill_platform.telemetry.metrics import REGISTRY

    def refusing(code: str):  # type: ignore[no-untyped-def]
        def head_object(**_: object) -> None:
            raise ClientError({"Error": {"Code": code, "Message": "no"}}, "HeadObject")
        return head_object

    def unreachable(**_: object) -> None:
        raise EndpointConnectionError(endpoint_url="http://s3.invalid")

    unreachable.__name__ = "list_objects_v2"

    def count(operation: str) -> float:
        return REGISTRY.get_sample_value("gristmill_datastore_errors_total",
                                         {"operation": operation}) or 0.0

    before = count("head_object"), count("list_objects_v2")
    for code in ("NoSuchKey", "AccessDenied"):
        with pytest.raises(s3calls.S3CallError):
            asyncio.run(s3calls.call(refusing(code)))
    with pytest.raises(s3calls.S3Unavailable):
        asyncio.run(s3calls.call(unreachable))
    assert count("head_object") - before[0] == 1  # AccessDenied only
    assert count("list_objects_v2") - before[1] == 1
