"""End-to-end run of a trivial step on `gristmill up`: where an elastic execution's
time goes.

For N runs of a step with no requirements (echo of a string), measures on the client the
whole `run + wait for results` round trip, and from the execution's own timestamps:
  accept   POST /run answered (execution recorded, execution token minted)
  launch   from the execution's creation to the runner's /start call: process spawn,
           interpreter start, runner import, token refresh
  run      from /start to /finish: inputs, user module import and call, result report
  deliver  from /finish to the client holding the outputs (long-poll wake-up)
Beside it, the bare cost of starting the step's interpreter (`python -c pass`) and of
importing the runner, on the same machine in the same run. Writes bench/results/elastic_run.json.

    .venv/bin/python bench/elastic_run.py [--runs 50]
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import subprocess
import tarfile
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
from _env import start_env  # type: ignore[import-not-found]

RESULTS = Path(__file__).parent / "results" / "elastic_run.json"
STEP = 'def echo(text: str) -> dict:\n    return {"text": text}\n'


def archive() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = STEP.encode()
        info = tarfile.TarInfo("main.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="gristmill-bench-") as work:
        env = start_env(Path(work) / "env")
        try:
            token = httpx.post(f"{env.url}/api/v1/auth/refresh",
                               json={"refresh_token": env.token}).json()["access_token"]
            api = httpx.Client(base_url=f"{env.url}/api/v1", timeout=120,
                               headers={"Authorization": f"Bearer {token}"})
            created = api.post("/pipelines", data={
                "pipeline_name": "echo", "function_path": "main.py", "function_name": "echo",
                "inputs[0][name]": "text", "inputs[0][data_type]": "string",
                "outputs[0][name]": "text", "outputs[0][data_type]": "string",
            }, files={"step_file": ("step_file", archive())})
            created.raise_for_status()
            python = str(next((Path(work) / "env" / "venvs").glob("*/bin/python")))
            rows = []
            for i in range(args.runs + 2):  # the first two warm caches; not counted
                start = time.perf_counter()
                wall_start = time.time()
                posted = api.post("/pipelines/echo/run",
                                  data={"json_inputs": json.dumps({"text": f"hi {i}"})})
                accepted = time.perf_counter()
                execution_id = posted.json()["execution_id"]
                while True:
                    result = api.get(f"/executions/{execution_id}/outputs",
                                     params={"wait_for_results": "true"},
                                     follow_redirects=False)
                    if result.status_code != 307:
                        break
                done = time.perf_counter()
                wall_done = time.time()
                if result.status_code != 200:
                    raise SystemExit(f"run failed: {result.text}")
                execution = api.get(f"/executions/{execution_id}").json()
                created_at, started = ts(execution["created_at"]), ts(execution["start_date"])
                ended = ts(execution["end_date"])
                if i >= 2:
                    rows.append({
                        "total": done - start, "accept": accepted - start,
                        "launch": started - created_at, "run": ended - started,
                        "deliver": max(0.0, wall_done - ended),
                        "client_to_created": max(0.0, created_at - wall_start),
                    })
            bare = bare_costs(python)
        finally:
            env.stop()

    results = {
        "runs": args.runs,
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        "end_to_end": summary([r["total"] for r in rows]),
        "phases": {k: summary([r[k] for r in rows])
                   for k in ("accept", "launch", "run", "deliver")},
        "bare": bare,
        "targets": {"p50_ms_below": 300},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"elastic run of a trivial step, {args.runs} runs (ms)")
    print(f"{'':<28}{'p50':>8}{'p95':>8}")
    line = results["end_to_end"]
    print(f"{'end to end':<28}{line['p50_ms']:>8}{line['p95_ms']:>8}")
    for name, values in results["phases"].items():
        print(f"  {name:<26}{values['p50_ms']:>8}{values['p95_ms']:>8}")
    for name, values in bare.items():
        print(f"{'bare ' + name:<28}{values['p50_ms']:>8}{values['p95_ms']:>8}")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
