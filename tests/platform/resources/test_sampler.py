"""The embedded sampler's pieces: probes (psutil, /proc, NVML through a stand-in module),
the usage tracker on real processes, the table's bucketing and retention on SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import types
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gristmill_platform.db import migrate
from gristmill_platform.db.engine import create_engine, create_session_factory
from gristmill_platform.db.models.resources import ResourceSample
from gristmill_platform.db.transactions import Transactions
from gristmill_platform.resources import probes
from gristmill_platform.resources.monitor import ResourceMonitor
from gristmill_platform.resources.probes import GpuProbe, HostProbe, read_process
from gristmill_platform.resources.repository import (
    HOST,
    PROCESS,
    Bucket,
    ResourceSampleRepository,
)
from gristmill_platform.resources.sampled import SampledSource, metrics_from_buckets
from gristmill_platform.resources.sampler import ResourceSampler
from gristmill_platform.resources.shape import ALL_CUMULATE, Totals, to_json
from gristmill_platform.resources.usage import UsageTracker
from gristmill_platform.resources.window import Window
from gristmill_platform.settings import Settings
from tests.conftest import _create_postgres_database, _drop_postgres_database, _postgres_admin_url

MIB = 2**20
BURN = """
import sys, time
block = b"x" * ({mib} * 1024 * 1024)
while time.process_time() < {cpu}:
    sum(range(10_000))
