"""Load and crash figures on `gristmill up` (local workers), on SQLite and PostgreSQL:

  elastic   N calls at C concurrent to an elastic endpoint whose step sleeps S seconds
            (plain HTTP client: the answer is the outputs, through the 303/307 long-poll);
            then every answered call is looked up in the deployment's history
  low       N calls at C concurrent to a low-latency endpoint (async echo, parallel
            executions); p50/p99 and every answered call looked up in history
  kill      elastic and low-latency calls in flight, the control service killed (-9)
            halfway, restarted on the same data: every call answered before the kill must
            be in history, no execution may stay Pending/Running, every failure has a reason

Counts of the issue's figures: --elastic-calls 1000 --low-calls 10000 --kill-elastic 100
--kill-low 1000 at --concurrency 64 (the defaults). Smaller counts for a quick run:

    .venv/bin/python bench/load.py [--db sqlite,postgres] [--elastic-calls 1000]
        [--low-calls 10000] [--kill-elastic 100] [--kill-low 1000] [--concurrency 64]
        [--step-seconds 1] [--only elastic,low,kill]

Prints the figures and writes bench/results/load.json. Nothing here asserts: a failed or
lost call is a figure to read, with its reason."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from _env import BenchEnv, start_env, step_archive  # type: ignore[import-not-found]

RESULTS = Path(__file__).parent / "results" / "load.json"
SETTLE_S = 300.0
POSTGRES_ADMIN = os.environ.get("GRISTMILL_TEST_POSTGRES_URL",
                                "postgresql://postgres@127.0.0.1:5432/test")
STEP = '''
import asyncio
import time


def slow(text: str, seconds: float) -> dict:
    time.sleep(seconds)
    return {"text": text}


async def echo(text: str) -> dict:
    return {"text": text}
'''


def archive() -> bytes:
    return step_archive(STEP)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"p50_ms": round(statistics.median(values) * 1000, 1),
            "p99_ms": round(percentile(values, 99) * 1000, 1),
            "max_ms": round(max(values) * 1000, 1)}


def ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


# -- environment ----------------------------------------------------------------------------

@dataclass
class Database:
    kind: str
    url: str | None  # None: the embedded SQLite file of the data dir
    cleanup: Any = None


def new_database(kind: str) -> Database:
    if kind == "sqlite":
        return Database(kind, None)
    from sqlalchemy import create_engine, text

    name = f"gristmill_load_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return Database(kind, POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{name}", drop)


def start(data_dir: Path, database: Database, port: int | None = None) -> BenchEnv:
    return start_env(data_dir, extra_env={"GRISTMILL_LOG_LEVEL": "warning"}, port=port,
                     database_url=database.url)


def api_client(env: BenchEnv) -> httpx.Client:
    token = httpx.post(f"{env.url}/api/v1/auth/refresh",
                       json={"refresh_token": env.token}, timeout=60).json()["access_token"]
    return httpx.Client(base_url=f"{env.url}/api/v1", timeout=300,
                        headers={"Authorization": f"Bearer {token}"})


def deploy(api: httpx.Client, name: str, function: str, inputs: list[str], mode: str
           ) -> str:
    fields = {"pipeline_name": name, "function_path": "main.py", "function_name": function,
              "outputs[0][name]": "text", "outputs[0][data_type]": "string"}
    for i, item in enumerate(inputs):
        fields[f"inputs[{i}][name]"] = item
        fields[f"inputs[{i}][data_type]"] = "string" if item == "text" else "number"
    created = api.post("/pipelines", data=fields, files={"step_file": ("step_file", archive())})
    created.raise_for_status()
    options: dict[str, Any] = {"pipeline_name": name, "name": name, "mode": mode}
    if mode == "low_latency":
        options |= {"enable_parallel_executions": True, "max_parallel_executions_per_pod": 64}
    endpoint = api.post("/endpoints", json=options)
    endpoint.raise_for_status()
    return str(endpoint.json()["endpoint_token"])


# -- calls ----------------------------------------------------------------------------------

@dataclass
class Call:
    status: int | None = None
    execution_id: str | None = None
    seconds: float = 0.0
    error: str | None = None


@dataclass
class Load:
    calls: list[Call] = field(default_factory=list)

    @property
    def answered(self) -> list[Call]:
        return [c for c in self.calls if c.status == 200]


async def fire(url: str, token: str, bodies: list[dict[str, Any]], concurrency: int,
               stop: asyncio.Event | None = None, load: Load | None = None) -> Load:
    """The calls' outcomes, in ``load`` (readable while they run)."""
    load = load if load is not None else Load()
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600, connect=30), limits=limits,
                                 follow_redirects=True, max_redirects=10_000) as client:

        async def one(body: dict[str, Any]) -> None:
            async with gate:
                if stop is not None and stop.is_set():
                    return
                call = Call()
                load.calls.append(call)
                begun = time.perf_counter()
                try:
                    response = await client.post(
                        url, json=body, headers={"Authorization": f"EndpointToken {token}"})
                    call.status = response.status_code
                    call.execution_id = response.headers.get("craft-ai-execution-id")
                    if call.execution_id is None and response.status_code == 200:
                        call.execution_id = response.json().get("execution_id")
                    if response.status_code != 200:
                        call.error = response.text[:300]
                except httpx.HTTPError as exc:
                    call.error = f"{type(exc).__name__}: {exc}"
                call.seconds = time.perf_counter() - begun

        await asyncio.gather(*(one(body) for body in bodies))
    return load


