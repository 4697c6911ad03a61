"""Shadow overhead, interleaved (docs/rollout.md#figures): the plain and the shadowed
low-latency endpoints of bench/endpoints.py on two environments running side by side, one
with the shadow runner process (the default, executions/shadow_runner.py) and one running
the copies on the control service's own event loop (GRISTMILL_SHADOW_RUNNER=0), called in
many short alternating blocks so that the drift of a shared machine hits all four alike.

Prints and writes bench/results/shadow_ab.json: per environment, p50 over all calls and
the median of the per-block p50 overheads of the shadowed endpoint over the plain one; the
CPU time of the control service process alone (not its workers nor the runner) per call;
and at the end the copies recorded (shadow executions) against the shadowed calls made.

    .venv/bin/python bench/shadow_ab.py [blocks=20] [calls per block=150]
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from _env import BenchEnv, start_env  # type: ignore[import-not-found]
from endpoints import deploy, wait_for_copies  # type: ignore[import-not-found]

RESULTS = Path(__file__).parent / "results" / "shadow_ab.json"
ENDPOINTS = ("low", "low-shadow")
MODES = {"runner": {}, "in_process": {"GRISTMILL_SHADOW_RUNNER": "0"}}
WARM_CALLS = 10


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
        samples: dict[tuple[str, str], list[float]] = {}
        cpu: dict[tuple[str, str], float] = {}
        calls = {mode: WARM_CALLS for mode in MODES}
        load_start = os.getloadavg()
        pairs = [(mode, name) for mode in MODES for name in ENDPOINTS]
        for block in range(blocks):
            p50: dict[tuple[str, str], float] = {}
            for mode, name in pairs if block % 2 == 0 else pairs[::-1]:
                client, url = clients[(mode, name)]
                service = psutil.Process(envs[mode].process.pid)
                for _ in range(10):
                    client.post(url, json={"text": "hi"})
                used = sum(service.cpu_times()[:2])
                times = []
                for _ in range(per_block):
                    start = time.perf_counter()
                    client.post(url, json={"text": "hi"}).raise_for_status()
                    times.append(time.perf_counter() - start)
                cpu[(mode, name)] = cpu.get((mode, name), 0.0) + \
                    sum(service.cpu_times()[:2]) - used
                calls[mode] += (per_block + 10) if name == "low-shadow" else 0
                p50[(mode, name)] = statistics.median(times)
                samples.setdefault((mode, name), []).extend(times)
            for mode in MODES:
                overheads[mode].append(p50[(mode, "low-shadow")] / p50[(mode, "low")] - 1)
        out: dict[str, Any] = {"load_average_start": load_start,
                               "load_average_end": os.getloadavg(),
                               "blocks": blocks, "calls_per_block": per_block}
        for mode, values in overheads.items():
            plain = statistics.median(samples[(mode, "low")]) * 1000
            shadowed = statistics.median(samples[(mode, "low-shadow")]) * 1000
            measured = blocks * per_block
            out[mode] = {
                "plain_p50_ms": round(plain, 3), "shadow_p50_ms": round(shadowed, 3),
                "overall_pct": round(100 * (shadowed / plain - 1), 1),
                "median_block_pct": round(100 * statistics.median(values), 1),
                "service_cpu_ms_per_call": {
                    name: round(cpu[(mode, name)] / measured * 1000, 3) for name in ENDPOINTS},
                "shadowed_calls_made": calls[mode],
                "recorded": copies_recorded(apis[mode])}
        return out
    finally:
        for env in envs.values():
            env.stop()


if __name__ == "__main__":
    result = main(int(sys.argv[1]) if len(sys.argv) > 1 else 20,
                  int(sys.argv[2]) if len(sys.argv) > 2 else 150)
    print(json.dumps(result, indent=1))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
