"""How long a control service takes to follow an update or a deletion of a low-latency
deployment made through another one sharing its PostgreSQL database, with no call made
through it (docs/rollout.md#replicas: the periodic check, GRISTMILL_WORKER_FOLLOW_S).

Two `gristmill serve` processes on one fresh PostgreSQL database and data directory.
Each round creates a low-latency endpoint through replica A, calls it once through B (its
worker pid), updates it through A --updates times, then deletes it through A:

* roll: from the start of the PATCH through A (and from its answer, which comes once
  A's own worker rolled) to the first read of B's deployment (GET /deployments/<name>,
  polled every --poll-ms) that lists only B's worker of the new generation, running:
  detection, the new worker's start (its module imported) and the swap;
* stop: from the end of the DELETE through A to the first poll that finds B's worker
  process gone.

Writes bench/results/replica_workers.json.

    .venv/bin/python bench/replica_workers.py [--rounds 3] [--updates 5] [--poll-ms 20]
        [--postgres postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from _env import free_port, step_archive  # type: ignore[import-not-found]
from rollout_replicas import serve, stop  # type: ignore[import-not-found]

HERE = Path(__file__).parent
RESULTS = HERE / "results" / "replica_workers.json"
STEP = '''
import os


def who(text: str) -> dict:
    return {"pid": os.getpid()}
'''
GIVE_UP_S = 60.0


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def until(check: Any, poll_s: float) -> float:
    """Seconds from now to the start of the first poll at which check() holds."""
    start = time.monotonic()
    while True:
        sent = time.monotonic()
        if check():
            return sent - start
        if sent - start > GIVE_UP_S:
            raise RuntimeError(f"not followed within {GIVE_UP_S} s")
        time.sleep(poll_s)


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"min": round(ordered[0] * 1000), "p50": round(statistics.median(ordered) * 1000),
            "max": round(ordered[-1] * 1000)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--updates", type=int, default=5)
    parser.add_argument("--poll-ms", type=float, default=20.0)
    parser.add_argument("--postgres", default=os.environ.get(
        "GRISTMILL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()
    poll_s = args.poll_ms / 1000

    import psycopg
    from sqlalchemy.engine import make_url

    from gristmill_platform.bootstrap import prepare_environment
    from gristmill_platform.settings import Settings, resolve_settings

    database = f"gristmill_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(args.postgres, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    url = make_url(args.postgres).set(database=database).render_as_string(
        hide_password=False)
    processes = []
    rolls: list[float] = []
    rolls_from_sent: list[float] = []
    patches: list[float] = []  # A's own roll: its PATCH answers once its new worker serves
    stops: list[float] = []
    loads: list[float] = [os.getloadavg()[0]]
    try:
        data_dir = Path(tempfile.mkdtemp(prefix="gristmill-replicas-")) / "shared"
        sdk_token = prepare_environment(resolve_settings(
            Settings(data_dir=data_dir, database_url=url))).sdk_token
        ports = [free_port(), free_port()]
        processes = [serve(data_dir, url, port) for port in ports]
        a, b = (f"http://127.0.0.1:{port}" for port in ports)
        clients = []
        for base in (a, b):
            access = httpx.post(f"{base}/api/v1/auth/refresh",
                                json={"refresh_token": sdk_token}).json()["access_token"]
            clients.append(httpx.Client(base_url=f"{base}/api/v1", timeout=300,
                                        headers={"Authorization": f"Bearer {access}"}))
        api, on_b = clients
        api.post("/pipelines", data={
            "function_path": "main.py", "inputs[0][name]": "text",
            "inputs[0][data_type]": "string", "outputs[0][name]": "pid",
            "outputs[0][data_type]": "number", "pipeline_name": "who", "function_name": "who"},
            files={"step_file": ("step_file", step_archive(STEP))}).raise_for_status()
        for number in range(args.rounds):
            name = f"ep{number}"
            created = api.post("/endpoints", json={"pipeline_name": "who", "name": name,
                                                   "mode": "low_latency"})
            created.raise_for_status()
            token = created.json()["endpoint_token"]
            # its first call through B brings B's worker up
            answer = httpx.post(f"{b}/endpoints/{name}", json={"text": "x"}, timeout=300,
                                headers={"Authorization": f"EndpointToken {token}"})
            answer.raise_for_status()
            for _ in range(args.updates):
                sent = time.monotonic()
                updated = api.patch(f"/deployments/{name}", json={})
                updated.raise_for_status()
                patch_s = time.monotonic() - sent
                wanted = [{"pod_id": f"local-{name}-{updated.json()['version']}",
                           "status": "running"}]
                rolls.append(until(
                    lambda n=name, w=wanted: on_b.get(f"/deployments/{n}").json()["pods"] == w,
                    poll_s))
                rolls_from_sent.append(patch_s + rolls[-1])
                patches.append(patch_s)
                print(f"{name}: roll followed {rolls[-1] * 1000:.0f} ms after the PATCH "
                      f"returned, {rolls_from_sent[-1] * 1000:.0f} ms after it was sent",
                      flush=True)
            answer = httpx.post(f"{b}/endpoints/{name}", json={"text": "x"}, timeout=300,
                                headers={"Authorization": f"EndpointToken {token}"})
            answer.raise_for_status()
            pid = int(answer.json()["outputs"]["pid"])
            api.delete(f"/deployments/{name}").raise_for_status()
            stops.append(until(lambda p=pid: gone(p), poll_s))
            print(f"{name}: deletion followed in {stops[-1] * 1000:.0f} ms", flush=True)
            loads.append(os.getloadavg()[0])
    finally:
        for process in processes:
            stop(process)
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_1m": [round(load, 1) for load in loads]},
        "method": {"rounds": args.rounds, "updates_per_round": args.updates,
                   "poll_ms": args.poll_ms, "database": "postgresql",
                   "follow_s": float(os.environ.get("GRISTMILL_WORKER_FOLLOW_S", "0.5"))},
        "roll_ms_after_patch_returned": summary(rolls),
        "roll_ms_after_patch_sent": summary(rolls_from_sent),
        "patch_ms_a_own_roll": summary(patches), "stop_ms": summary(stops),
        "rolls_within_1s_of_patch_sent": sum(d <= 1.0 for d in rolls_from_sent),
        "rolls_measured": len(rolls)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"update followed (B's new worker serving), from the PATCH sent: "
          f"{results['roll_ms_after_patch_sent']}, from its answer: "
          f"{results['roll_ms_after_patch_returned']} (A's own roll, the PATCH: "
          f"{results['patch_ms_a_own_roll']}); deletion followed (B's worker gone): "
          f"{results['stop_ms']} (ms); {results['rolls_within_1s_of_patch_sent']}/"
          f"{len(rolls)} rolls within 1 s of the PATCH sent; load "
          f"{results['machine']['load_average_1m']}; written to {RESULTS}")


if __name__ == "__main__":
    main()
