"""Dispatch latency of elastic executions on Kubernetes: a pool hit against a cold pod.

Runs the control service with ``executor=kubernetes`` against the API emulator (kmock) and
the kubelet double of the test suite (tests/platform/backends/kubelet.py), which runs each
pod's container as a local process: what it measures is the control service's and the
runner's part of a dispatch, plus the double's 50 ms status loop, never a real node's
scheduling, image pull or container start (docs/kubernetes.md says what those add).

Dispatch = the execution's ``started_at - created_at`` (accepted -> the runner's
``POST /start``), read from the database, for N executions of a trivial step run one
after the other:

  cold       GRISTMILL_KUBERNETES_ELASTIC_POOL_SIZE=0: a pod per execution, its process
             started when the double sees the pod (interpreter start, runner import)
  pool_hit   size 1: before each run, the step's pool pod is waiting in its claim; the
             execution is handed to it (pod patch, commit, claim answered, token minted)

Writes bench/results/k8s_pool.json.

    .venv/bin/python bench/k8s_pool.py [--runs 30]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.datastore_conformance.conftest import Moto, moto_server  # noqa: E402
from tests.platform.backends.conftest import Backend, _emulated  # noqa: E402
from tests.platform.stepkit import archive_of, post_step, step_form, write_folder  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "k8s_pool.json"
STEP = 'def echo(text: str) -> dict:\n    return {"text": text}\n'
TEXT = [{"name": "text", "data_type": "string"}]
PATIENCE_S = 120.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(statistics.median(values) * 1000, 1),
            "p95_ms": round(percentile(values, 95) * 1000, 1),
            "mean_ms": round(statistics.fmean(values) * 1000, 1),
            "min_ms": round(min(values) * 1000, 1), "max_ms": round(max(values) * 1000, 1)}


def until(condition: Any, what: str) -> Any:
    deadline = time.monotonic() + PATIENCE_S
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"never happened: {what}")
        time.sleep(0.02)


def timestamps(backend: Backend, execution_id: str) -> tuple[float, float, str]:
    database = str(backend.env.settings.database_url).removeprefix("sqlite:///")
    with sqlite3.connect(database) as db:
        created, started, worker = db.execute(
            "SELECT created_at, started_at, worker FROM executions WHERE id = ?",
            (execution_id,)).fetchone()
    return (datetime.fromisoformat(str(created)).timestamp(),
            datetime.fromisoformat(str(started)).timestamp(), str(worker))


def measure(mode: str, runs: int, moto: Moto, root: Path) -> dict[str, Any]:
    size = 1 if mode == "pool_hit" else 0
    (root / mode).mkdir(parents=True)
    environment = _emulated(root / mode, moto, kubernetes_elastic_pool_size=size,
                            kubernetes_elastic_pool_idle_s=600.0)
    backend = next(environment)
    try:
        with backend.env.client() as api:
            folder = write_folder(root / f"{mode}-step", {"src/steps.py": STEP})
            response = post_step(api, step_form("echo", function_path="src/steps.py",
                                                function_name="echo", inputs=TEXT,
                                                outputs=TEXT, name_field="pipeline_name"),
                                 archive_of(folder), route="/pipelines")
            assert response.status_code == 201, response.text
            pool = backend.state.executions.pool
            dispatch: list[float] = []
            workers: list[str] = []
            for number in range(runs + 1):  # the first one warms up (and, pooled, misses)
                if pool is not None and number > 0:
                    until(lambda: any(pool.waiting(name) for name in pool.idle_pods()),
                          "a pool pod waiting in its claim")
                started = api.post("/pipelines/echo/run",
                                   data={"json_inputs": json.dumps({"text": str(number)})})
                assert started.status_code == 201, started.text
                execution_id = started.json()["execution_id"]
                outputs = api.get(f"/executions/{execution_id}/outputs",
                                  params={"wait_for_results": "true"}, timeout=120)
                assert outputs.status_code == 200, outputs.text
                created, begun, worker = timestamps(backend, execution_id)
                if number > 0:
                    dispatch.append(begun - created)
                    workers.append(worker)
            hits = sum(worker.startswith("gm-pool-") for worker in workers)
            return {"runs": runs, "pool_size": size, "dispatch": summary(dispatch),
                    "pool_pods_used": hits,
                    "stats": vars(pool.stats) if pool is not None else None}
    finally:
        with contextlib.suppress(StopIteration):
            next(environment)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="gristmill-k8s-pool-") as scratch, \
            moto_server() as moto:
        results = {mode: measure(mode, args.runs, moto, Path(scratch))
                   for mode in ("cold", "pool_hit")}
    report = {
        "what": "elastic dispatch latency (accepted -> runner /start) on the API emulator "
                "with the kubelet double: a cold pod per execution vs a pool hit",
        "measured": results,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    for mode, result in results.items():
        figures = result["dispatch"]
        print(f"{mode:9} p50 {figures['p50_ms']:8.1f} ms  p95 {figures['p95_ms']:8.1f} ms  "
              f"({result['pool_pods_used']}/{result['runs']} on pool pods)")
    print(f"load average {report['load_average_before']} -> {report['load_average_after']}")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