def history(api: httpx.Client, deployment: str) -> dict[str, dict[str, Any]]:
    response = api.get(f"/deployments/{deployment}/executions")
    response.raise_for_status()
    return {e["execution_id"]: e for e in response.json()}


def verdict(load: Load, rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    answered = load.answered
    lost = [c.execution_id for c in answered if c.execution_id not in rows]
    statuses = Counter(r["status"] for r in rows.values())
    failures = Counter((c.status, (c.error or "")[:120]) for c in load.calls if c.status != 200)
    reasons = Counter(r["status_reason"] for r in rows.values() if r["status"] == "Failed")
    return {"calls": len(load.calls), "answered_200": len(answered),
            "failed_calls": len(load.calls) - len(answered), "lost": len(lost),
            "executions": len(rows), "execution_statuses": dict(statuses),
            "failures": {f"{status}: {text}": n for (status, text), n in failures.most_common(5)},
            "failure_reasons": dict(reasons.most_common(5)),
            "latency": ms([c.seconds for c in answered])}


# -- scenarios ------------------------------------------------------------------------------

def elastic(env: BenchEnv, api: httpx.Client, calls: int, concurrency: int, seconds: float
            ) -> dict[str, Any]:
    token = deploy(api, "load-elastic", "slow", ["text", "seconds"], "elastic")
    bodies = [{"text": f"e{i}", "seconds": seconds} for i in range(calls)]
    begun = time.perf_counter()
    load = asyncio.run(fire(f"{env.url}/endpoints/load-elastic", token, bodies, concurrency))
    elapsed = time.perf_counter() - begun
    rows = history(api, "load-elastic")
    waits = [s - c for r in rows.values()
             if (c := ts(r["created_at"])) is not None and (s := ts(r["start_date"])) is not None]
    return {**verdict(load, rows), "wall_s": round(elapsed, 1),
            "queue_wait": ms(waits), "step_seconds": seconds, "concurrency": concurrency}


def low_latency(env: BenchEnv, api: httpx.Client, calls: int, concurrency: int
                ) -> dict[str, Any]:
    token = deploy(api, "load-low", "echo", ["text"], "low_latency")
    url = f"{env.url}/endpoints/load-low"
    asyncio.run(fire(url, token, [{"text": "warm"}] * 50, 8))
    begun = time.perf_counter()
    load = asyncio.run(fire(url, token, [{"text": f"l{i}"} for i in range(calls)], concurrency))
    elapsed = time.perf_counter() - begun
    time.sleep(2)  # the journal writes within a fraction of a second
    result = verdict(load, history(api, "load-low"))
    result["calls_per_s"] = round(len(load.answered) / elapsed, 1)
    return result


def kill(work: Path, database: Database, elastic_calls: int, low_calls: int,
         concurrency: int, seconds: float) -> dict[str, Any]:
    data_dir = work / "kill"
    env = start(data_dir, database)
    port = int(env.url.rsplit(":", 1)[1])
    with api_client(env) as api:
        e_token = deploy(api, "kill-elastic", "slow", ["text", "seconds"], "elastic")
        l_token = deploy(api, "kill-low", "echo", ["text"], "low_latency")
    low, elastic_load = Load(), Load()

    async def run() -> None:
        stop = asyncio.Event()

        async def killer() -> None:
            # halfway through the low-latency calls, with elastic ones running
            while sum(1 for c in low.calls if c.status == 200) < low_calls // 2:
                await asyncio.sleep(0.05)
            os.kill(env.process.pid, signal.SIGKILL)
            stop.set()

        killer_task = asyncio.create_task(killer())
        await asyncio.gather(
            fire(f"{env.url}/endpoints/kill-low", l_token,
                 [{"text": f"k{i}"} for i in range(low_calls)], concurrency, stop, low),
            fire(f"{env.url}/endpoints/kill-elastic", e_token,
                 [{"text": f"k{i}", "seconds": seconds} for i in range(elastic_calls)],
                 concurrency, stop, elastic_load))
        killer_task.cancel()
        if env.process.poll() is None:  # every call ended before the halfway mark
            os.kill(env.process.pid, signal.SIGKILL)

    asyncio.run(run())
    env.process.wait(timeout=30)
    # workers of the killed service may linger; the restarted one adopts or fails them
    restarted = start(data_dir, database, port)
    try:
        # until nothing is Pending/Running (accepted work resumes; lost workers are failed
        # by the reconciler), at most SETTLE_S
        deadline = time.monotonic() + SETTLE_S
        with api_client(restarted) as api:
            while True:
                low_rows, elastic_rows = history(api, "kill-low"), history(api, "kill-elastic")
                if time.monotonic() > deadline or not any(
                        r["status"] in ("Pending", "Running")
                        for r in (*low_rows.values(), *elastic_rows.values())):
                    break
                time.sleep(2)
    finally:
        restarted.stop()
    stuck = [r for r in (*low_rows.values(), *elastic_rows.values())
             if r["status"] in ("Pending", "Running")]
    unexplained = [r for r in (*low_rows.values(), *elastic_rows.values())
                   if r["status"] == "Failed" and not r["status_reason"]]
    return {"low": verdict(low, low_rows), "elastic": verdict(elastic_load, elastic_rows),
            "stuck_after_restart": len(stuck), "failed_without_reason": len(unexplained)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite,postgres")
    parser.add_argument("--only", default="elastic,low,kill")
    parser.add_argument("--elastic-calls", type=int, default=1000)
    parser.add_argument("--low-calls", type=int, default=10_000)
    parser.add_argument("--kill-elastic", type=int, default=100)
    parser.add_argument("--kill-low", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--step-seconds", type=float, default=1.0)
    args = parser.parse_args()
    wanted = set(args.only.split(","))

    results: dict[str, Any] = {
        "arguments": vars(args),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    for kind in args.db.split(","):
        database = new_database(kind)
        figures: dict[str, Any] = {}
        try:
            with tempfile.TemporaryDirectory(prefix="gristmill-load-") as tmp:
                work = Path(tmp)
                if wanted & {"elastic", "low"}:
                    env = start(work / "env", database)
                    try:
                        with api_client(env) as api:
                            if "elastic" in wanted:
                                figures["elastic"] = elastic(env, api, args.elastic_calls,
                                                             args.concurrency,
                                                             args.step_seconds)
                                print(kind, "elastic", json.dumps(figures["elastic"]))
                            if "low" in wanted:
                                figures["low_latency"] = low_latency(
                                    env, api, args.low_calls, args.concurrency)
                                print(kind, "low", json.dumps(figures["low_latency"]))
                    finally:
                        env.stop()
                if "kill" in wanted:
                    kill_db = new_database(kind) if kind != "sqlite" else database
                    try:
                        figures["kill"] = kill(work, kill_db, args.kill_elastic,
                                               args.kill_low, args.concurrency,
                                               args.step_seconds)
                    finally:
                        if kill_db is not database and kill_db.cleanup:
                            kill_db.cleanup()
                    print(kind, "kill", json.dumps(figures["kill"]))
        finally:
            if database.cleanup:
                database.cleanup()
        results[kind] = figures
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
