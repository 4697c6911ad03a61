"""Shadow overhead, interleaved (docs/performance-log.md#rollout): the plain and the shadowed
low-latency endpoints of bench/endpoints.py on three environments running side by side:
with the shadow runner process (the default, executions/shadow_runner.py: copies written
to it in quiet moments of the calls), with the runner and each copy written at once
(GRISTMILL_SHADOW_QUIET_MS=0), and running the copies on the control service's own event
loop (GRISTMILL_SHADOW_RUNNER=0); called in many short alternating blocks so that the
drift of a shared machine hits all alike. Before each block the bench waits for every
shadowed call's copy to be recorded, then for the environments to go idle (settle): the
copies of a shadowed block are run before the next block, not during it.
SHADOW_AB_MODES=runner,runner_each_at_once runs a subset; SHADOW_AB_BASELINE=DIR adds
each mode again as mode@baseline, run by the source tree in DIR (an A/B of a change).

Prints and writes bench/results/shadow_ab.json: per environment, p50 over all calls and
the median of the per-block p50 overheads of the shadowed endpoint over the plain one; the
CPU time of the control service process alone (not its workers nor the runner) per call;
the context switches per call of the caller, the control service and all its descendants;
the CPU time of the runner and its workers per shadowed call (their start included); the
machine's inter-processor interrupts per call (/proc/interrupts: RES, a CPU told to
preempt the task it runs; CAL, a function call such as a remote wake-up); the
CPUs the machine's other work used during each block (/proc/stat minus this bench's
processes), and the median overhead over the quiet block pairs only (other work under
QUIET_OTHERS_CPUS during both); and at the end the copies recorded (shadow executions)
against the shadowed calls made.

    .venv/bin/python bench/shadow_ab.py [blocks=20] [calls per block=150]
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from _env import (  # type: ignore[import-not-found]
    BenchEnv,
    collector_paused,
    run_blocks_bench,
    source_tree_env,
    start_env,
)
from endpoints import (  # type: ignore[import-not-found]
    copies_caught_up,
    deploy,
    wait_for_copies,
)

RESULTS = Path(__file__).parent / "results" / "shadow_ab.json"
ENDPOINTS = ("low", "low-shadow")
MODES = {"runner": {}, "runner_each_at_once": {"GRISTMILL_SHADOW_QUIET_MS": "0"},
         "in_process": {"GRISTMILL_SHADOW_RUNNER": "0"}}
if os.environ.get("SHADOW_AB_MODES"):  # a subset, e.g. runner,runner_each_at_once
    MODES = {mode: MODES[mode] for mode in os.environ["SHADOW_AB_MODES"].split(",")}
if os.environ.get("SHADOW_AB_BASELINE"):
    # an A/B of a change: each mode again, run by the control service (and so the runner)
    # of another source tree, same interpreter and packages
    _baseline = source_tree_env(Path(os.environ["SHADOW_AB_BASELINE"]))
    MODES.update({f"{mode}@baseline": {**extra, **_baseline}
                  for mode, extra in list(MODES.items())})
WARM_CALLS = 10
# A block pair is "quiet" when the machine's other work used less than this many CPUs
# during both of its blocks (the shared machine is rarely quiet for a whole run).
QUIET_OTHERS_CPUS = 0.1


def prepare(env: BenchEnv) -> tuple[httpx.Client, dict[str, str]]:
    api, tokens = deploy(env, only=frozenset(ENDPOINTS) | {"low-split"})
    api.put("/deployments/low-shadow/traffic", json={"shadow": ["async-b"]}
            ).raise_for_status()
    for _ in range(WARM_CALLS):  # the shadow's workers (and the runner), before measuring
        httpx.post(f"{env.url}/endpoints/low-shadow", json={"text": "warm"}, timeout=300,
                   headers={"Authorization": f"EndpointToken {tokens['low-shadow']}"}
                   ).raise_for_status()
    wait_for_copies(api, "low-shadow", WARM_CALLS)
    return api, tokens


def tree(env: BenchEnv) -> list[psutil.Process]:
    service = psutil.Process(env.process.pid)
    return [service, *service.children(recursive=True)]


def cpu_s(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += sum(process.cpu_times()[:2])
    return total


def machine_busy_s() -> float:
    """CPU time the whole machine spent busy so far (/proc/stat: all but idle and
    iowait)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def interrupts() -> dict[str, int]:
    """The machine's rescheduling (RES) and function-call (CAL) interrupts so far, all
    CPUs (Linux, /proc/interrupts; empty elsewhere)."""
    counts: dict[str, int] = {}
    with contextlib.suppress(OSError), open("/proc/interrupts") as table:
        for line in table:
            fields = line.split()
            if fields and fields[0] in ("RES:", "CAL:"):
                counts[fields[0][:-1]] = sum(int(v) for v in fields[1:] if v.isdigit())
    return counts


