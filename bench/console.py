"""Web console server time with 100,000 executions in the database, SQLite and PostgreSQL.

Seeds 100,000 executions (5 pipelines, 3 deployments, mixed statuses, 60 days) into a
throwaway `gristmill up` environment, then times the console's pages as the server sees
them (the ``Server-Timing: app;dur=`` header: handler and transaction, not the network):

  executions list       first page, newest first
  executions filtered   one pipeline + status
  executions page 50    following the next-page links 49 times (key paging)
  executions sorted     by status
  execution page        one execution with its logs and metrics
  deployments page      the list of deployments
  deployment page       one deployment: recent executions, metrics, logs
  deployment traffic    its Traffic section (loaded after the page): the rule and the
                        comparison of its last 10,000 executions

Target: p95 <= 100 ms. Writes bench/results/console.json.

    .venv/bin/python bench/console.py [--executions 100000] [--repeat 40] [--postgres URL]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import statistics
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from _env import start_env  # type: ignore[import-not-found]
from elastic_run import archive  # type: ignore[import-not-found]

POSTGRES = os.environ.get("GRISTMILL_TEST_POSTGRES_URL",
                          "postgresql://postgres@127.0.0.1:5432/test")
PIPELINES = [f"bench-p{i}" for i in range(5)]
DEPLOYMENTS = [f"bench-d{i}" for i in range(3)]
STATUSES = ["succeeded"] * 85 + ["failed"] * 10 + ["running"] * 3 + ["pending"] * 2


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def seed(database_url: str, count: int) -> None:
    import sqlalchemy

    from gristmill_platform.db.models.executions import Execution, ExecutionLog, MetricValue
    from gristmill_platform.db.urls import sync_url

    engine = sqlalchemy.create_engine(sync_url(database_url))
    rng = random.Random(12)
    now = datetime.now(UTC)
    rows = []
    for i in range(count):
        created = now - timedelta(seconds=rng.uniform(0, 60 * 86400))
        status = rng.choice(STATUSES)
        deployment = rng.choice([None, *DEPLOYMENTS])
        pipeline = rng.choice(PIPELINES)
        rows.append({
            "id": f"{pipeline}-{i:06d}-{rng.getrandbits(32):08x}",
            "pipeline_name": pipeline, "step_name": "echo", "deployment_name": deployment,
            "execution_rule": "endpoint" if deployment else "run", "status": status,
            "inputs": [{"pipeline_input_name": "text", "data_type": "string",
                        "mapping_type": "endpoint", "mapping_value": {}, "value": "hi"}],
            "outputs": [{"pipeline_output_name": "text", "data_type": "string",
                         "mapping_type": "endpoint", "mapping_value": {}, "value": "hi"}],
            "created_at": created, "started_at": created + timedelta(seconds=1),
            "ended_at": None if status in ("running", "pending") else
            created + timedelta(seconds=rng.uniform(2, 60)),
        })
    with engine.begin() as connection:
        for start in range(0, len(rows), 5000):
            connection.execute(sqlalchemy.insert(Execution.__table__), rows[start:start + 5000])
        sample = rows[0]["id"]
        connection.execute(sqlalchemy.insert(ExecutionLog.__table__), [
            {"execution_id": sample, "seq": n, "timestamp": now, "stream": "stdout",
             "message": f"line {n}"} for n in range(200)])
        connection.execute(sqlalchemy.insert(MetricValue.__table__), [
            {"execution_id": sample, "name": "score", "value": 0.5,
             "pipeline_name": rows[0]["pipeline_name"], "created_at": now}])
    if engine.dialect.name == "postgresql":
        # committed, or the statistics are rolled back with the transaction: what
        # autovacuum's analyze gives a real database a minute after such an insert
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text("ANALYZE executions"))
    engine.dispose()


def server_ms(response: httpx.Response) -> float:
    match = re.search(r"app;dur=([0-9.]+)", response.headers.get("server-timing", ""))
    if response.status_code != 200 or not match:
        raise SystemExit(f"{response.request.url} answered {response.status_code}: "
                         f"{response.text[:300]}")
    return float(match.group(1))


def measure(url: str, token: str, repeat: int) -> dict[str, dict[str, float]]:
    http = httpx.Client(base_url=url, headers={"accept": "text/html"}, timeout=60)
    assert http.post("/console/sign-in", data={"token": token}).status_code == 303
    first = http.get("/console/executions")
    sample = re.findall(r'<tr id="exec-([^"]+)"', first.text)[0]
    cases = {
        "executions list": "/console/executions",
        "executions filtered": f"/console/executions?pipeline={PIPELINES[2]}&status=failed",
        "executions sorted": "/console/executions?sort=status",
        "execution page": f"/console/executions/{sample}",
        "deployments page": "/console/deployments",
        "deployment page": f"/console/deployments/{DEPLOYMENTS[0]}",
        "deployment traffic": f"/console/deployments/{DEPLOYMENTS[0]}/traffic",
    }
    results: dict[str, dict[str, float]] = {}
    for name, path in cases.items():
        times = [server_ms(http.get(path)) for _ in range(repeat + 3)][3:]
        results[name] = summary(times)
    # the 50th page through next-page links
    times = []
    for _ in range(max(3, repeat // 10)):
        path = "/console/executions"
        for _ in range(49):
            page = http.get(path)
            path = re.search(r'rel="next" href="([^"]+)"', page.text).group(1).replace(
                "&amp;", "&")
        times.append(server_ms(http.get(path)))
    results["executions page 50"] = summary(times)
    return results


def summary(times: list[float]) -> dict[str, float]:
    return {"p50_ms": round(statistics.median(times), 2),
            "p95_ms": round(percentile(times, 0.95), 2), "n": len(times)}


def run_one(kind: str, database_url: str | None, count: int, repeat: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="gristmill-bench-console-") as work:
        if database_url:
            os.environ["GRISTMILL_DATABASE_URL"] = database_url
        else:
            os.environ.pop("GRISTMILL_DATABASE_URL", None)
        env = start_env(Path(work) / "env")
        try:
            access = httpx.post(f"{env.url}/api/v1/auth/refresh",
                                json={"refresh_token": env.token}).json()["access_token"]
            api = httpx.Client(base_url=f"{env.url}/api/v1", timeout=120,
                               headers={"Authorization": f"Bearer {access}"})
            for name in PIPELINES:
                api.post("/pipelines", data={
                    "pipeline_name": name, "function_path": "main.py", "function_name": "echo",
                    "inputs[0][name]": "text", "inputs[0][data_type]": "string",
                    "outputs[0][name]": "text", "outputs[0][data_type]": "string",
                }, files={"step_file": ("step_file", archive())}).raise_for_status()
            for index, name in enumerate(DEPLOYMENTS):
                api.post("/endpoints", json={"pipeline_name": PIPELINES[index], "name": name,
                                             "mode": "elastic"}).raise_for_status()
            url = database_url or f"sqlite:///{Path(work) / 'env' / 'gristmill.sqlite3'}"
            seed(url, count)
            return {"database": kind, "executions": count, **measure(env.url, env.token,
                                                                     repeat)}
        finally:
            env.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--postgres", default=POSTGRES)
    args = parser.parse_args()
    runs = [run_one("sqlite", None, args.executions, args.repeat)]
    try:
        import psycopg
        from sqlalchemy.engine import make_url

        name = f"gristmill_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(args.postgres, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = make_url(args.postgres).set(database=name).render_as_string(hide_password=False)
        try:
            runs.append(run_one("postgresql", url, args.executions, args.repeat))
        finally:
            with psycopg.connect(args.postgres, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except Exception as exc:  # no server: SQLite figures only, said so
        print(f"PostgreSQL skipped: {exc}")
    for run in runs:
        print(f"\n{run['database']} ({run['executions']} executions), server time:")
        for case, figures in run.items():
            if isinstance(figures, dict):
                print(f"  {case:22} p50 {figures['p50_ms']:7.2f} ms   p95 "
                      f"{figures['p95_ms']:7.2f} ms")
    out = Path(__file__).parent / "results" / "console.json"
    out.write_text(json.dumps({"date": datetime.now(UTC).isoformat(timespec="seconds"),
                               "machine": platform.platform(), "cpus": os.cpu_count(),
                               # other work on the machine inflates every figure: say how much
                               "load_average": os.getloadavg(),
                               "target_p95_ms": 100, "runs": runs}, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
