"""The Prometheus adapter against a real Prometheus server scraping a real node exporter
(this machine) and a second, synthetic node with two GPUs (node exporter and DCGM
exporter metric names, served by the test): per-node series, pooled "All cumulate",
totals; then GET /resource-metrics of an environment configured for Prometheus.

Needs Debian's ``prometheus`` and ``prometheus-node-exporter`` (scripts/setup.sh installs
them as root); skipped with that advice otherwise."""

from __future__ import annotations

import asyncio
import http.server
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from gristmill_platform.resources.prometheus import PrometheusSource, PrometheusUnavailable
from gristmill_platform.resources.shape import ALL_CUMULATE, ResourceMetrics, to_json
from gristmill_platform.resources.window import Window
from tests.conftest import free_port, start_environment

PROMETHEUS = shutil.which("prometheus")
NODE_EXPORTER = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None or NODE_EXPORTER is None,
    reason="needs Prometheus and its node exporter: run scripts/setup.sh as root, or "
           "`apt-get install -y prometheus prometheus-node-exporter` (Debian/Ubuntu)")

GIB = 2**30
MIB = 2**20
FAKE_NODE = "gpu-node-1"
# the synthetic node: 2 CPUs 25 % busy, RAM 25 % used of 8 GiB, disk 60 % of 100 GiB,
# 1000 B/s in, 500 B/s out; GPUs at 40 % and 60 %, each 1 GiB used of 4 GiB
FAKE = {"ram_total": 8 * GIB, "ram_avail": 6 * GIB, "disk_size": 100 * GIB,
        "disk_avail": 40 * GIB, "rx": 1000.0, "tx": 500.0}


def fake_exposition(elapsed_s: float) -> str:
    idle = 0.75 * elapsed_s
    lines = [
        f'node_uname_info{{nodename="{FAKE_NODE}",sysname="Linux"}} 1',
        *(f'node_cpu_seconds_total{{cpu="{c}",mode="{m}"}} {v}'
          for c in ("0", "1")
          for m, v in (("idle", 1000 + idle), ("user", 500 + 0.25 * elapsed_s))),
        f"node_memory_MemTotal_bytes {FAKE['ram_total']}",
        f"node_memory_MemAvailable_bytes {FAKE['ram_avail']}",
        f'node_filesystem_size_bytes{{mountpoint="/",fstype="ext4",device="/dev/x"}} '
        f"{FAKE['disk_size']}",
        f'node_filesystem_avail_bytes{{mountpoint="/",fstype="ext4",device="/dev/x"}} '
        f"{FAKE['disk_avail']}",
        f'node_filesystem_size_bytes{{mountpoint="/boot",fstype="ext4",device="/dev/y"}} {GIB}',
        f'node_network_receive_bytes_total{{device="eth0"}} {FAKE["rx"] * elapsed_s}',
        f'node_network_transmit_bytes_total{{device="eth0"}} {FAKE["tx"] * elapsed_s}',
        # pod plumbing: its bytes also crossed eth0, so they must not count twice
        f'node_network_receive_bytes_total{{device="veth1a2b"}} {1e6 * elapsed_s}',
        f'node_network_receive_bytes_total{{device="lo"}} {1e6 * elapsed_s}',
    ]
    for gpu, util in (("0", 40), ("1", 60)):
        labels = f'gpu="{gpu}",UUID="GPU-{gpu}",modelName="NVIDIA A10G",Hostname="{FAKE_NODE}"'
        lines += [f"DCGM_FI_DEV_GPU_UTIL{{{labels}}} {util}",
                  f"DCGM_FI_DEV_FB_USED{{{labels}}} 1024",
                  f"DCGM_FI_DEV_FB_FREE{{{labels}}} 3072"]
    return "\n".join(lines) + "\n"


class _FakeExporter(http.server.BaseHTTPRequestHandler):
    started = time.monotonic()

    def do_GET(self) -> None:
        body = fake_exposition(time.monotonic() - self.started).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


@dataclass
class Stack:
    url: str
    node_exporter: str
    real_node: str


