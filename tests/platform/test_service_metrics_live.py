"""The metrics of a running control service, scraped as Prometheus would: private unless
configured, and counting what happens (requests, executions, builds, data, workers,
schedules)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import GristmillEnv, free_port, start_environment
from tests.platform.stepkit import archive_of, write_folder
from tests.platform.test_auth import assert_error
from tests.platform.test_deployments import fire_now
from tests.platform.test_low_latency import INFO_OUT, TEXT_IN, eventually, low_latency, trigger
from tests.platform.test_low_latency import STEP_CODE as LOW_LATENCY_CODE
from tests.platform.test_runs import STEP_CODE, make_pipeline, outputs_of, run_and_wait
from tests.platform.test_service_metrics import samples

TOKEN = "metrics-token-0123456789abcdef"  # noqa: S105
Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def test_metrics_are_not_public_by_default(gristmill_env: GristmillEnv) -> None:
    response = httpx.get(f"{gristmill_env.url}/metrics")
    assert_error(response, 404, "GRISTMILL_METRICS_TOKEN")


@pytest.fixture(scope="module")
def metered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GristmillEnv, int]]:
    data_dir = tmp_path_factory.mktemp("metered")
    port = free_port()
    server, env, _ = start_environment(
        data_dir, f"sqlite:///{data_dir / 'gristmill.sqlite3'}", metrics_token=TOKEN,
        metrics_port=port)
    try:
        yield env, port
    finally:
        server.stop()


def scrape(env: GristmillEnv) -> Series:
    response = httpx.get(f"{env.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


def value(series: Series, name: str, **labels: str) -> float:
    return series.get((name, frozenset(labels.items())), 0.0)


def test_token_guards_the_main_port_and_the_metrics_port_serves_alone(
        metered: tuple[GristmillEnv, int]) -> None:
    env, port = metered
    assert_error(httpx.get(f"{env.url}/metrics"), 401, "Bearer")
    assert_error(httpx.get(f"{env.url}/metrics", headers={"Authorization": "Bearer nope"}),
                 401, "Bearer")
    own_port = httpx.get(f"http://127.0.0.1:{port}/metrics")
    assert own_port.status_code == 200
    assert "gristmill_http_requests_total" in own_port.text
    assert "gristmill_data_dir_free_bytes" in own_port.text
    assert value(scrape(env), "gristmill_build_info", version=__import__(
        "gristmill_platform").__version__) == 1


def test_requests_are_counted_by_route_template(metered: tuple[GristmillEnv, int]) -> None:
    env, _ = metered
    before = scrape(env)
    with env.client() as api:
        for _ in range(3):
            assert api.get("/executions/no-such-execution").status_code == 404
    httpx.get(f"{env.url}/no/such/path/{time.time()}")
    after = scrape(env)
    route = "/api/v1/executions/{execution_id}"
    assert value(after, "gristmill_http_requests_total", method="GET", route=route,
                 status="404") - value(before, "gristmill_http_requests_total", method="GET",
                                       route=route, status="404") == 3
    assert value(after, "gristmill_http_request_duration_seconds_count", method="GET",
                 route=route) >= 3
    # unknown paths share one series
    assert value(after, "gristmill_http_requests_total", method="GET", route="unmatched",
                 status="404") >= 1
    assert not any("no/such/path" in dict(labels).get("route", "") for _, labels in after)


def _delta(before: Series, after: Series, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_runs_builds_and_data_are_counted(metered: tuple[GristmillEnv, int],
                                          tmp_path: Path) -> None:
    env, _ = metered
    before = scrape(env)
    archive = archive_of(write_folder(tmp_path, {"src/steps.py": STEP_CODE}))
    text_io = [{"name": "text", "data_type": "string"}]
    with env.client() as api:
        make_pipeline(api, archive, "metered-echo", "echo_async", text_io, text_io)
        _, result = run_and_wait(api, "metered-echo", {"text": "x"})
        assert outputs_of(result) == {"text": "X"}
        data = b"d" * 5000
        upload = api.get("/data-store/upload", params={"path_to_object": "m/a.bin"}).json()
        httpx.post(upload["signed_url"], data=upload["fields"], files={"file": ("f", data)})
        signed = api.post("/data-store/download", data={"path_to_object": "m/a.bin"}).json()
        assert httpx.get(signed["signed_url"]).content == data
    after = scrape(env)
    assert _delta(before, after, "gristmill_step_builds_total", outcome="ready") == 1
    assert _delta(before, after, "gristmill_executions_started_total", mode="elastic",
                  trigger="run") == 1
    assert _delta(before, after, "gristmill_executions_ended_total", mode="elastic",
                  status="succeeded", trigger="run") == 1
    # At least this run's: the histogram has no labels, and the service's metrics are the
    # test process's, which other environments share (ServerThread): a periodic deployment
    # an earlier test left in the session's environment counts too when it fires
    # meanwhile (seen once in CI: 5 for this one run).
    assert _delta(before, after, "gristmill_elastic_queue_wait_seconds_count") >= 1
    assert _delta(before, after, "gristmill_datastore_bytes_total", direction="in") >= 5000
    assert _delta(before, after, "gristmill_datastore_bytes_total", direction="out") >= 5000


def test_low_latency_calls_workers_and_journal(metered: tuple[GristmillEnv, int],
                                               tmp_path: Path) -> None:
    env, _ = metered
    archive = archive_of(write_folder(tmp_path, {"src/steps.py": LOW_LATENCY_CODE}))
    with env.client() as api:
        created = low_latency(api, archive, "metered-fast", "crash", TEXT_IN, INFO_OUT)
    token = created["endpoint_token"]
    trigger(env, "metered-fast", token, {"text": "warm"})  # waits for the first worker
    before = scrape(env)
    for i in range(5):
        trigger(env, "metered-fast", token, {"text": f"call {i}"})
    def all_ended() -> Series | None:
        now = scrape(env)
        ended = _delta(before, now, "gristmill_executions_ended_total", mode="low_latency",
                       status="succeeded", trigger="endpoint")
        return now if ended >= 5 else None

    after = eventually(all_ended, "5 ended executions")
    assert _delta(before, after, "gristmill_http_requests_total", method="POST",
                  route="/endpoints/{name}", status="303") == 5
    assert _delta(before, after, "gristmill_executions_started_total", mode="low_latency",
                  trigger="endpoint") == 5
    assert value(after, "gristmill_warm_workers", deployment="metered-fast",
                 state="running") == 1
    assert ("gristmill_journal_backlog", frozenset()) in after
    # a crash: the worker is started again, and counted
    restarts = value(after, "gristmill_worker_restarts_total", deployment="metered-fast")
    trigger(env, "metered-fast", token, {"text": "die"})
    eventually(lambda: value(scrape(env), "gristmill_worker_restarts_total",
                             deployment="metered-fast") > restarts, "a counted restart")


def test_periodic_runs_report_their_lag(metered: tuple[GristmillEnv, int],
                                        tmp_path: Path) -> None:
    env, _ = metered
    archive = archive_of(write_folder(tmp_path, {"src/steps.py": STEP_CODE}))
    text_io = [{"name": "text", "data_type": "string"}]
    with env.client() as api:
        make_pipeline(api, archive, "metered-cron", "echo_async", text_io, text_io)
        created = api.post("/periodic-deployment", json={
            "pipeline_name": "metered-cron", "name": "metered-cron", "mode": "elastic",
            "schedule": "*/5 * * * *",
            "inputs_mapping": [{"pipeline_input_name": "text", "constant_value": "tick"}],
            "outputs_mapping": [{"pipeline_output_name": "text", "is_null": True}]})
        assert created.status_code == 201, created.text
    before = scrape(env)
    fire_now(env, "metered-cron")
    after = scrape(env)
    assert _delta(before, after, "gristmill_scheduler_fires_total",
                  deployment="metered-cron") == 1
    lag: Any = value(after, "gristmill_scheduler_lag_seconds", deployment="metered-cron")
    assert 0 <= lag < 60
    assert ("gristmill_scheduler_overdue_seconds", frozenset()) in after
