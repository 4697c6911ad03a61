"""Start a throwaway embedded environment (`gristmill up` in a subprocess) for benchmarks."""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The bench's own garbage collector off while it measures (a collection first, not
    timed): a collection of the client's heap took about 24 ms, and landed on the same
    call of every run (the 610th of the first block in bench/warm_tail.py), which was then
    the "slowest call" of whichever side went first (docs/performance-log.md#latency)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


# After a block of calls, how long a bench waits before the next server's (or side's)
# turn: the work a control service does in its callers' pauses (its SQLite checkpoint, at
# most every half second, db/wal_checkpoints.py) is then done before the next block starts,
# not in it, where it would slow the other server and be missing from this one's CPU.
SETTLE_S = 1.2


def run_blocks_bench(main: Callable[[int, int], dict[str, Any]], results: Path,
                     blocks: int, per_block: int) -> None:
    """The entry point of a bench taking [blocks] [calls per block] on its command line
    (bench/shadow_ab.py, bench/split_aa.py): runs it, prints and writes its figures."""
    result = main(int(sys.argv[1]) if len(sys.argv) > 1 else blocks,
                  int(sys.argv[2]) if len(sys.argv) > 2 else per_block)
    print(json.dumps(result, indent=1))
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(result, indent=1) + "\n")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class BenchEnv:
    url: str
    token: str
    process: subprocess.Popen[str]
    data_dir: Path

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def proc_counters(pid: int) -> tuple[int, int, float]:
    """A process's minor page faults, those of its children it has reaped, and its own
    kernel time in seconds (/proc/PID/stat; psutil does not read the faults)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text.rsplit(")", 1)[1].split()  # after the command's name, which may hold spaces
    return int(fields[7]), int(fields[8]), int(fields[12]) / os.sysconf("SC_CLK_TCK")


def pin_apart(service_pids: list[int]) -> dict[str, list[int]]:
    """Every thread of these control services on the first CPU; their children (fork
    servers: their workers inherit it) and this process on the others (main checks
    there are 2 CPUs or more). Threads and children made later inherit their creator's."""
    cpus = sorted(os.sched_getaffinity(0))
    service_cpus, other_cpus = set(cpus[:1]), set(cpus[1:])
    for pid in service_pids:
        for thread in psutil.Process(pid).threads():
            os.sched_setaffinity(thread.id, service_cpus)
        for child in psutil.Process(pid).children(recursive=True):
            for thread in child.threads():
                os.sched_setaffinity(thread.id, other_cpus)
    os.sched_setaffinity(0, other_cpus)
    return {"control_services": sorted(service_cpus), "others": sorted(other_cpus)}


def step_archive(code: str, name: str = "main.py") -> bytes:
    """A step folder of one file, as the `step_file` upload of POST /pipelines takes it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = code.encode()
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def source_tree_env(tree: Path) -> dict[str, str]:
    """The settings that make an environment run the control service (and the SDK) of
    another source tree, say main's checked out with `git worktree add`, with this
    interpreter and its packages: the benches' A/B against a baseline."""
    tree = tree.resolve()
    if not (tree / "platform" / "gristmill_platform").is_dir():
        # the environment would otherwise start this installation's code, or time out
        raise SystemExit(f"{tree} is not a Gristmill source tree (no "
                         "platform/gristmill_platform); make one with `git worktree add`")
    return {"PYTHONPATH": f"{tree / 'platform'}{os.pathsep}{tree / 'sdk'}"}


def add_tree_option(parser: argparse.ArgumentParser) -> None:
    """--tree DIR2: the side under test runs from a source tree too, as the baseline does,
    instead of from this installation (the editable install): A/A runs of
    bench/warm_tail.py favoured the baseline by up to 10 % that way, and agreed within
    1 % with both sides from PYTHONPATH (docs/performance-log.md#latency)."""
    parser.add_argument("--tree", type=Path, default=None,
                        help="run the side under test from a source tree too (PYTHONPATH)")


def tree_env(tree: Path | None) -> dict[str, str]:
    """The settings of the side under test: this installation's ({}), or --tree's."""
    return {} if tree is None else source_tree_env(tree)


def interpreter(python: str | None = None) -> dict[str, str]:
    """Which interpreter a side ran on, reported with its figures: builds differ (pyenv's
    default one has no profile-guided or link-time optimisation; plain Python ran a fifth
    faster on Debian's optimised 3.11 here, the elastic path alike on both,
    docs/performance-log.md)."""
    executable = python or sys.executable
    described = subprocess.run(
        [executable, "-c", "import sys, os; print(sys.version.split()[0]); "
         "print(os.path.realpath(sys._base_executable))"],
        check=True, capture_output=True, text=True).stdout.split("\n")
    return {"python": executable, "version": described[0], "base": described[1]}


def start_env(data_dir: Path, log_path: Path | None = None,
              extra_env: dict[str, str] | None = None, *, port: int | None = None,
              database_url: str | None = None, python: str | None = None,
              module: str = "gristmill.cli") -> BenchEnv:
    """``log_path``: where the service's output goes (default: nowhere); ``extra_env``:
    settings for this environment (GRISTMILL_* variables); ``port``: a fixed port (a
    restart on the same URL); ``database_url``: another database than the SQLite file;
    ``python``: the interpreter of another virtual environment with Gristmill installed
    (default: the bench's own). Local workers run on the service's interpreter too.
    ``module``: what ``python -m`` runs with ``up ...`` (bench/_phases_serve.py wraps the
    CLI)."""
    port = port or free_port()
    output = log_path.open("w") if log_path is not None else subprocess.DEVNULL
    command = [python or sys.executable, "-m", module, "up", "--data-dir",
               str(data_dir), "--port", str(port)]
    if database_url:
        command += ["--database-url", database_url]
    process = subprocess.Popen(
        command,
        stdout=output, stderr=output, text=True,
        env={**os.environ, "GRISTMILL_LOG_LEVEL": "warning", **(extra_env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    # a first start builds the runtime site; on a loaded shared machine that can take
    # more than a minute
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("gristmill up exited early")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    credentials = (data_dir / "credentials.env").read_text()
    match = re.search(r"GRISTMILL_SDK_TOKEN=(\S+)", credentials)
    assert match
    return BenchEnv(url=url, token=match.group(1), process=process, data_dir=data_dir)
