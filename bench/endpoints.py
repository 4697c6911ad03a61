"""Endpoint latency and throughput, side by side in one run on this machine:

  bare      the same echo function in a bare FastAPI app under uvicorn (the floor)
  bentoml   the same function as a BentoML service (a peer users pick today), in its own
            virtual environment (bench/.venv-bentoml, created on first run)
  low       a Gristmill low-latency endpoint (`gristmill up`, SQLite, warm worker)
  elastic   a Gristmill elastic endpoint (a fresh worker per call)

For each: p50/p99 of sequential calls from one keep-alive client (plain HTTP client: the
endpoint answers with the outputs), and for bare/bentoml/low the throughput at concurrency 16
(low: `async def` step, parallel executions, 16 per worker). Every Gristmill call is a real,
tracked execution (inputs, outputs, logs). Writes bench/results/endpoints.json.

    .venv/bin/python bench/endpoints.py [--calls 1000] [--elastic-calls 50] [--no-bentoml]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from _env import start_env  # type: ignore[import-not-found]

HERE = Path(__file__).parent
RESULTS = HERE / "results" / "endpoints.json"
BENTO_VENV = HERE / ".venv-bentoml"
CONCURRENCY = 16

STEP = '''
def echo(text: str) -> dict:
    return {"text": text}


async def echo_async(text: str) -> dict:
    return {"text": text}
'''
BARE_APP = '''
from fastapi import FastAPI, Request

app = FastAPI()


async def echo(text: str) -> dict:
    return {"text": text}


@app.post("/echo")
async def endpoint(request: Request) -> dict:
    return {"outputs": await echo(**(await request.json()))}
'''
BENTO_SERVICE = '''
import bentoml


@bentoml.service(workers=1)
class Echo:
    @bentoml.api
    async def echo(self, text: str) -> dict:
        return {"text": text}
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def latency(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(statistics.median(values) * 1000, 2),
            "p99_ms": round(percentile(values, 99) * 1000, 2), "calls": len(values)}


def sequential(calls: int, send: Callable[[], None]) -> dict[str, float]:
    for _ in range(min(50, calls)):
        send()
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        send()
        samples.append(time.perf_counter() - start)
    return latency(samples)


def throughput(url: str, body: dict[str, Any], headers: dict[str, str], total: int
               ) -> dict[str, float]:
    async def run() -> float:
        limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        async with httpx.AsyncClient(trust_env=False, timeout=120, limits=limits,
                                     headers=headers) as client:
            async def worker(count: int) -> None:
                for _ in range(count):
                    response = await client.post(url, json=body)
                    response.raise_for_status()

            await asyncio.gather(*(worker(5) for _ in range(CONCURRENCY)))  # warm-up
            start = time.perf_counter()
            await asyncio.gather(*(worker(total // CONCURRENCY) for _ in range(CONCURRENCY)))
            return time.perf_counter() - start

    elapsed = asyncio.run(run())
    done = (total // CONCURRENCY) * CONCURRENCY
    return {"requests_per_s": round(done / elapsed, 1), "concurrency": CONCURRENCY,
            "requests": done}


def wait_http(url: str, process: subprocess.Popen[bytes], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: server exited")
        try:
            httpx.post(url, json={"text": "warm"}, timeout=2, trust_env=False)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"{url}: server did not start")


def measure_server(argv: list[str], cwd: Path, url: str, calls: int) -> dict[str, Any]:
    process = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        wait_http(url, process)
        with httpx.Client(trust_env=False) as client:
            seq = sequential(calls, lambda: client.post(url, json={"text": "hi"})
                             .raise_for_status())
        return {"sequential": seq, "concurrent": throughput(url, {"text": "hi"}, {}, calls)}
    finally:
        process.terminate()
        process.wait(timeout=30)


def ensure_bentoml() -> Path | None:
    python = BENTO_VENV / "bin" / "python"
    if not python.exists():
        print("creating bench/.venv-bentoml (pip install bentoml) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(BENTO_VENV)], check=True)
        result = subprocess.run([str(python), "-m", "pip", "install", "-q", "bentoml"],
                                capture_output=True, text=True)
        if result.returncode != 0:
            print(f"bentoml could not be installed: {result.stderr[-500:]}")
            return None
    return python


def archive() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = STEP.encode()
        info = tarfile.TarInfo("main.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def gristmill(scratch: Path, calls: int, elastic_calls: int) -> dict[str, Any]:
    env = start_env(scratch / "env")
    try:
        token = httpx.post(f"{env.url}/api/v1/auth/refresh",
                           json={"refresh_token": env.token}).json()["access_token"]
        api = httpx.Client(base_url=f"{env.url}/api/v1", trust_env=False, timeout=300,
                           headers={"Authorization": f"Bearer {token}"})
        fields = {"function_path": "main.py", "inputs[0][name]": "text",
                  "inputs[0][data_type]": "string", "outputs[0][name]": "text",
                  "outputs[0][data_type]": "string"}
        for name, function in (("sync", "echo"), ("async", "echo_async")):
            api.post("/pipelines", data={**fields, "pipeline_name": name,
                                         "function_name": function},
                     files={"step_file": ("step_file", archive())}).raise_for_status()
        specs = {"low": ("sync", {"mode": "low_latency"}),
                 "low-parallel": ("async", {"mode": "low_latency",
                                            "enable_parallel_executions": True,
                                            "max_parallel_executions_per_pod": CONCURRENCY}),
                 "elastic": ("sync", {"mode": "elastic"})}
        tokens = {}
        for name, (pipeline, options) in specs.items():
            created = api.post("/endpoints", json={"pipeline_name": pipeline, "name": name,
                                                   **options})
            created.raise_for_status()
            assert created.json()["status"] == "up", created.text
            tokens[name] = created.json()["endpoint_token"]

        def call(client: httpx.Client, name: str) -> Callable[[], None]:
            def send() -> None:
                response = client.post(f"{env.url}/endpoints/{name}", json={"text": "hi"})
                if response.status_code != 200:
                    raise RuntimeError(response.text)
            return send

        out: dict[str, Any] = {}
        with httpx.Client(trust_env=False, timeout=120,
                          headers={"Authorization": f"EndpointToken {tokens['low']}"}) as c:
            out["low_latency"] = {"sequential": sequential(calls, call(c, "low"))}
        out["low_latency"]["concurrent"] = throughput(
            f"{env.url}/endpoints/low-parallel", {"text": "hi"},
            {"Authorization": f"EndpointToken {tokens['low-parallel']}"}, calls)
        with httpx.Client(trust_env=False, timeout=120,
                          headers={"Authorization": f"EndpointToken {tokens['elastic']}"}) as c:
            send = call(c, "elastic")
            samples = []
            for _ in range(elastic_calls):
                start = time.perf_counter()
                send()
                samples.append(time.perf_counter() - start)
            out["elastic"] = {"sequential": latency(samples)}
        executions = api.get("/pipelines/sync/executions").json()
        out["tracked_executions"] = len(executions)
        return out
    finally:
        env.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--elastic-calls", type=int, default=50)
    parser.add_argument("--no-bentoml", action="store_true")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="gristmill-endpoints-"))
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(),
                                           "python": platform.python_version()}}
    (scratch / "bare_app.py").write_text(BARE_APP)
    port = free_port()
    results["bare_fastapi"] = measure_server(
        [sys.executable, "-m", "uvicorn", "bare_app:app", "--port", str(port),
         "--log-level", "warning", "--no-access-log"], scratch,
        f"http://127.0.0.1:{port}/echo", args.calls)
    bento = None if args.no_bentoml else ensure_bentoml()
    if bento is not None:
        (scratch / "bento_service.py").write_text(BENTO_SERVICE)
        port = free_port()
        results["bentoml"] = measure_server(
            [str(bento.parent / "bentoml"), "serve", "bento_service:Echo", "--port", str(port)],
            scratch, f"http://127.0.0.1:{port}/echo", args.calls)
    results.update(gristmill(scratch, args.calls, args.elastic_calls))
    floor = results["bare_fastapi"]["sequential"]["p50_ms"]
    low = results["low_latency"]["sequential"]["p50_ms"]
    results["low_latency_p50_overhead_ms"] = round(low - floor, 2)
    results["low_latency_p50_vs_bare"] = round(low / floor, 1)
    results["targets"] = {"overhead_p50_ms_below": 5, "vs_bare_within": 3,
                          "hosted_overhead_ms_below": 500}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'':<22}{'p50 ms':>9}{'p99 ms':>9}{'req/s @16':>11}")
    for key in ("bare_fastapi", "bentoml", "low_latency", "elastic"):
        if key in results:
            seq = results[key]["sequential"]
            conc = results[key].get("concurrent", {}).get("requests_per_s", "-")
            print(f"{key:<22}{seq['p50_ms']:>9}{seq['p99_ms']:>9}{conc:>11}")
    print(f"low-latency p50 overhead over bare: {results['low_latency_p50_overhead_ms']} ms "
          f"({results['low_latency_p50_vs_bare']}x); written to {RESULTS}")


if __name__ == "__main__":
    main()