sys.stdout.write("done\\n")
"""


# -- buckets to series (pure) ---------------------------------------------------------------


def bucket(worker: str, kind: str, t: int, **values: float | None) -> Bucket:
    fields: dict[str, float | None] = {
        "cpu_percent": None, "ram_used": None, "ram_total": None, "disk_used": None,
        "disk_total": None, "network_in": None, "network_out": None, "gpu_percent": None,
        "vram_used": None, "vram_total": None}
    fields.update(values)
    return Bucket(worker, kind, t, **fields)  # type: ignore[arg-type]


def test_one_machine_is_the_whole_environment() -> None:
    metrics = metrics_from_buckets([
        bucket("exec-1", PROCESS, 2000, cpu_percent=30.0, ram_used=25.0, ram_total=100.0),
        bucket("vm", HOST, 1000, cpu_percent=10.0, ram_used=50.0, ram_total=100.0,
               disk_used=1.0, disk_total=4.0, network_in=5.0, network_out=6.0),
        bucket("vm", HOST, 2000, cpu_percent=40.0, ram_used=75.0, ram_total=100.0,
               disk_used=2.0, disk_total=4.0, network_in=7.0, network_out=8.0),
    ])
    series = {(name, s.worker): s.values for name, items in metrics.items() for s in items}
    assert series[("cpu_usage", "vm")] == [(1000, 10.0), (2000, 40.0)]
    assert series[("cpu_usage", "exec-1")] == [(2000, 30.0)]
    assert series[("ram_usage", "exec-1")] == [(2000, 25.0)]
    assert series[("cpu_usage", ALL_CUMULATE)] == series[("cpu_usage", "vm")]
    assert series[("disk_usage", ALL_CUMULATE)] == [(1000, 25.0), (2000, 50.0)]
    assert series[("network_output_usage", ALL_CUMULATE)] == [(1000, 6.0), (2000, 8.0)]
    # processes have no disk or network of their own
    assert ("disk_usage", "exec-1") not in series
    assert metrics["gpu_usage"] == [] and metrics["vram_usage"] == []


def test_two_machines_are_pooled() -> None:
    metrics = metrics_from_buckets([
        bucket("a", HOST, 1000, cpu_percent=10.0, ram_used=10.0, ram_total=100.0,
               network_in=1.0, gpu_percent=20.0, vram_used=1.0, vram_total=4.0),
        bucket("b", HOST, 1000, cpu_percent=30.0, ram_used=290.0, ram_total=300.0,
               network_in=2.0),
    ])
    cumulate = {name: [s.values for s in items if s.worker == ALL_CUMULATE][0]
                for name, items in metrics.items() if items}
    assert cumulate["cpu_usage"] == [(1000, 20.0)]
    assert cumulate["ram_usage"] == [(1000, 75.0)]  # 300 of 400, not the mean of 10 % and 97 %
    assert cumulate["network_input_usage"] == [(1000, 3.0)]
    assert cumulate["gpu_usage"] == [(1000, 20.0)] and cumulate["vram_usage"] == [(1000, 25.0)]


# -- the table, on both databases -----------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / f'{uuid.uuid4().hex}.sqlite3'}"
        migrate.upgrade(url)
        yield url
        return
    admin = _postgres_admin_url()
    if admin is None:
        pytest.skip("PostgreSQL not reachable; PostgreSQL variant skipped")
    name, url = _create_postgres_database(admin)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        _drop_postgres_database(admin, name)


@pytest.fixture
async def scope(database_url: str) -> AsyncIterator[Any]:
    engine = create_engine(database_url)
    factory = create_session_factory(engine)

    @asynccontextmanager
    async def transaction() -> AsyncIterator[AsyncSession]:
        async with factory() as session, session.begin():
            yield session

    yield transaction
    await engine.dispose()


def host_row(t: int, cpu: float, worker: str = "vm", **extra: Any) -> ResourceSample:
    return ResourceSample(sampled_at_ms=t, worker=worker, kind=HOST, cpu_percent=cpu,
                          ram_used_bytes=extra.get("ram_used", 50), ram_total_bytes=100,
                          disk_used_bytes=1, disk_total_bytes=4,
                          network_in_bytes_per_s=0.0, network_out_bytes_per_s=0.0)


async def test_a_point_holds_the_samples_of_the_step_ending_at_it(scope: Any) -> None:
    start, step = 1_000_000, 1000
    async with scope() as session:
        await ResourceSampleRepository(session).add_all([
            host_row(start - 1000, 99.0),       # (start - step, start] excludes it
            host_row(start - 999, 10.0),        # -> point 0
            host_row(start, 20.0),              # -> point 0
            host_row(start + 1, 30.0),          # -> point 1
            host_row(start + 1000, 50.0),       # -> point 1
            host_row(start + 2500, 70.0),       # -> point 3 (nothing in point 2)
            host_row(start + 3001, 99.0),       # after the last point (end = start + 3000)
        ])
    async with scope() as session:
        buckets = await ResourceSampleRepository(session).buckets(
            Window(start, start + 3000, step))
    assert sorted((b.timestamp_ms - start, b.cpu_percent) for b in buckets) == [
        (0, 15.0), (1000, 40.0), (3000, 70.0)]


async def test_sampled_source_totals(scope: Any) -> None:
    async with scope() as session:
        await ResourceSampleRepository(session).add_all([host_row(5000, 1.0)])
    live = Totals(ram_bytes=1, disk_bytes=2)
    async with scope() as session:
        source = SampledSource(ResourceSampleRepository(session), interval_s=1,
                               live_totals=lambda: live)
        assert source.min_step_s == 1
        sampled = await source.query(Window(4000, 6000, 1000))
        before = await source.query(Window(1000, 3000, 1000))
    assert to_json(sampled)["additional_data"] == {"total_ram": 100, "total_disk": 4}
    # nothing sampled in the period: the machine as it is now
    assert to_json(before)["additional_data"] == {"total_ram": 1, "total_disk": 2}
    assert to_json(sampled)["metrics"]["ram_usage"][0]["values"] == [[5000, 50.0]]


async def test_sampler_writes_rows_and_drops_expired_ones(scope: Any, tmp_path: Path) -> None:
    sampler = ResourceSampler(session_scope=scope, host_name="the-host",
                              probe=HostProbe(tmp_path), tracker=None, interval_s=0.1,
                              retention_s=60)
    async with scope() as session:
        await ResourceSampleRepository(session).add_all([host_row(1000, 1.0, "old")])
    rows = await sampler.tick()
    await asyncio.sleep(0.1)  # let the CPU counters move (10 ms ticks)
    rows += await sampler.tick()
    assert [r.worker for r in rows] == ["the-host", "the-host"]
    # a rate needs two readings (the running task makes one before its first tick)
    assert rows[0].cpu_percent is None
    assert rows[1].cpu_percent is not None and 0 <= rows[1].cpu_percent <= 100
    assert rows[0].ram_total_bytes == psutil.virtual_memory().total
    assert rows[0].disk_total_bytes == psutil.disk_usage(str(tmp_path)).total
    async with scope() as session:
        workers = (await session.execute(select(ResourceSample.worker))).scalars().all()
        assert sorted(workers) == ["the-host", "the-host"]  # "old" was past the retention
        assert (await session.execute(select(func.count()).select_from(ResourceSample))
                ).scalar_one() == 2


async def test_sampler_task_runs_until_shutdown(scope: Any, tmp_path: Path) -> None:
    sampler = ResourceSampler(session_scope=scope, host_name="h", probe=HostProbe(tmp_path),
                              tracker=None, interval_s=0.05, retention_s=3600)
    sampler.start()
    try:
        for _ in range(400):
            if sampler.ticks >= 3:
                break
            await asyncio.sleep(0.05)
    finally:
        await sampler.shutdown()
    assert sampler.ticks >= 3
    ticks = sampler.ticks
    await asyncio.sleep(0.2)
    assert sampler.ticks == ticks


# -- usage of real processes ----------------------------------------------------------------


async def spawn_burner(mib: int, cpu_s: float) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", BURN.format(mib=mib, cpu=cpu_s),
        stdout=asyncio.subprocess.PIPE)


async def test_tracker_records_cpu_time_and_peak_memory() -> None:
    recorded: dict[str, dict[str, Any]] = {}

    async def record(execution_id: str, usage: dict[str, Any]) -> None:
        recorded[execution_id] = usage

    tracker = UsageTracker(record)
    tracker.start()
    try:
        process = await spawn_burner(mib=120, cpu_s=0.8)
        tracker.worker_started("exec-1", process.pid)
        assert [label for label, _ in tracker.running()] == ["exec-1"]
        assert process.stdout is not None
        await process.stdout.read()
        tracker.worker_exiting("exec-1")
        await process.wait()
        await tracker.worker_exited("exec-1")
    finally:
        await tracker.shutdown()
    usage = recorded["exec-1"]
    assert usage["peak_memory_bytes"] >= 120 * MIB
    # 0.8 s burnt: readings come at most a quarter of the run before its end
    assert 0.5 <= usage["cpu_time_s"] <= 10
    assert usage["gpu_memory_bytes"] is None
    assert tracker.running() == []


async def test_sampler_reads_workers_and_their_children(scope: Any, tmp_path: Path) -> None:
    async def record(execution_id: str, usage: dict[str, Any]) -> None:
        return None

    tracker = UsageTracker(record)
    # a worker whose step starts a child process holding memory of its own
    code = (f"import subprocess, sys\n"
            f"child = subprocess.Popen([sys.executable, '-c', {BURN.format(mib=80, cpu=0.2)!r}"
            f" + 'import time; time.sleep(60)'], stdout=subprocess.DEVNULL)\n"
            "sys.stdin.read()\nchild.kill()\n")
    worker = await asyncio.create_subprocess_exec(sys.executable, "-c", code,
                                                  stdin=asyncio.subprocess.PIPE)
    tracker.worker_started("exec-2", worker.pid)
    sampler = ResourceSampler(session_scope=scope, host_name="h", probe=HostProbe(tmp_path),
                              tracker=tracker, interval_s=1, retention_s=3600)
    try:
        rows: list[ResourceSample] = []
        for _ in range(200):  # until the child holds its memory
            rows = await sampler.tick()
            process_rows = [r for r in rows if r.kind == PROCESS]
            if process_rows and (process_rows[0].ram_used_bytes or 0) >= 80 * MIB:
                break
            await asyncio.sleep(0.05)
        process_rows = [r for r in rows if r.kind == PROCESS]
        assert [r.worker for r in process_rows] == ["exec-2"]
        assert (process_rows[0].ram_used_bytes or 0) >= 80 * MIB
        assert process_rows[0].ram_total_bytes == psutil.virtual_memory().total
        assert process_rows[0].cpu_percent is not None
    finally:
        assert worker.stdin is not None
        worker.stdin.close()
        await worker.wait()


def test_read_process_of_a_gone_process() -> None:
    process = psutil.Popen([sys.executable, "-c", "pass"])
    process.wait()
    assert read_process(process) is None


def test_cpu_percent_between_ticks(tmp_path: Path) -> None:
    sampler = ResourceSampler(session_scope=None, host_name="h",  # type: ignore[arg-type]
                              probe=HostProbe(tmp_path), tracker=None, interval_s=5,
                              retention_s=60)
    sampler.cpu_count = 4
    # first tick: since the process started
    assert sampler._cpu_percent("e", now_s=110.0, cpu_time_s=2.0, started_s=100.0) == 5.0
    # then since the previous tick: 4 s of CPU in 10 s on 4 cores
    assert sampler._cpu_percent("e", now_s=120.0, cpu_time_s=6.0, started_s=100.0) == 10.0
    assert sampler._cpu_percent("f", now_s=120.0, cpu_time_s=1.0, started_s=None) is None


# -- host probe -----------------------------------------------------------------------------


def test_network_counts_physical_interfaces_only(monkeypatch: pytest.MonkeyPatch) -> None:
    counters = types.SimpleNamespace
    monkeypatch.setattr(probes.psutil, "net_io_counters", lambda pernic: {
        "lo": counters(bytes_recv=10**9, bytes_sent=10**9),
        "eth0": counters(bytes_recv=100, bytes_sent=10),
        "ens5": counters(bytes_recv=1, bytes_sent=2),
        "veth12ab": counters(bytes_recv=10**6, bytes_sent=10**6),
        "docker0": counters(bytes_recv=10**6, bytes_sent=10**6),
        "eni0a1b2c": counters(bytes_recv=10**6, bytes_sent=10**6),
    })
    assert probes._network_counters() == (101, 12)


def test_host_probe_rates_need_two_readings(tmp_path: Path) -> None:
    probe = HostProbe(tmp_path)
    first = probe.read()
    assert first.cpu_percent is None and first.network_in_bytes_per_s is None
    assert first.ram_total_bytes == psutil.virtual_memory().total
    assert 0 < first.disk_used_bytes <= first.disk_total_bytes
    assert first.gpu is None
    second = probe.read()
    assert second.network_in_bytes_per_s is not None and second.network_in_bytes_per_s >= 0


# -- GPUs through NVML (a stand-in pynvml module) -------------------------------------------


def fake_nvml(*, init_error: Exception | None = None, gpus: int = 2) -> types.ModuleType:
    module = types.ModuleType("pynvml")
    ns = types.SimpleNamespace
    state = {"shutdown": 0}

    def init() -> None:
        if init_error is not None:
            raise init_error

    module.nvmlInit = init  # type: ignore[attr-defined]
    module.nvmlShutdown = lambda: state.__setitem__("shutdown", state["shutdown"] + 1)  # type: ignore[attr-defined]
    module.nvmlDeviceGetCount = lambda: gpus  # type: ignore[attr-defined]
    module.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    module.nvmlDeviceGetUtilizationRates = lambda h: ns(gpu=[40, 60][h])  # type: ignore[attr-defined]
    module.nvmlDeviceGetMemoryInfo = lambda h: ns(used=1 * 2**30, total=4 * 2**30)  # type: ignore[attr-defined]
    module.nvmlDeviceGetComputeRunningProcesses = lambda h: [  # type: ignore[attr-defined]
        ns(pid=4242, usedGpuMemory=512 * MIB), ns(pid=7, usedGpuMemory=None)]
    module.state = state  # type: ignore[attr-defined]
    return module


def test_no_pynvml_means_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    assert GpuProbe.load() is None


def test_no_driver_or_no_device_means_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(init_error=RuntimeError("no driver")))
    assert GpuProbe.load() is None
    empty = fake_nvml(gpus=0)
    monkeypatch.setitem(sys.modules, "pynvml", empty)
    assert GpuProbe.load() is None
    assert empty.state["shutdown"] == 1  # type: ignore[attr-defined]


def test_gpus_through_nvml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    module = fake_nvml()
    monkeypatch.setitem(sys.modules, "pynvml", module)
    probe = GpuProbe.load()
    assert probe is not None and probe.count == 2
    gpus = probe.read()
    assert gpus.util_percent == 50.0
    assert (gpus.vram_used_bytes, gpus.vram_total_bytes) == (2 * 2**30, 8 * 2**30)
    assert gpus.process_memory == {4242: 1024 * MIB}  # both GPUs, None ignored
    assert HostProbe(tmp_path, probe).read().gpu == gpus

    # a worker's GPU memory: what NVML reports for its processes
    async def record(execution_id: str, usage: dict[str, Any]) -> None:
        recorded.append(usage)

    recorded: list[dict[str, Any]] = []
    tracker = UsageTracker(record, gpu_enabled=True)
    sampler = ResourceSampler(session_scope=None, host_name="h",  # type: ignore[arg-type]
                              probe=HostProbe(tmp_path, probe), tracker=tracker,
                              interval_s=5, retention_s=60)
    tracker.worker_started("gpu-exec", psutil.Process().pid)
    from gristmill_platform.resources.sampler import _collect

    collected = _collect(sampler.probe, tracker.running())
    # as if this process were pid 4242, the one NVML reports
    reading = dataclasses.replace(collected.processes["gpu-exec"][0], pids=(4242,))
    collected.processes["gpu-exec"] = (reading, None)
    rows = sampler.rows(collected)
    host_row_, process_row = rows
    assert (host_row_.gpu_percent, host_row_.vram_used_bytes, host_row_.vram_total_bytes) == (
        50.0, 2 * 2**30, 8 * 2**30)
    assert (process_row.vram_used_bytes, process_row.vram_total_bytes) == (1024 * MIB,
                                                                           8 * 2**30)
    asyncio.run(tracker.worker_exited("gpu-exec"))
    assert recorded[0]["gpu_memory_bytes"] == 1024 * MIB
    probe.close()
    assert module.state["shutdown"] == 1  # type: ignore[attr-defined]


async def test_the_monitors_samples_skip_the_journals_barrier(database_url: str,
                                                              tmp_path: Path) -> None:
    """Every transaction first writes what the execution journal holds, on the event loop;
    the sampler's rows have nothing to do with it, so its ticks must not pay for that
    while warm calls are in flight (once a second otherwise)."""
    engine = create_engine(database_url)
    transactions = Transactions(create_session_factory(engine))
    barriers: list[int] = []

    async def barrier() -> None:
        barriers.append(1)

    transactions.barrier = barrier
    monitor = ResourceMonitor(Settings(data_dir=tmp_path, resource_sample_interval_s=0.05),
                              transactions)
    await monitor.start(None)
    try:
        assert monitor.sampler is not None
        await monitor.sampler.tick()
        async with transactions() as session:  # a transaction does pass it
            assert (await session.execute(select(func.count()).select_from(ResourceSample))
                    ).scalar_one() >= 1
    finally:
        await monitor.shutdown()
        await engine.dispose()
    assert barriers == [1]