def switches(service: psutil.Process) -> int:
    """Context switches so far (voluntary and not) of this process (the caller), the
    control service and all its descendants (warm workers, the shadow runner and its
    workers); a process that ended meanwhile is left out."""
    total = 0
    for process in (psutil.Process(), service, *service.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += sum(process.num_ctx_switches())
    return total


def runner_cpu_s(env: BenchEnv) -> float | None:
    """CPU time so far of the shadow runner and its workers (all the copies' work)."""
    for child in psutil.Process(env.process.pid).children():
        if "shadow_process" in " ".join(child.cmdline()):
            return sum(sum(p.cpu_times()[:2]) for p in (child, *child.children(True)))
    return None


def settle(envs: list[BenchEnv], seconds: float = 5.0) -> None:
    """Until the environments' processes (the services, their workers, the shadow runners
    and theirs) have stopped using CPU: the copies of the last shadowed block are run
    before the next block starts. Without it a runner still catching up ran during the
    next block, plain or not, and the overhead looked smaller than it is (measured
    2026-12-06: the plain endpoint's p50 1.45-1.56 ms after shadowed blocks, 1.25 ms
    after blocks of a split endpoint)."""
    deadline = time.monotonic() + seconds
    processes = [p for env in envs for p in tree(env)]
    before = cpu_s(processes)
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = cpu_s(processes)
        if now - before < 0.005:  # under 10 % of a CPU over the last 50 ms
            return
        before = now


def copies_recorded(api: httpx.Client) -> dict[str, int]:
    """Calls and shadow copies of the shadowed endpoint, from its comparison (its last
    10,000 executions)."""
    time.sleep(2)  # the journals' last batches
    read = api.get("/deployments/low-shadow").json()
    counts = {"calls": 0, "copies": 0}
    for variant in read["traffic"]["comparison"]:
        counts["copies" if variant["shadow"] else "calls"] += variant["calls"]
    return counts


def main(blocks: int, per_block: int) -> dict[str, Any]:
    envs = {mode: start_env(Path(tempfile.mkdtemp(prefix=f"gristmill-shadow-{mode}-")),
                            extra_env=extra) for mode, extra in MODES.items()}
    try:
        apis, clients = {}, {}
        for mode, env in envs.items():
            apis[mode], tokens = prepare(env)
            for name in ENDPOINTS:
                clients[(mode, name)] = (httpx.Client(trust_env=False, timeout=120, headers={
                    "Authorization": f"EndpointToken {tokens[name]}"}),
                    f"{env.url}/endpoints/{name}")
        overheads: dict[str, list[float]] = {mode: [] for mode in MODES}
        busiest: dict[str, list[float]] = {mode: [] for mode in MODES}  # others' CPUs
        samples: dict[tuple[str, str], list[float]] = {}
        cpu: dict[tuple[str, str], float] = {}
        ctx: dict[tuple[str, str], int] = {}
        irq: dict[tuple[str, str], dict[str, int]] = {}
        calls = {mode: WARM_CALLS for mode in MODES}
        load_start = os.getloadavg()
        pairs = [(mode, name) for mode in MODES for name in ENDPOINTS]
        for block in range(blocks):
            p50: dict[tuple[str, str], float] = {}
            others: dict[tuple[str, str], float] = {}
            ours = [psutil.Process(), *(p for env in envs.values() for p in tree(env))]
            for mode, name in pairs if block % 2 == 0 else pairs[::-1]:
                client, url = clients[(mode, name)]
                service = psutil.Process(envs[mode].process.pid)
                for api in apis.values():  # the copies wait for the calls to pause
                    copies_caught_up(api, "low-shadow")
                settle(list(envs.values()))
                for _ in range(10):
                    client.post(url, json={"text": "hi"})
                used = sum(service.cpu_times()[:2])
                switched = switches(service)
                interrupted = interrupts()
                busy, mine, began = machine_busy_s(), cpu_s(ours), time.perf_counter()
                times = []
                with collector_paused():
                    for _ in range(per_block):
                        start = time.perf_counter()
                        client.post(url, json={"text": "hi"}).raise_for_status()
                        times.append(time.perf_counter() - start)
                cpu[(mode, name)] = cpu.get((mode, name), 0.0) + \
                    sum(service.cpu_times()[:2]) - used
                ctx[(mode, name)] = ctx.get((mode, name), 0) + switches(service) - switched
                counted = irq.setdefault((mode, name), {})
                for kind, value in interrupts().items():
                    counted[kind] = counted.get(kind, 0) + value - interrupted.get(kind, value)
                others[(mode, name)] = max(0.0, machine_busy_s() - busy - cpu_s(ours) + mine
                                           ) / (time.perf_counter() - began)
                calls[mode] += (per_block + 10) if name == "low-shadow" else 0
                p50[(mode, name)] = statistics.median(times)
                samples.setdefault((mode, name), []).extend(times)
            for mode in MODES:
                overheads[mode].append(p50[(mode, "low-shadow")] / p50[(mode, "low")] - 1)
                busiest[mode].append(max(others[(mode, name)] for name in ENDPOINTS))
        out: dict[str, Any] = {"load_average_start": load_start,
                               "load_average_end": os.getloadavg(),
                               "blocks": blocks, "calls_per_block": per_block}
        for mode, values in overheads.items():
            plain = statistics.median(samples[(mode, "low")]) * 1000
            shadowed = statistics.median(samples[(mode, "low-shadow")]) * 1000
            measured = blocks * per_block
            quiet = [o for o, b in zip(values, busiest[mode], strict=True)
                     if b < QUIET_OTHERS_CPUS]
            out[mode] = {
                "plain_p50_ms": round(plain, 3), "shadow_p50_ms": round(shadowed, 3),
                "overall_pct": round(100 * (shadowed / plain - 1), 1),
                "median_block_pct": round(100 * statistics.median(values), 1),
                "service_cpu_ms_per_call": {
                    name: round(cpu[(mode, name)] / measured * 1000, 3) for name in ENDPOINTS},
                "context_switches_per_call": {
                    name: round(ctx[(mode, name)] / measured, 2) for name in ENDPOINTS},
                "interrupts_per_call": {
                    name: {kind: round(value / measured, 2)
                           for kind, value in sorted(irq[(mode, name)].items())}
                    for name in ENDPOINTS},
                "others_cpus_median": round(statistics.median(busiest[mode]), 2),
                "quiet_blocks": len(quiet),
                "quiet_median_block_pct": round(100 * statistics.median(quiet), 1)
                if quiet else None,
                "shadowed_calls_made": calls[mode],
                "recorded": copies_recorded(apis[mode])}
            runner = runner_cpu_s(envs[mode])
            if runner is not None:
                out[mode]["runner_cpu_ms_per_copy"] = round(runner / calls[mode] * 1000, 3)
        return out
    finally:
        for env in envs.values():
            env.stop()


if __name__ == "__main__":
    run_blocks_bench(main, RESULTS, 20, 150)
