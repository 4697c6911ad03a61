"""End-to-end run of a trivial step on `gristmill up`: where an elastic execution's
time goes.

For N runs of a step with no requirements (echo of a string), measures on the client the
whole `run + wait for results` round trip, and from the execution's own timestamps:
  accept   POST /run answered (execution recorded, execution token minted)
  launch   from the execution's creation to its start, which the local backend records
           with the launch (reading the step and the variables), before the worker exists
  run      from the start to the end: the worker's fork (or spawn: interpreter start and
           runner import), inputs, user module import and call, result report (start and
           finish over the worker's local channel, not HTTP)
  deliver  from the end to the client holding the outputs (long-poll wake-up)
Beside it, the bare cost of starting the step's interpreter (`python -c pass`) and of
importing the runner, on the same machine in the same run. Two environments run side by
side, in turns: workers forked by the fork server (`fork_server`, the default) and spawned
(`spawn`, GRISTMILL_LOCAL_FORK_SERVER=0); for each, the CPU time of the control service
and its workers per execution (that figure includes the bench's own GET /executions/{id}
per run, whose CPU is measured apart at the end and reported, with the figure without it),
of which the forked workers (and their kernel share: page faults, thread stacks, exit) and
the fork servers' own (the forks), and both's minor page faults per execution.
The modes take turns of --turn runs each (default 10), the order rotating. The first run
of a turn follows another environment's turn (a spawned worker's start, 70 ms of another
interpreter's work, leaves the caches cold); the others follow a run of their own. The CPU
figures are reported for both apart, and for all runs: the first is what an execution
costs after other work, the second what it costs on an environment busy with elastic
executions (--turn 1 makes every run a first one, as this bench did before 2026-12-07).
With --baseline DIR, a third environment runs the control service of the source tree in
DIR (forked workers) in the same turns: an A/B of a change. With --tree DIR2 this side's
modes run from that source tree too. With --baseline-python PATH, that third environment
(and its workers) runs on another interpreter, a virtual environment with Gristmill
installed (PYTHON=/usr/bin/python3.11 GRISTMILL_VENV=../venv-b scripts/setup.sh); without
--baseline it runs this tree's code there: an A/B of interpreters. A/A runs favour the
baseline by 0.3 to 2 ms of CPU either way (docs/performance-log.md): a smaller
difference is not a change's. --no-spawn leaves the spawned mode out, so that the two
trees' environments take turns alone; run an A/B both ways round (--tree and --baseline
swapped) and report both. --pin (2 CPUs or more) pins, after one run of each mode, every
control service's threads to the first CPU and everything else (their fork servers, hence
their workers, and this bench) to the others: does the service's CPU per execution come
from the other processes' work on its CPU?
Writes bench/results/elastic_run.json.

    .venv/bin/python bench/elastic_run.py [--runs 50] [--turn 10] [--baseline ../main-tree]
        [--tree DIR2] [--baseline-python ../venv-b/bin/python] [--no-spawn] [--pin]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import psutil
from _env import (  # type: ignore[import-not-found]
    add_tree_option,
    interpreter,
    pin_apart,
    proc_counters,
    source_tree_env,
    start_env,
    step_archive,
    tree_env,
)

RESULTS = Path(__file__).parent / "results" / "elastic_run.json"
STEP = 'def echo(text: str) -> dict:\n    return {"text": text}\n'


def archive() -> bytes:
    return step_archive(STEP)


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(statistics.median(values) * 1000, 1),
            "p95_ms": round(percentile(values, 95) * 1000, 1),
            "mean_ms": round(statistics.fmean(values) * 1000, 1)}


def bare_costs(python: str, repeat: int = 20) -> dict[str, dict[str, float]]:
    def timed(args: list[str]) -> list[float]:
        out = []
        for _ in range(repeat):
            start = time.perf_counter()
            subprocess.run(args, check=True, capture_output=True)
            out.append(time.perf_counter() - start)
        return out

    return {"interpreter_start": summary(timed([python, "-c", "pass"])),
            "runner_import": summary(timed([python, "-c", "import gristmill.runtime.runner"]))}


MODES = {"fork_server": "1", "spawn": "0"}  # GRISTMILL_LOCAL_FORK_SERVER


def mode_names(no_spawn: bool) -> list[str]:
    """The modes this side runs: both, or (--no-spawn) the fork server's alone."""
    return [name for name in MODES if not (no_spawn and name == "spawn")]

