"""GET /resource-metrics of an embedded environment (sampling every 0.2 s), and the
resource usage recorded on executions, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import socket
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import psutil
import pytest

from gristmill_platform.resources.shape import ALL_CUMULATE, CSV_HEADER, METRIC_NAMES
from tests.conftest import (
    DatabaseUnderTest,
    GristmillEnv,
    _create_postgres_database,
    _drop_postgres_database,
    _postgres_admin_url,
    start_environment,
)
from tests.platform.stepkit import archive_of, post_step, step_form, write_folder
from tests.platform.test_auth import assert_error
from tests.platform.test_runs import run_and_wait

MIB = 2**20
HOST = socket.gethostname()
BUSY_STEP = '''
import os
import time


def busy(text: str) -> dict:
    """Holds 200 MiB and burns 1.5 s of CPU (CPU time, whatever the machine's load)."""
    block = b"x" * (200 * 1024 * 1024)
    while time.process_time() < 1.5:
        sum(range(10_000))
    return {"text": f"{text} {len(block)}"}


def die(text: str) -> dict:
    block = b"y" * (64 * 1024 * 1024)
    # 0.3 s of CPU with the block held, counted from here: the process's own clock also
    # counts its start-up, which on a loaded machine left no time for a reading
    held_from = time.process_time()
    while time.process_time() - held_from < 0.3:
        sum(range(10_000))
    os.kill(os.getpid(), 9)
    return {"text": str(len(block))}
'''


@pytest.fixture(scope="module")
def metrics_env(database: DatabaseUnderTest, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[GristmillEnv]:
    """Its own environment: a short sample interval, and a database of its own."""
    data_dir = tmp_path_factory.mktemp(f"resources-{database.kind}")
    admin, name = None, None
    if database.kind == "sqlite":
        url = f"sqlite:///{data_dir / 'gristmill.sqlite3'}"
    else:
        admin = _postgres_admin_url()
        assert admin is not None
        name, url = _create_postgres_database(admin)
    server, env, _ = start_environment(data_dir, url, resource_sample_interval_s=0.2)
    env.database = database
    try:
        yield env
    finally:
        server.stop()
        if admin is not None and name is not None:
            _drop_postgres_database(admin, name)


@pytest.fixture
def api(metrics_env: GristmillEnv) -> Iterator[httpx.Client]:
    with metrics_env.client() as client:
        yield client


def now_ms() -> int:
    return int(time.time() * 1000)


def get_metrics(api: httpx.Client, start: int, end: int, download: str = "False"
                ) -> httpx.Response:
    return api.get("/resource-metrics", params={"start": start, "end": end,
                                                "download": download})


def wait_for(check: Any, what: str, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def sampled_body(api: httpx.Client, points: int = 4) -> tuple[dict[str, Any], int, int]:
    """A body with at least ``points`` host points over the last 30 s."""
    def check() -> tuple[dict[str, Any], int, int] | None:
        end = now_ms()
        start = end - 30_000
        response = get_metrics(api, start, end)
        assert response.status_code == 200, response.text
        body = response.json()
        hosts = [s for s in body["metrics"]["ram_usage"] if s["metric"]["worker"] == HOST]
        return (body, start, end) if hosts and len(hosts[0]["values"]) >= points else None

    return wait_for(check, "samples of this machine")  # type: ignore[no-any-return]


def series_of(body: dict[str, Any], metric: str) -> dict[str, list[list[float]]]:
    return {s["metric"]["worker"]: s["values"] for s in body["metrics"][metric]}


def test_json_is_the_documented_shape(api: httpx.Client, metrics_env: GristmillEnv) -> None:
    body, start, end = sampled_body(api)
    assert list(body) == ["metrics", "additional_data"]
    assert list(body["metrics"]) == list(METRIC_NAMES)
    for metric, series in body["metrics"].items():
        for item in series:
            assert set(item) == {"metric", "values"}, metric
            assert set(item["metric"]) == {"worker"}, metric
            for timestamp, value in item["values"]:
                assert isinstance(timestamp, int) and isinstance(value, float)
                # epoch ms at start + k*step (1 s for 30 s sampled every 0.2 s)
                assert start <= timestamp <= end and (timestamp - start) % 1000 == 0
    for metric in ("cpu_usage", "ram_usage", "disk_usage", "network_input_usage",
                   "network_output_usage"):
        workers = [s["metric"]["worker"] for s in body["metrics"][metric]]
        assert workers[0] == HOST and workers[-1] == ALL_CUMULATE, (metric, workers)
        # one machine: the environment as a whole is that machine
        series = series_of(body, metric)
        assert series[ALL_CUMULATE] == series[HOST]
    values = [v for m in ("cpu_usage", "ram_usage", "disk_usage")
              for _, v in series_of(body, m)[HOST]]
    assert all(0 <= v <= 100 for v in values)
    assert all(v >= 0 for _, v in series_of(body, "network_input_usage")[HOST])
    # this machine has no NVIDIA GPU: no GPU series, no total_vram
    assert body["metrics"]["gpu_usage"] == [] and body["metrics"]["vram_usage"] == []
    assert body["additional_data"] == {
        "total_ram": psutil.virtual_memory().total,
        "total_disk": psutil.disk_usage(str(metrics_env.data_dir)).total}


def test_ram_usage_matches_the_machine(api: httpx.Client) -> None:
    body, _, _ = sampled_body(api)
    latest = series_of(body, "ram_usage")[HOST][-1][1]
    memory = psutil.virtual_memory()
    assert latest == pytest.approx(100 * (memory.total - memory.available) / memory.total,
                                   abs=10)


def test_a_period_without_samples_is_empty_with_totals(api: httpx.Client) -> None:
    end = now_ms() - 30 * 86_400_000
    response = get_metrics(api, end - 3_600_000, end)
    assert response.status_code == 200
    body = response.json()
    assert body["metrics"] == {name: [] for name in METRIC_NAMES}
    assert body["additional_data"]["total_ram"] == psutil.virtual_memory().total


def test_csv_download(api: httpx.Client) -> None:
    sampled_body(api)
    end = now_ms()
    response = get_metrics(api, end - 30_000, end, download="True")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == (
        f'attachment; filename="resource-metrics-{end - 30_000}-{end}.csv"')
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert response.text.splitlines()[0] == ",".join(CSV_HEADER)
    assert {r["worker"] for r in rows} >= {HOST, ALL_CUMULATE}
    host_rows = [r for r in rows if r["worker"] == HOST]
    assert all(r["timestamp"].endswith("Z") and r["cpu_usage_percent"] != ""
               and r["gpu_usage_percent"] == "" for r in host_rows[1:])
    assert [int(r["timestamp_ms"]) for r in rows] == sorted(int(r["timestamp_ms"]) for r in rows)
    # booleans in any case
    lower = get_metrics(api, end - 30_000, end, download="true")
    assert lower.headers["content-type"].startswith("text/csv")
    assert get_metrics(api, end - 30_000, end, download="FALSE").json()["metrics"]


@pytest.mark.parametrize(("params", "fragment"), [
    ({}, "Missing query parameter 'start'"),
    ({"start": 1}, "Missing query parameter 'end'"),
    ({"start": "yesterday", "end": 2}, "'start' must be an integer"),
    ({"start": 1, "end": "2.5"}, "'end' must be an integer"),
    ({"start": -5, "end": 2}, "out of range"),
    ({"start": 10, "end": 10}, "must be before 'end'"),
    ({"start": 20, "end": 10}, "must be before 'end'"),
    ({"start": 0, "end": 32 * 86_400_000}, "at most 31 days"),
    ({"start": 1, "end": 2, "download": "maybe"}, "must be True or False"),
])
def test_rejections(api: httpx.Client, params: dict[str, Any], fragment: str) -> None:
    body = assert_error(api.get("/resource-metrics", params=params), 400, fragment)
    assert body["name"] == "BadRequest"


def test_needs_a_token(metrics_env: GristmillEnv) -> None:
    end = now_ms()
    response = httpx.get(f"{metrics_env.url}/api/v1/resource-metrics",
                         params={"start": end - 1000, "end": end})
    assert_error(response, 401, "Authorization")


def test_craft_ai_sdk_client(metrics_env: GristmillEnv, api: httpx.Client,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CRAFT_AI_SDK_TOKEN", "CRAFT_AI_ENVIRONMENT_URL", "CRAFT_AI_CONTROL_URL"):
        monkeypatch.delenv(name, raising=False)
    from craft_ai_sdk import CraftAiSdk

    sampled_body(api)
    sdk = CraftAiSdk(sdk_token=metrics_env.sdk_token, environment_url=metrics_env.url,
                     control_url=metrics_env.url, verbose_log=False)
    end = datetime.now()
    result = sdk.get_resource_metrics(end - timedelta(seconds=30), end)
    assert set(result) == {"metrics", "additional_data"}
    assert ALL_CUMULATE in {s["metric"]["worker"] for s in result["metrics"]["cpu_usage"]}
    raw = sdk.get_resource_metrics(end - timedelta(seconds=30), end, csv=True)
    assert isinstance(raw, bytes)
    assert raw.decode().startswith("timestamp,timestamp_ms,worker,cpu_usage_percent")


# -- per-execution usage ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def busy_pipeline(metrics_env: GristmillEnv, tmp_path_factory: pytest.TempPathFactory
                  ) -> str:
    archive = archive_of(write_folder(tmp_path_factory.mktemp("busy"),
                                      {"src/steps.py": BUSY_STEP}))
    name = f"busy-{metrics_env.database.kind}"
    with metrics_env.client() as api:
        for function in ("busy", "die"):
            response = post_step(api, step_form(
                f"{name}-{function}" if function == "die" else name,
                function_path="src/steps.py", function_name=function,
                inputs=[{"name": "text", "data_type": "string"}],
                outputs=[{"name": "text", "data_type": "string"}],
                name_field="pipeline_name"), archive, route="/pipelines")
            assert response.status_code == 201, response.text
    return name


def recorded_usage(api: httpx.Client, execution_id: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        execution = api.get(f"/executions/{execution_id}").json()
        usage: dict[str, Any] | None = execution.get("resource_usage")
        return usage

    return wait_for(check, f"the resource usage of {execution_id}")  # type: ignore[no-any-return]


def test_usage_is_recorded_on_the_execution(api: httpx.Client, busy_pipeline: str) -> None:
    execution_id, result = run_and_wait(api, busy_pipeline, {"text": "go"})
    assert result.status_code == 200, result.text
    usage = recorded_usage(api, execution_id)
    assert set(usage) == {"cpu_time_s", "peak_memory_bytes", "gpu_memory_bytes"}
    # the step burnt 1.5 s of CPU time; readings end at most a quarter of the run early
    assert 1.0 <= usage["cpu_time_s"] <= 30
    assert usage["peak_memory_bytes"] >= 200 * MIB
    assert usage["gpu_memory_bytes"] is None  # no GPU here

    # ... and the worker process was a worker of the resource metrics, named after it
    end = now_ms()
    body = get_metrics(api, end - 60_000, end).json()
    ram = series_of(body, "ram_usage")
    assert execution_id in ram
    total = psutil.virtual_memory().total
    assert max(v for _, v in ram[execution_id]) >= 100 * 150 * MIB / total
    assert execution_id in series_of(body, "cpu_usage")
    # it is not added to "All cumulate" (the machine's series already holds it)
    assert series_of(body, "ram_usage")[ALL_CUMULATE] == series_of(body, "ram_usage")[HOST]


def test_usage_of_a_killed_worker(api: httpx.Client, busy_pipeline: str) -> None:
    execution_id, result = run_and_wait(api, f"{busy_pipeline}-die", {"text": "go"})
    assert result.status_code != 200
    usage = recorded_usage(api, execution_id)
    assert usage["peak_memory_bytes"] >= 64 * MIB
    assert usage["cpu_time_s"] > 0


def test_read_only(api: httpx.Client) -> None:
    assert api.post("/resource-metrics").status_code == 405
