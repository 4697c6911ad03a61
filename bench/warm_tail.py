"""The tail of sequential warm calls, this tree against another.

`bench/endpoints.py` compares Gristmill's low-latency p99 with BentoML's and a bare app's,
one block per server per round; a change to the control service's background work (the
tracking batches, the periodic tasks) moves the tail by less than the rounds' spread
there. This bench runs two environments side by side, this tree's control service and
the one of the source tree in DIR (same interpreter and packages), each with the
low-latency echo endpoint of `bench/endpoints.py`, and sends sequential calls to them in
alternating blocks (a new client per block, after 100 warm-up calls), the order
alternating, so a host whose speed drifts slows both alike; after each block, a pause of
`_env.SETTLE_S` (the work a side does once its callers pause, its checkpoints, is done
before the other side's block, not in it). For each: p50, p99, p99.9,
the largest, and how many calls took over 5 and 8 ms. Then, for each, the other side of
the trade: API requests (GET /api/v1/users/me, one every 30 ms) while a thread keeps
sending warm calls, whose tracking batches every API request's transaction waits for
(the journal's barrier), and those warm calls' own latency meanwhile. Writes
bench/results/warm_tail.json.

    .venv/bin/python bench/warm_tail.py --baseline DIR [--tree DIR2] [--blocks 12]
        [--calls 1500]

`--tree DIR2` runs this side from a source tree too (say `git worktree add /tmp/head
HEAD`): an A/A run of this tree against a copy of itself favoured the baseline (run
from PYTHONPATH, where this side runs from the editable install) by up to 10 % on the API
requests; with both sides from PYTHONPATH, an A/A run agreed within 1 %.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from _env import (  # type: ignore[import-not-found]
    SETTLE_S,
    BenchEnv,
    add_tree_option,
    collector_paused,
    source_tree_env,
    start_env,
    tree_env,
)
from endpoints import deploy  # type: ignore[import-not-found]

RESULTS = Path(__file__).parent / "results" / "warm_tail.json"
WARM_UP = 100


class Side:
    def __init__(self, name: str, env: BenchEnv) -> None:
        self.name, self.env = name, env
        self.api, tokens = deploy(env, only=frozenset({"low"}))
        self.url = f"{env.url}/endpoints/low"
        self.headers = {"Authorization": f"EndpointToken {tokens['low']}"}
        self.samples: list[float] = []
        self.api_samples: list[float] = []
        self.under_api: list[float] = []  # the warm calls meanwhile

    def block(self, calls: int) -> None:
        with httpx.Client(trust_env=False, timeout=60, headers=self.headers) as client:
            for _ in range(WARM_UP):
                client.post(self.url, json={"text": "hi"}).raise_for_status()
            with collector_paused():
                for _ in range(calls):
                    start = time.perf_counter()
                    response = client.post(self.url, json={"text": "hi"})
                    self.samples.append(time.perf_counter() - start)
                    response.raise_for_status()

    def api_under_load(self, requests: int) -> None:
        stop = threading.Event()

        def warm() -> None:
            with httpx.Client(trust_env=False, timeout=60, headers=self.headers) as client:
                while not stop.is_set():
                    start = time.perf_counter()
                    client.post(self.url, json={"text": "hi"}).raise_for_status()
                    self.under_api.append(time.perf_counter() - start)

        with collector_paused():
            thread = threading.Thread(target=warm)
            thread.start()
            try:
                time.sleep(1)
                for _ in range(requests):
                    start = time.perf_counter()
                    self.api.get("/users/me").raise_for_status()
                    self.api_samples.append(time.perf_counter() - start)
                    time.sleep(0.03)
            finally:
                stop.set()
                thread.join()

    def report(self) -> dict[str, Any]:
        api = sorted(self.api_samples)
        ordered = sorted(self.samples)
        count = len(ordered)

        def at(samples: list[float], q: float) -> float | None:
            if not samples:
                return None
            return round(samples[min(len(samples) - 1, int(len(samples) * q))] * 1000, 3)

        under_api = sorted(self.under_api)
        return {"calls": count, "p50_ms": at(ordered, 0.5), "p99_ms": at(ordered, 0.99),
                "p999_ms": at(ordered, 0.999), "max_ms": at(ordered, 1.0),
                "over_5ms": sum(s > 0.005 for s in ordered),
                "over_8ms": sum(s > 0.008 for s in ordered),
                "api_under_warm_load_ms": {
                    "requests": len(api), "p50": at(api, 0.5), "p90": at(api, 0.9),
                    "max": at(api, 1.0)},
                # the other way round: the warm calls while API requests come
                "warm_calls_meanwhile_ms": {
                    "calls": len(under_api), "p50": at(under_api, 0.5),
                    "p99": at(under_api, 0.99), "p999": at(under_api, 0.999)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True,
                        help="a source tree (say `git worktree add /tmp/base <rev>`)")
    add_tree_option(parser)
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--calls", type=int, default=1500)
    parser.add_argument("--api-requests", type=int, default=300)
    args = parser.parse_args()
    sides: list[Side] = []
    load_start = os.getloadavg()[0]
    try:
        with tempfile.TemporaryDirectory(prefix="gristmill-bench-") as work:
            this = "this tree" if args.tree is None else f"tree ({args.tree})"
            for name, extra in ((this, tree_env(args.tree)),
                                (f"baseline ({args.baseline})",
                                 source_tree_env(args.baseline))):
                env = start_env(Path(work) / f"side{len(sides)}", extra_env=extra)
                sides.append(Side(name, env))
            for block in range(args.blocks):
                for side in sides if block % 2 == 0 else reversed(sides):
                    side.block(args.calls)
                    time.sleep(SETTLE_S)  # its pause work done before the other's block
                print(f"block {block + 1}/{args.blocks}", flush=True)
            for round_ in range(2):  # in turns, twice
                for side in sides if round_ == 0 else reversed(sides):
                    side.api_under_load(args.api_requests // 2)
                    time.sleep(SETTLE_S)
            results = {
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                            "load_average": [round(load_start, 2),
                                             round(os.getloadavg()[0], 2)]},
                "blocks": args.blocks, "calls_per_block": args.calls,
                "sides": {side.name: side.report() for side in sides}}
    finally:
        for side in sides:
            side.env.stop()
    for name, report in results["sides"].items():
        print(f"{name:<40} " + "  ".join(f"{k} {v}" for k, v in report.items()))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
