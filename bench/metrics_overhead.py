"""What the service's own Prometheus metrics add to one request: the cost of recording a
request (counter + latency histogram, bound label children), of the two clock reads around
it, and of a scrape of the whole registry. Run beside bench/endpoints.py, whose p50 (about
2 ms for a warm low-latency call) these figures are to be compared with. Writes
bench/results/metrics_overhead.json.

    .venv/bin/python bench/metrics_overhead.py [--n 200000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from gristmill_platform.telemetry import metrics
from gristmill_platform.telemetry.exposition import MetricsEndpoint
from gristmill_platform.telemetry.live import LiveGauges

RESULTS = Path(__file__).parent / "results" / "metrics_overhead.json"


def per_call_ns(function: object, n: int, repeats: int = 5) -> float:
    """Median over repeats of the mean cost of one call, in nanoseconds."""
    call = function  # type: ignore[assignment]
    runs = []
    for _ in range(repeats):
        started = time.perf_counter_ns()
        for _ in range(n):
            call()  # type: ignore[operator]
        runs.append((time.perf_counter_ns() - started) / n)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    args = parser.parse_args()
    n = args.n

    def empty() -> None:
        pass

    def record_request() -> None:
        started = time.perf_counter()
        metrics.observe_http("GET", "/api/v1/executions/{execution_id}", 200,
                             time.perf_counter() - started)

    def record_fast_path() -> None:
        started = time.perf_counter()
        metrics.observe_fast_path(200, time.perf_counter() - started)

    def count_execution() -> None:
        metrics.execution_started("low_latency", "endpoint")

    baseline = per_call_ns(empty, n)
    request = per_call_ns(record_request, n) - baseline
    fast = per_call_ns(record_fast_path, n) - baseline
    execution = per_call_ns(count_execution, n) - baseline

    from gristmill_platform.settings import Settings

    endpoint = MetricsEndpoint(Settings(), LiveGauges())
    scrapes = [0.0] * 50
    for i in range(len(scrapes)):
        started = time.perf_counter()
        body = endpoint.render()
        scrapes[i] = time.perf_counter() - started
    result = {
        "machine": platform.machine(), "python": platform.python_version(),
        "calls": n,
        # a shared machine's load inflates every figure alike: read them relative
        "load_average_1m": round(os.getloadavg()[0], 2),
        "record_request_ns": round(request),
        "record_fast_path_request_ns": round(fast),
        "count_execution_ns": round(execution),
        "scrape_ms_p50": round(statistics.median(scrapes) * 1000, 3),
        "scrape_bytes": len(body),
    }
    print(f"recording one request (2 clock reads, counter, histogram): {request:.0f} ns")
    print(f"recording one fast-path request (same, children pre-bound): {fast:.0f} ns")
    print(f"counting one execution start:                              {execution:.0f} ns")
    print(f"one scrape of the registry: {result['scrape_ms_p50']} ms p50, {len(body)} bytes")
    print(f"(load average {result['load_average_1m']} on {os.cpu_count()} cores)")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
