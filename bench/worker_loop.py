"""A warm worker on its own: round trip and CPU time per execution, with the standard event
loop and with uvloop (GRISTMILL_WORKER_LOOP), for a `def` and an `async def` echo step.

The worker (`python -m gristmill.runtime serve`) is driven over its Unix socket by the
control service's own client (executors/worker_client.py), one execution at a time, the
variants in turns so that a drifting machine slows them alike. Writes
bench/results/worker_loop.json.

    .venv/bin/python bench/worker_loop.py [--calls 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from gristmill_platform.executors.worker_client import WorkerClient, WorkerUnreachable

RESULTS = Path(__file__).parent / "results" / "worker_loop.json"
SECRET = "bench-secret-0123456789abcdef"
STEP = '''
def echo(text):
    return {"text": text}


async def echo_async(text):
    return {"text": text}
'''


def payload(function: str, number: int) -> bytes:
    return json.dumps({
        "execution_id": f"bench-{number}", "step_name": "echo", "function_path": "main.py",
        "function_name": function, "inputs": {"text": "hi"}, "file_inputs": [],
        "outputs": [{"name": "text", "data_type": "string"}],
        "sdk_token": "sdk-token-" + "x" * 40, "env": {"GREETING": "hello"}}).encode()


class Worker:
    def __init__(self, folder: Path, function: str, loop: str) -> None:
        self.function = function
        self.socket = folder / f"{function}-{loop}.sock"
        env = {"PATH": os.environ.get("PATH", ""), "GRISTMILL_WORKER_SOCKET": str(self.socket),
               "GRISTMILL_WORKER_SECRET": SECRET, "GRISTMILL_FUNCTION_PATH": "main.py",
               "GRISTMILL_FUNCTION_NAME": function, "GRISTMILL_STEP_DIR": str(folder),
               "GRISTMILL_WORKER_LOOP": loop, "GRISTMILL_WORKER_ENV_NAMES": '["GREETING"]'}
        self.process = subprocess.Popen([sys.executable, "-m", "gristmill.runtime", "serve"],
                                        env=env, cwd=folder, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        self.samples: list[float] = []
        self.cpu_s = 0.0
        self.calls = 0

    async def ready(self) -> WorkerClient:
        deadline = time.monotonic() + 60
        client = WorkerClient(0, SECRET, unix_path=str(self.socket))
        while time.monotonic() < deadline:
            if self.socket.exists():
                try:
                    status, _ = await client.request("GET", "/healthz")
                    if status == 200:
                        return client
                except WorkerUnreachable:  # not listening yet
                    pass
            await asyncio.sleep(0.05)
        raise RuntimeError(f"the {self.function} worker did not start")

    def cpu(self) -> float:
        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)

    async def measure(self, client: WorkerClient, calls: int) -> None:
        for number in range(50):
            await client.request("POST", "/executions", payload(self.function, number))
        start_cpu = self.cpu()
        for number in range(calls):
            start = time.perf_counter()
            status, body = await client.request("POST", "/executions",
                                                payload(self.function, number))
            self.samples.append(time.perf_counter() - start)
            if status != 200 or b'"succeeded"' not in body:
                raise RuntimeError(body.decode())
        self.cpu_s += self.cpu() - start_cpu
        self.calls += calls


def summary(worker: Worker) -> dict[str, Any]:
    ordered = sorted(worker.samples)
    return {"round_trip_p50_us": round(statistics.median(ordered) * 1e6),
            "round_trip_p99_us": round(ordered[int(len(ordered) * 0.99)] * 1e6),
            "worker_cpu_us_per_call": round(worker.cpu_s / worker.calls * 1e6),
            "calls": worker.calls}


async def run(calls: int, rounds: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="gristmill-worker-loop-"))
    (folder / "main.py").write_text(STEP)
    workers = [Worker(folder, function, loop) for function in ("echo", "echo_async")
               for loop in ("asyncio", "uvloop")]
    try:
        clients = [await worker.ready() for worker in workers]
        for number in range(rounds):
            print(f"round {number + 1}/{rounds} ...", flush=True)
            for worker, client in zip(workers, clients, strict=True):
                await worker.measure(client, calls // rounds)
        for client in clients:
            client.close()
        return {f"{'def' if w.function == 'echo' else 'async def'}, "
                f"{w.socket.stem.split('-')[-1]}": summary(w) for w in workers}
    finally:
        for worker in workers:
            worker.process.terminate()
            worker.process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    figures = asyncio.run(run(args.calls, args.rounds))
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
               "workers": figures}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'':<20}{'p50 us':>9}{'p99 us':>9}{'cpu us/call':>13}")
    for name, row in figures.items():
        print(f"{name:<20}{row['round_trip_p50_us']:>9}{row['round_trip_p99_us']:>9}"
              f"{row['worker_cpu_us_per_call']:>13}")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
