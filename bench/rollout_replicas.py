"""How long a traffic rule set through one control service takes to apply to calls made
through another sharing its PostgreSQL database (docs/rollout.md#replicas; the issue asks
for agreement within 1 s).

Two `gristmill serve` processes on one fresh PostgreSQL database and data directory, a
low-latency endpoint whose champion and challenger pipelines both have warm workers on
both replicas. Each flip sets a rule through replica A (alternately a key rule sending
text "b" to the challenger, and no rule), then calls replica B every --poll-ms until the
X-Gristmill-Pipeline header shows it. The delay of a flip is from the end of the PUT to
the start of the first call that showed the new rule (so the poll interval bounds its
precision). Writes bench/results/rollout_replicas.json.

    .venv/bin/python bench/rollout_replicas.py [--flips 20] [--poll-ms 20]
        [--postgres postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from _env import free_port, step_archive  # type: ignore[import-not-found]

HERE = Path(__file__).parent
RESULTS = HERE / "results" / "rollout_replicas.json"
STEP = '''
def champion(text: str) -> dict:
    return {"text": "champion"}


def challenger(text: str) -> dict:
    return {"text": "challenger"}
'''
GIVE_UP_S = 30.0


def serve(data_dir: Path, database_url: str, port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "gristmill.cli", "serve", "--data-dir", str(data_dir),
         "--port", str(port), "--database-url", database_url],
        env={**os.environ, "GRISTMILL_LOG_LEVEL": "warning"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("gristmill serve exited early")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("gristmill serve did not start")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def answering(client: httpx.Client, url: str, text: str) -> str:
    # as an SDK caller: the 303 comes at once, the header names the answering pipeline
    response = client.post(url, json={"text": text})
    if response.status_code != 303:
        raise RuntimeError(f"{response.status_code} {response.text}")
    return response.headers["x-gristmill-pipeline"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flips", type=int, default=20)
    parser.add_argument("--poll-ms", type=float, default=20.0)
    parser.add_argument("--postgres", default=os.environ.get(
        "GRISTMILL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()

    import psycopg
    from sqlalchemy.engine import make_url

    from gristmill_platform.bootstrap import prepare_environment
    from gristmill_platform.settings import Settings, resolve_settings

    database = f"gristmill_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(args.postgres, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    url = make_url(args.postgres).set(database=database).render_as_string(
        hide_password=False)
    processes: list[subprocess.Popen[bytes]] = []
    delays: list[float] = []
    try:
        data_dir = Path(tempfile.mkdtemp(prefix="gristmill-replicas-")) / "shared"
        sdk_token = prepare_environment(resolve_settings(
            Settings(data_dir=data_dir, database_url=url))).sdk_token
        ports = [free_port(), free_port()]
        processes.append(serve(data_dir, url, ports[0]))
        a, b = (f"http://127.0.0.1:{port}" for port in ports)
        access = httpx.post(f"{a}/api/v1/auth/refresh",
                            json={"refresh_token": sdk_token}).json()["access_token"]
        api = httpx.Client(base_url=f"{a}/api/v1", timeout=300,
                           headers={"Authorization": f"Bearer {access}"})
        fields = {"function_path": "main.py", "inputs[0][name]": "text",
                  "inputs[0][data_type]": "string", "outputs[0][name]": "text",
                  "outputs[0][data_type]": "string"}
        for name in ("champion", "challenger"):
            api.post("/pipelines", data={**fields, "pipeline_name": name,
                                         "function_name": name},
                     files={"step_file": ("step_file", step_archive(STEP))}
                     ).raise_for_status()
        created = api.post("/endpoints", json={"pipeline_name": "champion", "name": "ep",
                                               "mode": "low_latency"})
        created.raise_for_status()
        token = created.json()["endpoint_token"]
        processes.append(serve(data_dir, url, ports[1]))  # adopts the worker at start-up
        rule = {"key": "text", "routes": {"b": "challenger"}, "default": "champion"}
        headers = {"Authorization": f"EndpointToken {token}", "Gristmill-Client": "bench"}
        with httpx.Client(timeout=300, headers=headers) as client:
            # both replicas warm for both pipelines before measuring
            api.put("/deployments/ep/traffic", json=rule).raise_for_status()
            for base in (a, b):
                deadline = time.monotonic() + GIVE_UP_S
                while answering(client, f"{base}/endpoints/ep", "b") != "challenger":
                    if time.monotonic() > deadline:
                        raise RuntimeError("the rule was never applied")
                    time.sleep(0.1)
            for flip in range(args.flips):
                body, expected = ({}, "champion") if flip % 2 == 0 else (rule, "challenger")
                api.put("/deployments/ep/traffic", json=body).raise_for_status()
                set_at = time.monotonic()
                while True:
                    sent = time.monotonic()
                    if answering(client, f"{b}/endpoints/ep", "b") == expected:
                        delays.append(sent - set_at)
                        break
                    if sent - set_at > GIVE_UP_S:
                        raise RuntimeError(f"flip {flip}: not applied within {GIVE_UP_S} s")
                    time.sleep(args.poll_ms / 1000)
                print(f"flip {flip + 1}/{args.flips}: {delays[-1] * 1000:.0f} ms", flush=True)
    finally:
        for process in processes:
            stop(process)
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    ordered = sorted(delays)
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_1m": round(os.getloadavg()[0], 1)},
        "method": {"flips": args.flips, "poll_ms": args.poll_ms, "database": "postgresql",
                   "mode": "low_latency"},
        "delay_ms": {"min": round(ordered[0] * 1000), "p50": round(
            statistics.median(ordered) * 1000), "max": round(ordered[-1] * 1000)},
        "within_1s": sum(d <= 1.0 for d in delays), "flips_measured": len(delays),
        "targets": {"applied_within_s": 1.0}}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"rule applied on the other replica: min {results['delay_ms']['min']} ms, p50 "
          f"{results['delay_ms']['p50']} ms, max {results['delay_ms']['max']} ms; "
          f"{results['within_1s']}/{len(delays)} within 1 s; written to {RESULTS}")


if __name__ == "__main__":
    main()