def _wait_for(url: str, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start")


def _query(url: str, promql: str) -> list[dict[str, object]]:
    payload = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5).json()
    assert payload["status"] == "success", payload
    return payload["data"]["result"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("prometheus")
    node_port, prom_port = free_port(), free_port()
    fake = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeExporter)
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    fake_port = fake.server_address[1]
    config = root / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        f"  - job_name: node\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{node_port}']\n"
        f"  - job_name: synthetic-gpu-node\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{fake_port}']\n")
    logs = (root / "node-exporter.log").open("wb"), (root / "prometheus.log").open("wb")
    processes = []
    try:
        exporter = subprocess.Popen(
            [str(NODE_EXPORTER), f"--web.listen-address=127.0.0.1:{node_port}",
             "--collector.disable-defaults", "--collector.cpu", "--collector.meminfo",
             "--collector.filesystem", "--collector.netdev", "--collector.uname"],
            stdout=logs[0], stderr=subprocess.STDOUT)
        processes.append(exporter)
        _wait_for(f"http://127.0.0.1:{node_port}/metrics", exporter, "node exporter")
        prometheus = subprocess.Popen(
            [str(PROMETHEUS), f"--config.file={config}",
             f"--storage.tsdb.path={root / 'data'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=logs[1], stderr=subprocess.STDOUT)
        processes.append(prometheus)
        url = f"http://127.0.0.1:{prom_port}"
        _wait_for(f"{url}/-/ready", prometheus, "Prometheus")
        # Scrapes of both targets cover every rate window of the tests' periods (6 s,
        # rates over 4 s): a rate whose window starts before a series does reads low.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            counts = _query(url, "count_over_time(node_uname_info[1m])")
            if len(counts) == 2 and all(float(c["value"][1]) >= 14  # type: ignore[index]
                                        for c in counts):
                break
            time.sleep(0.5)
        else:
            raise RuntimeError("Prometheus did not scrape both targets")
        names = {str(r["metric"]["nodename"])  # type: ignore[index]
                 for r in _query(url, "node_uname_info")}
        real = (names - {FAKE_NODE}).pop()
        yield Stack(url, f"127.0.0.1:{node_port}", real)
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        fake.shutdown()
        for log in logs:
            log.close()


def _window(span_s: int = 6, step_ms: int = 1000) -> Window:
    end = int(time.time() * 1000)
    return Window(end - span_s * 1000, end, step_ms)


def _query_source(stack: Stack, window: Window) -> ResourceMetrics:
    source = PrometheusSource(stack.url, scrape_interval_s=1.0, timeout_s=10)
    return asyncio.run(source.query(window))


def _by_worker(result: ResourceMetrics, metric: str) -> dict[str, list[float]]:
    return {s.worker: [v for _, v in s.values] for s in result.metrics[metric]}


def test_per_node_series_and_pooled_cumulate(stack: Stack) -> None:
    window = _window()
    result = _query_source(stack, window)
    for metric in ("cpu_usage", "ram_usage", "disk_usage", "network_input_usage",
                   "network_output_usage"):
        series = _by_worker(result, metric)
        assert set(series) == {stack.real_node, FAKE_NODE, ALL_CUMULATE}, metric
    # points at start + k*step, in epoch ms
    for series in result.metrics["ram_usage"]:
        assert all((t - window.start_ms) % window.step_ms == 0 for t, _ in series.values)
        assert all(window.start_ms <= t <= window.end_ms for t, _ in series.values)

    fake = {m: _by_worker(result, m)[FAKE_NODE] for m in result.metrics
            if FAKE_NODE in _by_worker(result, m)}
    assert fake["cpu_usage"] == pytest.approx([25.0] * len(fake["cpu_usage"]), abs=2)
    assert fake["ram_usage"] == pytest.approx([25.0] * len(fake["ram_usage"]))
    assert fake["disk_usage"] == pytest.approx([60.0] * len(fake["disk_usage"]))
    # eth0 only: veth and lo traffic left out
    assert fake["network_input_usage"] == pytest.approx(
        [1000.0] * len(fake["network_input_usage"]), rel=0.05)
    assert fake["network_output_usage"] == pytest.approx(
        [500.0] * len(fake["network_output_usage"]), rel=0.05)
    assert fake["gpu_usage"] == pytest.approx([50.0] * len(fake["gpu_usage"]))
    assert fake["vram_usage"] == pytest.approx([25.0] * len(fake["vram_usage"]))

    real = {m: _by_worker(result, m)[stack.real_node] for m in
            ("cpu_usage", "ram_usage", "disk_usage", "network_input_usage")}
    assert all(0 <= v <= 100 for m in ("cpu_usage", "ram_usage", "disk_usage")
               for v in real[m])
    assert all(v >= 0 for v in real["network_input_usage"])
    # the GPUs are only on the synthetic node: no series for this machine
    assert set(_by_worker(result, "gpu_usage")) == {FAKE_NODE, ALL_CUMULATE}

    # "All cumulate" pools the nodes: a capacity-weighted mean for usages, a sum for traffic
    cumulate = {m: _by_worker(result, m)[ALL_CUMULATE] for m in result.metrics}
    for metric in ("ram_usage", "disk_usage"):
        for both, one, other in zip(cumulate[metric], real[metric], fake[metric],
                                    strict=False):
            assert min(one, other) - 1e-9 <= both <= max(one, other) + 1e-9
    for both, one in zip(cumulate["network_input_usage"], real["network_input_usage"],
                         strict=False):
        assert both == pytest.approx(one + FAKE["rx"], rel=0.05, abs=50)
    assert cumulate["gpu_usage"] == pytest.approx([50.0] * len(cumulate["gpu_usage"]))
    assert cumulate["vram_usage"] == pytest.approx([25.0] * len(cumulate["vram_usage"]))


def test_totals_add_up_the_nodes(stack: Stack) -> None:
    body = to_json(_query_source(stack, _window()))
    additional = body["additional_data"]
    assert additional["total_ram"] == psutil.virtual_memory().total + FAKE["ram_total"]
    # the real node's root filesystem as node exporter sees it (statvfs of /), plus the
    # synthetic one's "/" (its /boot does not count)
    root = _query(stack.url, f'node_filesystem_size_bytes{{mountpoint="/",'
                             f'instance="{stack.node_exporter}"}}')
    assert additional["total_disk"] == int(float(root[0]["value"][1])) + FAKE["disk_size"]  # type: ignore[index]
    assert additional["total_vram"] == 2 * 4096 * MIB


def test_a_period_before_any_scrape_is_empty(stack: Stack) -> None:
    end = int(time.time() * 1000) - 3 * 86_400_000
    result = _query_source(stack, Window(end - 60_000, end, 15_000))
    assert all(series == [] for series in result.metrics.values())


def test_unreachable_prometheus_is_a_502() -> None:
    source = PrometheusSource(f"http://127.0.0.1:{free_port()}", scrape_interval_s=1,
                              timeout_s=2)
    with pytest.raises(PrometheusUnavailable) as caught:
        asyncio.run(source.query(_window()))
    assert caught.value.status_code == 502 and "unreachable" in caught.value.message


def test_not_a_prometheus_is_a_502(stack: Stack) -> None:
    # node exporter's port answers HTTP, but not Prometheus' API
    source = PrometheusSource(f"http://{stack.node_exporter}", scrape_interval_s=1)
    with pytest.raises(PrometheusUnavailable, match="without JSON"):
        asyncio.run(source.query(_window()))


def test_pod_usage_is_none_without_cadvisor(stack: Stack) -> None:
    source = PrometheusSource(stack.url, scrape_interval_s=1)
    now = time.time()
    assert asyncio.run(source.pod_usage("workers", "no-such-pod", now - 10, now)) is None


def test_route_of_an_environment_on_prometheus(stack: Stack, tmp_path: Path) -> None:
    server, env, _ = start_environment(
        tmp_path, f"sqlite:///{tmp_path / 'gristmill.sqlite3'}",
        resource_metrics_backend="prometheus", prometheus_url=stack.url,
        prometheus_scrape_interval_s=1.0)
    try:
        with env.client() as api:
            end = int(time.time() * 1000)
            response = api.get("/resource-metrics",
                               params={"start": end - 10_000, "end": end, "download": "False"})
            assert response.status_code == 200, response.text
            body = response.json()
            workers = {s["metric"]["worker"] for s in body["metrics"]["cpu_usage"]}
            assert workers == {stack.real_node, FAKE_NODE, ALL_CUMULATE}
            assert body["additional_data"]["total_vram"] == 2 * 4096 * MIB
            csv_response = api.get("/resource-metrics", params={
                "start": end - 10_000, "end": end, "download": "true"})
            assert csv_response.headers["content-type"].startswith("text/csv")
            assert f",{FAKE_NODE}," in csv_response.text
    finally:
        server.stop()

