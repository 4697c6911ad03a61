"""A 1:1 split against its noise floor (docs/performance-log.md#rollout): on one environment, the
plain low-latency endpoint of bench/endpoints.py (`low`), a second plain endpoint of the
same pipeline (`low2`, the A/A: any difference it shows is the method's noise), and the
1:1 split endpoint (`low-split`, two pipelines, each with its own warm worker), called in
alternating blocks of sequential calls (a new client per block, order reversed every
other block). Prints and writes bench/results/split_aa.json: per endpoint, the median of
the per-block p50 overheads over `low`, the overall p50 overhead, and how many blocks
were more than 10 % above `low`.

    .venv/bin/python bench/split_aa.py [blocks=30] [calls per block=200]
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _env import (  # type: ignore[import-not-found]
    collector_paused,
    run_blocks_bench,
    start_env,
)
from endpoints import deploy  # type: ignore[import-not-found]

RESULTS = Path(__file__).parent / "results" / "split_aa.json"
NAMES = ("low", "low2", "low-split")
WARM_CALLS = 20


def block(url: str, token: str, calls: int) -> list[float]:
    with httpx.Client(trust_env=False, timeout=60,
                      headers={"Authorization": f"EndpointToken {token}"}) as client:
        for _ in range(WARM_CALLS):
            client.post(url, json={"text": "hi"}).raise_for_status()
        times = []
        with collector_paused():
            for _ in range(calls):
                start = time.perf_counter()
                client.post(url, json={"text": "hi"}).raise_for_status()
                times.append(time.perf_counter() - start)
        return times


def main(blocks: int, per_block: int) -> dict[str, Any]:
    env = start_env(Path(tempfile.mkdtemp(prefix="gristmill-split-aa-")))
    try:
        api, tokens = deploy(env, only=frozenset({"low", "low-split"}))
        created = api.post("/endpoints", json={"pipeline_name": "async", "name": "low2",
                                               "mode": "low_latency"})
        created.raise_for_status()
        tokens["low2"] = created.json()["endpoint_token"]
        api.put("/deployments/low-split/traffic",
                json={"split": {"async": 1, "async-b": 1}}).raise_for_status()
        p50: dict[str, list[float]] = {name: [] for name in NAMES}
        samples: dict[str, list[float]] = {name: [] for name in NAMES}
        load_start = os.getloadavg()[0]
        for number in range(blocks):
            for name in NAMES if number % 2 == 0 else NAMES[::-1]:
                times = block(f"{env.url}/endpoints/{name}", tokens[name], per_block)
                p50[name].append(statistics.median(times))
                samples[name].extend(times)
        plain = statistics.median(samples["low"])
        out: dict[str, Any] = {"blocks": blocks, "calls_per_block": per_block,
                               "load_average_start": round(load_start, 2),
                               "load_average_end": round(os.getloadavg()[0], 2),
                               "low_p50_ms": round(plain * 1000, 3)}
        for name in NAMES[1:]:
            overheads = [a / b - 1 for a, b in zip(p50[name], p50["low"], strict=True)]
            out[name] = {
                "p50_ms": round(statistics.median(samples[name]) * 1000, 3),
                "median_block_pct": round(100 * statistics.median(overheads), 1),
                "overall_pct": round(100 * (statistics.median(samples[name]) / plain - 1), 1),
                "blocks_over_10_pct": sum(o > 0.10 for o in overheads),
                "block_pct_min_max": [round(100 * min(overheads), 1),
                                      round(100 * max(overheads), 1)]}
        return out
    finally:
        env.stop()


if __name__ == "__main__":
    run_blocks_bench(main, RESULTS, 30, 200)
