"""Shadow overhead, interleaved in one environment (docs/rollout.md#figures): the plain and
the shadowed low-latency endpoints of bench/endpoints.py, with the shadow's warm worker at
its default CPU priority (nice 19) or put back to the service's, in many short alternating
blocks, so that the drift of a shared machine hits all four alike. Prints and writes
bench/results/shadow_ab.json: p50 over all calls and the median of the per-block p50
overheads. Putting the worker's priority back up needs root.

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
from _env import start_env  # type: ignore[import-not-found]
from endpoints import deploy  # type: ignore[import-not-found]

RESULTS = Path(__file__).parent / "results" / "shadow_ab.json"
ENDPOINTS = ("low", "low-shadow")


def shadow_workers(pid: int) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "low-shadow@" in child.environ().get("GRISTMILL_IO_DIR", ""):
                found.append(child)
        except psutil.Error:
            continue
    return found


def main(blocks: int, per_block: int) -> dict[str, Any]:
    env = start_env(Path(tempfile.mkdtemp(prefix="gristmill-shadow-ab-")))
    own = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        _, tokens = deploy(env)
        clients = {name: httpx.Client(trust_env=False, timeout=120, headers={
            "Authorization": f"EndpointToken {tokens[name]}"}) for name in ENDPOINTS}
        overheads: dict[str, list[float]] = {"nice19": [], "same": []}
        samples: dict[tuple[str, str], list[float]] = {}
        load_start = os.getloadavg()
        for block in range(blocks):
            modes = ("nice19", "same") if block % 2 == 0 else ("same", "nice19")
            for mode in modes:
                for worker in shadow_workers(env.process.pid):
                    worker.nice(19 if mode == "nice19" else own)
                p50 = {}
                for name in ENDPOINTS if block % 2 == 0 else ENDPOINTS[::-1]:
                    client, url = clients[name], f"{env.url}/endpoints/{name}"
                    for _ in range(10):
                        client.post(url, json={"text": "hi"})
                    times = []
                    for _ in range(per_block):
                        start = time.perf_counter()
                        client.post(url, json={"text": "hi"}).raise_for_status()
                        times.append(time.perf_counter() - start)
                    p50[name] = statistics.median(times)
                    samples.setdefault((mode, name), []).extend(times)
                overheads[mode].append(p50["low-shadow"] / p50["low"] - 1)
        out: dict[str, Any] = {"load_average_start": load_start,
                               "load_average_end": os.getloadavg(),
                               "blocks": blocks, "calls_per_block": per_block}
        for mode, values in overheads.items():
            plain = statistics.median(samples[(mode, "low")]) * 1000
            shadowed = statistics.median(samples[(mode, "low-shadow")]) * 1000
            out[mode] = {"plain_p50_ms": round(plain, 3), "shadow_p50_ms": round(shadowed, 3),
                         "overall_pct": round(100 * (shadowed / plain - 1), 1),
                         "median_block_pct": round(100 * statistics.median(values), 1)}
        return out
    finally:
        env.stop()


if __name__ == "__main__":
    result = main(int(sys.argv[1]) if len(sys.argv) > 1 else 20,
                  int(sys.argv[2]) if len(sys.argv) > 2 else 150)
    print(json.dumps(result, indent=1))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
