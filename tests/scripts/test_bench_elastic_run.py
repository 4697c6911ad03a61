"""bench/elastic_run.py's turns: a --turn below 1 is refused before any environment
starts, and CPU per execution is reported over all runs, over those that followed one of
the same environment's, and over the first of each turn, each from its own runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.scripts._bench_modules import ROOT, bench_module, run_on_one_cpu


def elastic_run(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(ROOT / "bench"))  # it imports _env by name
    return bench_module("elastic_run")


def test_a_turn_below_one_is_refused_before_anything_starts() -> None:
    refused = subprocess.run([sys.executable, str(ROOT / "bench" / "elastic_run.py"),
                              "--turn", "0"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert "--turn must be at least 1" in refused.stderr


def test_pin_on_one_cpu_is_refused_before_anything_starts() -> None:
    refused = run_on_one_cpu("elastic_run.py", "--pin")
    assert refused.returncode == 2
    assert "--pin needs 2 CPUs or more" in refused.stderr


def row(cpu_s: float, first: bool) -> dict[str, float]:
    return {"total": 0.01, "accept": 0.001, "launch": 0.001, "run": 0.005,
            "deliver": 0.001, "first_of_turn": float(first), "cpu": cpu_s,
            "fork_server": 0.001, "forked_worker": cpu_s / 2,
            "forked_worker_kernel": cpu_s / 4, "fork_server_faults": 100.0,
            "forked_worker_faults": cpu_s * 50_000}


def test_cpu_is_reported_apart_for_the_first_run_of_each_turn(
        monkeypatch: pytest.MonkeyPatch) -> None:
    module = elastic_run(monkeypatch)
    mode = object.__new__(module.Mode)  # its figures only: no environment
    mode.interpreter = {"python": sys.executable}
    mode.read_cpu_s = 0.002
    mode.rows = [row(0.030, True), row(0.010, False), row(0.014, False),
                 row(0.026, True)]
    report = mode.report()
    assert report["cpu_ms_per_execution"] == 20.0 and report["runs"] == 4
    own, first = report["after_a_run_of_its_own"], report["first_of_a_turn"]
    assert own["runs"] == 2 and own["cpu_ms_per_execution"] == 12.0
    assert own["cpu_ms_per_execution_without_the_bench_read"] == 10.0
    assert own["forked_worker_cpu_ms_per_execution"] == 6.0
    assert first["runs"] == 2 and first["cpu_ms_per_execution"] == 28.0
    assert first["forked_worker_kernel_cpu_ms_per_execution"] == 7.0
    # faults are counts per execution, not milliseconds
    assert own["forked_worker_page_faults_per_execution"] == 600
    assert first["fork_server_page_faults_per_execution"] == 100
    mode.rows = [row(0.030, True)]  # --turn 1: every run is a first one
    assert mode.report()["after_a_run_of_its_own"] is None


def test_no_spawn_leaves_the_spawned_mode_out(monkeypatch: pytest.MonkeyPatch) -> None:
    module = elastic_run(monkeypatch)
    assert module.mode_names(False) == ["fork_server", "spawn"]
    assert module.mode_names(True) == ["fork_server"]


def test_pin_puts_the_services_threads_apart_from_everything_else(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """--pin: a service's every thread on the first CPU; its children's threads, and the
    bench itself, on the others."""
    import os
    import time

    import psutil

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("--pin needs 2 CPUs or more")
    module = elastic_run(monkeypatch)
    service = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, threading, time\n"
        "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    own = os.sched_getaffinity(0)
    try:
        assert service.stdout is not None and service.stdout.readline() == "ready\n"
        deadline = time.monotonic() + 10
        while len(psutil.Process(service.pid).threads()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        pinned = module.pin_apart([service.pid])
        assert pinned == {"control_services": cpus[:1], "others": cpus[1:]}
        threads = psutil.Process(service.pid).threads()
        assert len(threads) == 2
        assert all(os.sched_getaffinity(t.id) == set(cpus[:1]) for t in threads)
        (child,) = psutil.Process(service.pid).children()
        assert os.sched_getaffinity(child.pid) == set(cpus[1:])
        assert os.sched_getaffinity(0) == set(cpus[1:])
    finally:
        os.sched_setaffinity(0, own)
        for process in psutil.Process(service.pid).children(recursive=True):
            process.kill()
        service.kill()
        service.wait()


def test_minor_faults_are_read_past_a_command_name_with_spaces_and_brackets(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    module = bench_module("_env")  # bench/_env.py, which elastic_run and fork_faults share
    stat = ("4242 (python -m x) (y)) S 1 4242 4242 0 -1 4194560 1087 52199 0 3 120 40 "
            "310 95 20 0 1 0 100 1000 200")
    real_path = module.Path

    def fake_path(name: str) -> Path:
        if name == "/proc/4242/stat":
            (tmp_path / "stat").write_text(stat)
            return tmp_path / "stat"
        return real_path(name)

    monkeypatch.setattr(module, "Path", fake_path)
    assert module.proc_counters(4242) == (1087, 52199, 40 / os.sysconf("SC_CLK_TCK"))


def test_minor_faults_of_this_process_and_its_reaped_children(
        monkeypatch: pytest.MonkeyPatch) -> None:
    module = elastic_run(monkeypatch)
    own_before, reaped_before, _ = module.proc_counters(os.getpid())
    subprocess.run([sys.executable, "-c", "b = bytearray(8 << 20)"], check=True)
    own_after, reaped_after, _ = module.proc_counters(os.getpid())
    assert own_after >= own_before
    assert reaped_after - reaped_before >= 2048  # 8 MiB of pages written by the child
