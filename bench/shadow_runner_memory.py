"""Memory of the shadow runner process (docs/rollout.md, "shadow runner"): an environment
with the low-shadow endpoint of bench/endpoints.py shadowed by async-b, warm-up calls
until their copies are recorded (the runner and its worker started), then RSS, PSS and
USS (psutil memory_full_info, Linux smaps) of the runner alone, of its shadow workers
(its children), and of the control service for comparison. Sampled a few times, the
median kept.

Prints and writes bench/results/shadow_runner_memory.json.

    .venv/bin/python bench/shadow_runner_memory.py [calls=20]
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
from endpoints import deploy, wait_for_copies  # type: ignore[import-not-found]

RESULTS = Path(__file__).parent / "results" / "shadow_runner_memory.json"
SAMPLES = 5
MIB = 1024 * 1024


def memory(processes: list[psutil.Process]) -> dict[str, float]:
    """Summed RSS, PSS and USS in MiB (PSS and USS add up across processes; RSS does not,
    shared pages are counted in each)."""
    total = {"rss": 0.0, "pss": 0.0, "uss": 0.0}
    for process in processes:
        info = process.memory_full_info()
        for key in total:
            total[key] += getattr(info, key) / MIB
    return total


def median(samples: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(s[key] for s in samples), 1) for key in samples[0]}


def main(calls: int) -> dict[str, Any]:
    env = start_env(Path(tempfile.mkdtemp(prefix="gristmill-shadow-memory-")))
    try:
        api, tokens = deploy(env, only=frozenset({"low-shadow"}))
        api.put("/deployments/low-shadow/traffic", json={"shadow": ["async-b"]}
                ).raise_for_status()
        for index in range(calls):
            httpx.post(f"{env.url}/endpoints/low-shadow", json={"text": f"m{index}"},
                       timeout=300, headers={
                           "Authorization": f"EndpointToken {tokens['low-shadow']}"}
                       ).raise_for_status()
        wait_for_copies(api, "low-shadow", calls)
        service = psutil.Process(env.process.pid)
        [runner] = [p for p in service.children(recursive=True)
                    if "gristmill_platform.executions.shadow_process" in p.cmdline()]
        workers = runner.children(recursive=True)
        service_own = [service]
        samples: dict[str, list[dict[str, float]]] = {
            "runner": [], "runner_workers": [], "runner_with_workers": [], "service": []}
        for _ in range(SAMPLES):
            samples["runner"].append(memory([runner]))
            samples["runner_workers"].append(memory(workers))
            samples["runner_with_workers"].append(memory([runner, *workers]))
            samples["service"].append(memory(service_own))
            time.sleep(0.5)
        result = {
            "python": sys.version.split()[0],
            "load_average": os.getloadavg(),
            "calls": calls,
            "runner_workers_count": len(workers),
            "mib": {name: median(found) for name, found in samples.items()},
        }
    finally:
        env.stop()
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