WARM_UP = 2  # each mode's first runs warm its caches and start its fork server: not counted
CPU_LINES = (("  with the bench read", "cpu_ms_per_execution"),
             ("  without it", "cpu_ms_per_execution_without_the_bench_read"),
             ("  of which forked worker", "forked_worker_cpu_ms_per_execution"),
             ("    in the kernel", "forked_worker_kernel_cpu_ms_per_execution"),
             ("  of which the fork server", "fork_server_cpu_ms_per_execution"))
FAULT_LINES = (("page faults, forked worker", "forked_worker_page_faults_per_execution"),
               ("page faults, fork server", "fork_server_page_faults_per_execution"))


def fork_server_cpu(pid: int) -> dict[str, float]:
    """CPU of the fork servers (their own: the forks) and of the forked workers reaped
    so far, that of the workers in the kernel apart, and both's minor page faults (fork
    server mode only; zeros when spawned). A forked worker's kernel time is mostly
    copy-on-write faults on the pages it shares with its fork server (bench/fork_faults.py
    measures what one costs on this machine)."""
    total = {"fork_server": 0.0, "forked_worker": 0.0, "forked_worker_kernel": 0.0,
             "fork_server_faults": 0.0, "forked_worker_faults": 0.0}
    for child in psutil.Process(pid).children():
        try:
            if "zygote" in child.cmdline():
                ct = child.cpu_times()
                own_faults, reaped_faults, _ = proc_counters(child.pid)
        except (psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
            continue
        total["fork_server"] += ct.user + ct.system
        total["forked_worker"] += ct.children_user + ct.children_system
        total["forked_worker_kernel"] += ct.children_system
        total["fork_server_faults"] += own_faults
        total["forked_worker_faults"] += reaped_faults
    return total


def cpu_seconds(pid: int) -> float:
    """CPU of the control service and of every worker it started so far: its own time,
    its reaped children's (spawned workers), and each fork server's own and reaped
    children's (forked workers). Workers still running are not counted: the bench reads
    it between runs, when none is."""
    root = psutil.Process(pid)
    times = root.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in root.children():
        try:
            if "zygote" in child.cmdline():
                ct = child.cpu_times()
                total += ct.user + ct.system + ct.children_user + ct.children_system
        except psutil.NoSuchProcess:
            continue
    return float(total)


def workers_running(pid: int) -> bool:
    """A worker of this control service still exists (spawned: its child; forked: a fork
    server's child)."""
    for child in psutil.Process(pid).children():
        try:
            if "zygote" not in child.cmdline() or child.children():
                return True
        except psutil.NoSuchProcess:
            continue
    return False


class Mode:
    def __init__(self, name: str, work: Path, source: dict[str, str],
                 python: str | None = None) -> None:
        """``source``: the settings of the code it runs (tree_env, source_tree_env);
        ``python``: the interpreter it runs on (default: the bench's)."""
        self.interpreter = interpreter(python)
        self.name = name
        extra_env = {"GRISTMILL_LOCAL_FORK_SERVER": MODES[name.removesuffix("@baseline")],
                     **source}
        self.env = start_env(work / name, extra_env=extra_env, python=python)
        token = httpx.post(f"{self.env.url}/api/v1/auth/refresh",
                           json={"refresh_token": self.env.token}).json()["access_token"]
        self.api = httpx.Client(base_url=f"{self.env.url}/api/v1", timeout=120,
                                headers={"Authorization": f"Bearer {token}"})
        created = self.api.post("/pipelines", data={
            "pipeline_name": "echo", "function_path": "main.py", "function_name": "echo",
            "inputs[0][name]": "text", "inputs[0][data_type]": "string",
            "outputs[0][name]": "text", "outputs[0][data_type]": "string",
        }, files={"step_file": ("step_file", archive())})
        created.raise_for_status()
        self.python = str(next((work / name / "venvs").glob("*/bin/python")))
        self.rows: list[dict[str, float]] = []
        self.last_execution_id = ""
        self.read_cpu_s: float | None = None  # the control service's, per GET /executions/{id}

    def run_once(self, i: int, counted: bool, first_of_turn: bool) -> None:
        cpu_before = cpu_seconds(self.env.process.pid)
        split_before = fork_server_cpu(self.env.process.pid)
        start = time.perf_counter()
        posted = self.api.post("/pipelines/echo/run",
                               data={"json_inputs": json.dumps({"text": f"hi {i}"})})
        accepted = time.perf_counter()
        execution_id = posted.json()["execution_id"]
        while True:
            result = self.api.get(f"/executions/{execution_id}/outputs",
                                  params={"wait_for_results": "true"},
                                  follow_redirects=False)
            if result.status_code != 307:
                break
        done = time.perf_counter()
        wall_done = time.time()
        if result.status_code != 200:
            raise SystemExit(f"run failed: {result.text}")
        execution = self.api.get(f"/executions/{execution_id}").json()
        # its CPU is in the reading once the worker has exited and been reaped
        deadline = time.monotonic() + 5
        while workers_running(self.env.process.pid) and time.monotonic() < deadline:
            time.sleep(0.005)
        cpu_after = cpu_seconds(self.env.process.pid)
        split_after = fork_server_cpu(self.env.process.pid)
        self.last_execution_id = execution_id
        created_at, started = ts(execution["created_at"]), ts(execution["start_date"])
        ended = ts(execution["end_date"])
        if counted:
            self.rows.append({
                "total": done - start, "accept": accepted - start,
                "launch": started - created_at, "run": ended - started,
                "deliver": max(0.0, wall_done - ended),
                "first_of_turn": float(first_of_turn), "cpu": cpu_after - cpu_before,
                **{key: after - split_before[key] for key, after in split_after.items()},
            })

    def measure_read(self, reads: int = 200) -> None:
        """The control service's CPU per GET /executions/{id} of an ended execution, with
        nothing running: what each counted run's own read adds to its CPU figure."""
        service = psutil.Process(self.env.process.pid)

        def cpu() -> float:
            times = service.cpu_times()
            return float(times.user + times.system)

        before = cpu()
        for _ in range(reads):
            self.api.get(f"/executions/{self.last_execution_id}").raise_for_status()
        self.read_cpu_s = (cpu() - before) / reads

    def cpu_report(self, rows: list[dict[str, float]]) -> dict[str, object]:
        """CPU per execution over these runs (ms)."""
        def mean(key: str) -> float:
            return sum(r[key] for r in rows) / len(rows)

        def per_run(key: str) -> float:  # seconds to ms
            return mean(key) * 1000

        read_ms = None if self.read_cpu_s is None else self.read_cpu_s * 1000
        return {
            "runs": len(rows),
            # includes the bench's own GET /executions/{id} per run (a few ms at most)
            "cpu_ms_per_execution": round(per_run("cpu"), 1),
            # that read's CPU, measured apart, and the figure without it
            "bench_read_cpu_ms": None if read_ms is None else round(read_ms, 2),
            "cpu_ms_per_execution_without_the_bench_read":
                None if read_ms is None else round(per_run("cpu") - read_ms, 1),
            # of which the forked worker (0 when spawned: counted with the service)
            "forked_worker_cpu_ms_per_execution": round(per_run("forked_worker"), 1),
            # of which in the kernel (page faults, thread stacks, the exit)
            "forked_worker_kernel_cpu_ms_per_execution": round(
                per_run("forked_worker_kernel"), 1),
            # the fork servers' own: the forks
            "fork_server_cpu_ms_per_execution": round(per_run("fork_server"), 1),
            # minor page faults per execution: the forked worker's (copy-on-write on the
            # pages it shares with its fork server, the pages it allocates) and the fork
            # server's own (its writes to pages a child still shares)
            "forked_worker_page_faults_per_execution": round(mean("forked_worker_faults")),
            "fork_server_page_faults_per_execution": round(mean("fork_server_faults")),
        }

    def report(self) -> dict[str, object]:
        firsts = [r for r in self.rows if r["first_of_turn"]]
        following = [r for r in self.rows if not r["first_of_turn"]]
        return {
            "interpreter": self.interpreter,
            "end_to_end": summary([r["total"] for r in self.rows]),
            "phases": {k: summary([r[k] for r in self.rows])
                       for k in ("accept", "launch", "run", "deliver")},
            **self.cpu_report(self.rows),
            # the same figures for the runs that followed one of this environment's own
            # (busy with elastic executions) and for the first of each turn (after
            # another environment's: cold caches); the read measured apart is a warm one
            "after_a_run_of_its_own": self.cpu_report(following) if following else None,
            "first_of_a_turn": self.cpu_report(firsts) if firsts else None,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--turn", type=int, default=10,
                        help="runs of one mode before the next mode's (default 10; 1: every "
                             "run follows another environment's)")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another source tree: its control service runs a third mode, "
                             "fork_server@baseline, in the same turns (an A/B)")
    parser.add_argument("--baseline-python", default=None,
                        help="the baseline's interpreter: a virtual environment with "
                             "Gristmill installed; without --baseline, this tree's code "
                             "runs on it (an A/B of interpreters)")
    parser.add_argument("--no-spawn", action="store_true",
                        help="leave the spawned mode out: with --baseline, an A/B of the "
                             "two trees' fork servers alone, each turn following the "
                             "other's (the spawned mode's turns cool the caches of "
                             "whichever follows them)")
    parser.add_argument("--pin", action="store_true",
                        help="the control services on the first CPU, everything else on "
                             "the others (after one run of each mode)")
    add_tree_option(parser)
    args = parser.parse_args()
    if args.turn < 1:
        parser.error("--turn must be at least 1")
    if args.pin and len(os.sched_getaffinity(0)) < 2:
        parser.error("--pin needs 2 CPUs or more")
    pinned: dict[str, list[int]] | None = None

    with tempfile.TemporaryDirectory(prefix="gristmill-bench-") as work:
        modes: list[Mode] = []
        try:
            for name in mode_names(args.no_spawn):
                modes.append(Mode(name, Path(work), tree_env(args.tree)))
            if args.baseline is not None or args.baseline_python is not None:
                source = (tree_env(args.tree) if args.baseline is None
                          else source_tree_env(args.baseline))
                modes.append(Mode("fork_server@baseline", Path(work), source,
                                  args.baseline_python))
            if args.pin:
                for mode in modes:  # its fork server exists after a run
                    mode.run_once(-1, counted=False, first_of_turn=False)
                pinned = pin_apart([mode.env.process.pid for mode in modes])
            # the modes take turns, so a machine whose speed drifts slows all alike; the
            # order rotates, so none always runs first (just after another's worker exit)
            total = args.runs + WARM_UP
            for turn, first in enumerate(range(0, total, args.turn)):
                k = turn % len(modes)
                for mode in modes[k:] + modes[:k]:
                    for i in range(first, min(first + args.turn, total)):
                        mode.run_once(i, counted=i >= WARM_UP, first_of_turn=i == first)
            for mode in modes:
                mode.measure_read()
            bare = bare_costs(modes[0].python)
        finally:
            for mode in modes:
                mode.env.stop()

    results = {
        "runs": args.runs, "turn": args.turn, "pinned": pinned,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_1m": round(os.getloadavg()[0], 1)},
        "modes": {mode.name: mode.report() for mode in modes},
        "bare": bare,
        "targets": {"p50_ms_at_most": 40, "cpu_ms_per_execution_at_most": 15},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"elastic run of a trivial step, {args.runs} runs per mode, in turns (ms)")
    for name, report in results["modes"].items():  # type: ignore[attr-defined]
        runs_on = report["interpreter"]
        print(f"-- {name} (Python {runs_on['version']}, {runs_on['base']})")
        print(f"{'':<28}{'p50':>8}{'p95':>8}")
        line = report["end_to_end"]
        print(f"{'end to end':<28}{line['p50_ms']:>8}{line['p95_ms']:>8}")
        for phase, values in report["phases"].items():
            print(f"  {phase:<26}{values['p50_ms']:>8}{values['p95_ms']:>8}")
        print(f"{'cpu per execution (ms)':<28}{'all':>8}{'own':>8}{'first':>8}")
        columns = [report, report["after_a_run_of_its_own"], report["first_of_a_turn"]]
        for label, key in CPU_LINES + FAULT_LINES:
            cells = "".join(f"{'-' if c is None else c[key]:>8}" for c in columns)
            print(f"{label:<28}{cells}")
    for name, values in bare.items():
        print(f"{'bare ' + name:<28}{values['p50_ms']:>8}{values['p95_ms']:>8}")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
