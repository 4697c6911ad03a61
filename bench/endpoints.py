"""Endpoint latency and throughput, side by side in one run on this machine:

  bare      the same echo function in a bare FastAPI app under uvicorn (the floor)
  bentoml   the same function as a BentoML service (a peer users pick today), in its own
            virtual environment (bench/.venv-bentoml, created on first run, with uvicorn's
            speedups uvloop and httptools, which its server then uses)
  low       a Gristmill low-latency endpoint (`gristmill up`, SQLite, warm worker), with the
            function as `async def` (as in the two others) and as `def` (run in a thread)
  split     a low-latency endpoint with a 1:1 split between two pipelines (docs/rollout.md)
  shadow    a low-latency endpoint whose every call is copied to a shadow pipeline
  elastic   a Gristmill elastic endpoint (a fresh worker per call)
  two       the parallel low-latency endpoint on a second control service with two warm
            workers per deployment (GRISTMILL_LOCAL_WARM_WORKERS=2): requests/s at 16
            clients against the same endpoint with one; for the echo, and for a `def`
            step doing about 4 ms of CPU work per call (busy, 16 threads per worker)

All servers run at once and are called in turns: --rounds rounds, each giving every server
--calls/--rounds sequential calls from one keep-alive client (plain HTTP client: the
endpoint answers with the outputs), then the same for throughput at concurrency 16 (low:
`async def` step, parallel executions, 16 per worker): --throughput-calls/--rounds calls
from the lean load generator of bench/_load.py, then --calls/--rounds through httpx's
AsyncClient, the client of runs 1 to 52, which was the bottleneck (a core at 100 %
whatever the server: both figures are written, the first is the one the targets use).
A machine whose speed drifts during the run (a shared VM) then slows every server alike.
Percentiles are over all of a server's calls. Each server's CPU time per call (all its
processes: for Gristmill the control service and the worker) is read from /proc. Every
Gristmill call is a real, tracked execution (inputs, outputs, logs). Writes
bench/results/endpoints.json.

    .venv/bin/python bench/endpoints.py [--calls 1000] [--rounds 5] [--elastic-calls 50]
                                        [--throughput-calls 10000] [--no-bentoml]
                                        [--elastic-only] [--tree DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from _env import (  # type: ignore[import-not-found]
    SETTLE_S,
    BenchEnv,
    add_tree_option,
    collector_paused,
    start_env,
    step_archive,
    tree_env,
)
from _load import load  # type: ignore[import-not-found]
from _spool_cost import spool_cost  # type: ignore[import-not-found]

HERE = Path(__file__).parent
RESULTS = HERE / "results" / "endpoints.json"
BENTO_VENV = HERE / ".venv-bentoml"
BENTO_PACKAGES = ("bentoml", "uvloop", "httptools")
CONCURRENCY = 16
BODY = json.dumps({"text": "hi"}).encode()
WARM_UP = 50

STEP = '''
def echo(text: str) -> dict:
    return {"text": text}


async def echo_async(text: str) -> dict:
    return {"text": text}


def busy(text: str) -> dict:
    # about 4 ms of pure-Python work on this machine, unloaded: a stand-in for a small
    # model's forward pass, so that the workers rather than the control service limit
    total = 0
    for number in range(100_000):
        total += number * number
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


@dataclass
class Target:
    """One server's endpoint, and what was measured on it."""

    name: str
    url: str
    headers: dict[str, str]
    pid: int  # the server's first process; its children are counted too
    samples: list[float] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)  # perf_counter() of each sample's start
    concurrent_s: float = 0.0
    concurrent_calls: int = 0
    client_cpu_s: float = 0.0  # the load generator's, while it measured
    concurrent_cpu_s: float = 0.0  # the server's, over the same calls and the warm-up's
    concurrent_cpu_calls: int = 0
    httpx_s: float = 0.0
    httpx_calls: int = 0
    cpu_s: float = 0.0
    cpu_calls: int = 0

    def cpu_time(self) -> float:
        """CPU seconds of the server's processes so far."""
        try:
            root = psutil.Process(self.pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        total = 0.0
        for process in processes:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.samples:
            out["sequential"] = latency(self.samples)
        if self.concurrent_calls:
            out["concurrent"] = {
                "requests_per_s": round(self.concurrent_calls / self.concurrent_s, 1),
                "concurrency": CONCURRENCY, "requests": self.concurrent_calls,
                "client": "bench/_load.py",
                "client_core_busy": round(self.client_cpu_s / self.concurrent_s, 2),
                "server_cpu_ms_per_call": round(
                    self.concurrent_cpu_s / self.concurrent_cpu_calls * 1000, 3)}
            if self.httpx_calls:
                out["concurrent"]["httpx_client_requests_per_s"] = round(
                    self.httpx_calls / self.httpx_s, 1)
        if self.cpu_calls:
            out["server_cpu_ms_per_call"] = round(self.cpu_s / self.cpu_calls * 1000, 3)
        return out


def sequential(target: Target, calls: int, before: Callable[[], None] | None = None,
               after: Callable[[], None] | None = None) -> None:
    """calls sequential calls; before, if given, is waited for after the warm-up, and
    after before the CPU time is read: the work the calls leave behind (the shadow
    copies, the tracking rows not written yet) is counted, and so is the work done once
    they pause (the checkpoints, _env.SETTLE_S), which then never lands in the next
    server's block."""
    with httpx.Client(trust_env=False, timeout=120, headers=target.headers) as client:
        for _ in range(WARM_UP):
            client.post(target.url, json={"text": "hi"}).raise_for_status()
        if before is not None:
            before()
        cpu = target.cpu_time()
        with collector_paused():
            for _ in range(calls):
                start = time.perf_counter()
                response = client.post(target.url, json={"text": "hi"})
                target.samples.append(time.perf_counter() - start)
                target.starts.append(start)
                if response.status_code != 200:
                    raise RuntimeError(
                        f"{target.name}: {response.status_code} {response.text}")
        if after is not None:
            after()
        # every server's block, not only Gristmill's: a block that follows a pause must
        # not be compared with one that follows another server's calls
        time.sleep(SETTLE_S)
        target.cpu_s += target.cpu_time() - cpu
        target.cpu_calls += calls


def throughput(target: Target, total: int) -> None:
    """total calls from CONCURRENCY keep-alive connections of the lean load generator
    (bench/_load.py), whose own CPU is counted too: the figure is the server's."""
    cpu = target.cpu_time()
    with collector_paused():
        result = load(target.url, BODY, target.headers, connections=CONCURRENCY,
                      total=total)
    target.concurrent_cpu_s += target.cpu_time() - cpu
    target.concurrent_cpu_calls += result.requests + result.warm_up
    target.concurrent_s += result.seconds
    target.concurrent_calls += result.requests
    target.client_cpu_s += result.client_cpu_s


def throughput_httpx(target: Target, total: int) -> None:
    """The same through httpx's AsyncClient, as the bench measured it up to run 52: about
    1.7 ms of the client's CPU per call, so that figure is the client's (a core at 100 %
    whatever the server), kept beside the other for comparison with earlier runs."""
    async def run() -> float:
        limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        async with httpx.AsyncClient(trust_env=False, timeout=120, limits=limits,
                                     headers=target.headers) as client:
            async def worker(count: int) -> None:
                for _ in range(count):
                    response = await client.post(target.url, json={"text": "hi"})
                    response.raise_for_status()

            await asyncio.gather(*(worker(5) for _ in range(CONCURRENCY)))  # warm-up
            start = time.perf_counter()
            await asyncio.gather(*(worker(total // CONCURRENCY) for _ in range(CONCURRENCY)))
            return time.perf_counter() - start

    with collector_paused():
        target.httpx_s += asyncio.run(run())
    target.httpx_calls += (total // CONCURRENCY) * CONCURRENCY


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


@contextmanager
def server(argv: list[str], cwd: Path, url: str, name: str,
           env: dict[str, str] | None = None) -> Iterator[Target]:
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        wait_http(url, process)
        yield Target(name, url, {}, process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)


def ensure_bentoml() -> Path | None:
    """BentoML in its own venv, with uvicorn's optional speedups (uvloop, httptools), which
    its server uses when present: without them it parses HTTP in pure Python and measured
    about 1.5 times slower here, which is not the peer at its best."""
    python = BENTO_VENV / "bin" / "python"
    if not python.exists():
        print("creating bench/.venv-bentoml (pip install bentoml) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(BENTO_VENV)], check=True)
    check = subprocess.run([str(python), "-c", "import bentoml, uvloop, httptools"],
                           capture_output=True)
    if check.returncode != 0:
        result = subprocess.run([str(python), "-m", "pip", "install", "-q", *BENTO_PACKAGES],
                                capture_output=True, text=True)
        if result.returncode != 0:
            print(f"bentoml could not be installed: {result.stderr[-500:]}")
            return None
    return python


def verdict(results: dict[str, Any]) -> dict[str, bool]:
    """Each target of the low-latency endpoint (issue 18), met or not in this run."""
    low = results["low_latency"]
    checks = {"p50 at most 1.2x bare FastAPI": results["low_latency_p50_vs_bare_exact"] <= 1.2}
    bento = results.get("bentoml")
    if bento is not None:
        checks["p50 ahead of BentoML"] = (low["sequential"]["p50_ms"]
                                          < bento["sequential"]["p50_ms"])
        checks["p99 ahead of BentoML"] = (low["sequential"]["p99_ms"]
                                          < bento["sequential"]["p99_ms"])
        checks["requests/s at 16 clients ahead of BentoML"] = (
            low["concurrent"]["requests_per_s"] > bento["concurrent"]["requests_per_s"])
    return checks


def archive() -> bytes:
    return bytes(step_archive(STEP))


def deploy(env: BenchEnv, only: frozenset[str] | None = None
           ) -> tuple[httpx.Client, dict[str, str]]:
    """The bench's endpoints (all, or the ``only`` ones) on env: (API client, tokens)."""
    token = httpx.post(f"{env.url}/api/v1/auth/refresh",
                       json={"refresh_token": env.token}).json()["access_token"]
    api = httpx.Client(base_url=f"{env.url}/api/v1", trust_env=False, timeout=300,
                       headers={"Authorization": f"Bearer {token}"})
    fields = {"function_path": "main.py", "inputs[0][name]": "text",
              "inputs[0][data_type]": "string", "outputs[0][name]": "text",
              "outputs[0][data_type]": "string"}
    for name, function in (("sync", "echo"), ("async", "echo_async"),
                           ("async-b", "echo_async"), ("busy", "busy")):
        api.post("/pipelines", data={**fields, "pipeline_name": name,
                                     "function_name": function},
                 files={"step_file": ("step_file", archive())}).raise_for_status()
    specs: dict[str, tuple[str, dict[str, Any]]] = {"low": ("async", {"mode": "low_latency"}),
             "low-def": ("sync", {"mode": "low_latency"}),
             "low-parallel": ("async", {"mode": "low_latency",
                                        "enable_parallel_executions": True,
                                        "max_parallel_executions_per_pod": CONCURRENCY}),
             "low-busy": ("busy", {"mode": "low_latency",
                                   "enable_parallel_executions": True,
                                   "max_parallel_executions_per_pod": CONCURRENCY}),
             "low-split": ("async", {"mode": "low_latency"}),
             "low-shadow": ("async", {"mode": "low_latency"}),
             "elastic": ("sync", {"mode": "elastic"})}
    tokens = {}
    for name, (pipeline, options) in specs.items():
        if only is not None and name not in only:
            continue
        created = api.post("/endpoints", json={"pipeline_name": pipeline, "name": name,
                                               **options})
        created.raise_for_status()
        assert created.json()["status"] == "up", created.text
        tokens[name] = created.json()["endpoint_token"]
    if only is not None:
        return api, tokens
    # traffic rules (docs/rollout.md): a 1:1 split between two warm pipelines, and a
    # shadow copy of every call to a second one
    api.put("/deployments/low-split/traffic",
            json={"split": {"async": 1, "async-b": 1}}).raise_for_status()
    api.put("/deployments/low-shadow/traffic", json={"shadow": ["async-b"]}
            ).raise_for_status()
    for name in ("low-split", "low-shadow"):  # the variants' workers, before measuring
        for _ in range(10):
            httpx.post(f"{env.url}/endpoints/{name}", json={"text": "warm"}, timeout=300,
                       headers={"Authorization": f"EndpointToken {tokens[name]}"}
                       ).raise_for_status()
    wait_for_copies(api, "low-shadow", 10)
    return api, tokens


def copies_caught_up(api: httpx.Client, name: str, seconds: float = 300) -> float:
    """Seconds until every call to name so far has its shadow copy recorded (the copies
    run once the calls pause, docs/rollout.md#shadow-runner): they must not run during
    the next server's turn, and how late they are is a figure of its own."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        comparison = api.get(f"/deployments/{name}").json()["traffic"]["comparison"]
        calls = sum(v["calls"] for v in comparison if not v["shadow"])
        if sum(v["ended"] for v in comparison if v["shadow"]) >= calls:
            return time.monotonic() - start
        time.sleep(0.02)
    raise RuntimeError(f"{name}: the shadow copies were not all recorded in {seconds} s")


def wait_for_copies(api: httpx.Client, name: str, count: int, seconds: float = 300) -> None:
    """Until count shadow copies of calls to name are recorded: the shadow runner and its
    workers start at the first copies, which must not happen while measuring."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        comparison = api.get(f"/deployments/{name}").json()["traffic"]["comparison"]
        if sum(v["ended"] for v in comparison if v["shadow"]) >= count:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{name}: the shadow copies of the warm-up calls were not recorded")


def gristmill_target(env: BenchEnv, tokens: dict[str, str], name: str, label: str
                     ) -> Target:
    return Target(label, f"{env.url}/endpoints/{name}",
                  {"Authorization": f"EndpointToken {tokens[name]}"}, env.process.pid)


def elastic_only(calls: int) -> None:
    """The elastic endpoint alone, fork server vs spawned workers, in turns: latency, and
    CPU per call of the control service and its workers (forked workers are reaped by the
    fork server, whose own and children's CPU is counted; spawned ones by the service)."""
    def cpu(pid: int) -> float:
        root = psutil.Process(pid)
        times = root.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in root.children():
            with suppress(psutil.NoSuchProcess):
                if "zygote" in child.cmdline():
                    ct = child.cpu_times()
                    total += ct.user + ct.system + ct.children_user + ct.children_system
        return float(total)

    def idle(pid: int) -> bool:
        for child in psutil.Process(pid).children():
            with suppress(psutil.NoSuchProcess):
                if "zygote" not in child.cmdline() or child.children():
                    return False
        return True

    scratch = Path(tempfile.mkdtemp(prefix="gristmill-endpoints-"))
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(),
                                           "python": platform.python_version()},
                               "method": {"calls": calls}}
    with ExitStack() as stack:
        targets: list[tuple[Target, BenchEnv, httpx.Client]] = []
        for name, flag in (("fork_server", "1"), ("spawn", "0")):
            env = start_env(scratch / name, extra_env={"GRISTMILL_LOCAL_FORK_SERVER": flag})
            stack.callback(env.stop)
            _, tokens = deploy(env, only=frozenset({"elastic"}))
            target = gristmill_target(env, tokens, "elastic", name)
            client = stack.enter_context(httpx.Client(trust_env=False, timeout=120,
                                                      headers=target.headers))
            targets.append((target, env, client))
        for number in range(calls + 2):  # the first two warm up; not counted
            for target, env, client in targets:
                before = cpu(env.process.pid)
                start = time.perf_counter()
                client.post(target.url, json={"text": "hi"}).raise_for_status()
                elapsed = time.perf_counter() - start
                deadline = time.monotonic() + 5
                while not idle(env.process.pid) and time.monotonic() < deadline:
                    time.sleep(0.005)
                if number >= 2:
                    target.samples.append(elapsed)
                    target.cpu_s += cpu(env.process.pid) - before
                    target.cpu_calls += 1
        for target, _, _ in targets:
            results[target.name] = target.report()
    results["load_average_1m"] = round(os.getloadavg()[0], 1)
    results["targets"] = {"p50_ms_at_most": 40, "cpu_ms_per_call_at_most": 15}
    out = RESULTS.parent / "endpoints_elastic.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"elastic endpoint, {calls} calls per mode, in turns")
    print(f"{'':<16}{'p50 ms':>9}{'p99 ms':>9}{'cpu ms/call':>13}")
    for name in ("fork_server", "spawn"):
        seq = results[name]["sequential"]
        print(f"{name:<16}{seq['p50_ms']:>9}{seq['p99_ms']:>9}"
              f"{results[name]['server_cpu_ms_per_call']:>13}")
    print(f"written to {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--elastic-calls", type=int, default=50)
    parser.add_argument("--throughput-calls", type=int, default=10_000,
                        help="calls at concurrency 16 per echo server, over all rounds")
    parser.add_argument("--no-bentoml", action="store_true")
    add_tree_option(parser)  # an A/B of a change: a run with each tree, the same bench
    parser.add_argument("--elastic-only", action="store_true",
                        help="only the elastic endpoint, with workers forked by the fork "
                             "server and spawned (GRISTMILL_LOCAL_FORK_SERVER=0), in turns; "
                             "writes bench/results/endpoints_elastic.json")
    args = parser.parse_args()
    if args.elastic_only:
        elastic_only(args.elastic_calls)
        return
    scratch = Path(tempfile.mkdtemp(prefix="gristmill-endpoints-"))
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(),
                                           "python": platform.python_version()},
                               "method": {"calls": args.calls, "rounds": args.rounds,
                                          "concurrency": CONCURRENCY,
                                          "tree": str(args.tree) if args.tree else None},
               "load_average_1m_start": round(os.getloadavg()[0], 2)}
    (scratch / "bare_app.py").write_text(BARE_APP)
    bento = None if args.no_bentoml else ensure_bentoml()
    with ExitStack() as stack:
        port = free_port()
        targets = [stack.enter_context(server(
            [sys.executable, "-m", "uvicorn", "bare_app:app", "--port", str(port),
             "--log-level", "warning", "--no-access-log"], scratch,
            f"http://127.0.0.1:{port}/echo", "bare_fastapi"))]
        if bento is not None:
            (scratch / "bento_service.py").write_text(BENTO_SERVICE)
            port = free_port()
            # its own home (no state from earlier runs), and no usage reports from a bench
            bento_env = {**os.environ, "BENTOML_HOME": str(scratch / "bentoml-home"),
                         "BENTOML_DO_NOT_TRACK": "True"}
            targets.append(stack.enter_context(server(
                [str(bento.parent / "bentoml"), "serve", "bento_service:Echo", "--port",
                 str(port)], scratch, f"http://127.0.0.1:{port}/echo", "bentoml",
                env=bento_env)))
        side = tree_env(args.tree)
        env = start_env(scratch / "env", extra_env=side)
        stack.callback(env.stop)
        api, tokens = deploy(env)
        # the same parallel endpoint on a second service with two warm workers per
        # deployment (docs/deployments.md, "Several warm workers")
        env_two = start_env(scratch / "env-two-workers",
                            extra_env={**side, "GRISTMILL_LOCAL_WARM_WORKERS": "2"})
        stack.callback(env_two.stop)
        _, tokens_two = deploy(env_two, only=frozenset({"low-parallel", "low-busy"}))
        two_workers = gristmill_target(env_two, tokens_two, "low-parallel",
                                       "low_latency_parallel_two_workers")
        busy_one = gristmill_target(env, tokens, "low-busy", "busy_one_worker")
        busy_two = gristmill_target(env_two, tokens_two, "low-busy", "busy_two_workers")
        low = gristmill_target(env, tokens, "low", "low_latency")
        low_def = gristmill_target(env, tokens, "low-def", "low_latency_def")
        parallel = gristmill_target(env, tokens, "low-parallel", "low_latency_parallel")
        split = gristmill_target(env, tokens, "low-split", "low_latency_split")
        shadow = gristmill_target(env, tokens, "low-shadow", "low_latency_shadow")
        sequential_targets = [*targets, low, low_def, split, shadow]
        per_round = max(1, args.calls // args.rounds)
        catch_up: list[float] = []  # after each shadowed block, until its copies are in

        def written() -> None:
            """An API read waits for the tracking journal to write what it holds (its
            barrier): the rows a block leaves are counted in its CPU, not in the next
            server's turn. Only after a block: one made before it too would start every
            block with an empty journal, and its 250 ms batch would then mostly fall
            after a 200-call block, never in it (measured: it flattered the p99)."""
            api.get("/users/me").raise_for_status()

        def caught_up() -> None:
            catch_up.append(copies_caught_up(api, "low-shadow"))

        befores = {shadow.name: caught_up}  # the warm-up's copies are not the block's
        afters = {low.name: written, low_def.name: written, split.name: written,
                  shadow.name: caught_up}
        for number in range(args.rounds):
            print(f"round {number + 1}/{args.rounds} ...", flush=True)
            for target in sequential_targets:
                sequential(target, per_round, before=befores.get(target.name),
                           after=afters.get(target.name))
            for target in (*targets, parallel, two_workers):
                throughput(target, args.throughput_calls // args.rounds)
                throughput_httpx(target, per_round)
            for target in (busy_one, busy_two):  # about 4 ms of CPU per call
                throughput(target, per_round)
        elastic = gristmill_target(env, tokens, "elastic", "elastic")
        with httpx.Client(trust_env=False, timeout=120, headers=elastic.headers) as client:
            for _ in range(args.elastic_calls):
                start = time.perf_counter()
                client.post(elastic.url, json={"text": "hi"}).raise_for_status()
                elastic.samples.append(time.perf_counter() - start)
        for target in targets:
            results[target.name] = target.report()
        results["low_latency"] = low.report()
        results["low_latency"]["concurrent"] = parallel.report()["concurrent"]
        results["low_latency_def"] = low_def.report()
        results["low_latency_split"] = split.report()
        results["low_latency_shadow"] = shadow.report()
        # the warm-up's are waited for before the block, its own after (two per round)
        results["low_latency_shadow"]["copies_caught_up_s"] = {
            "after_warm_up_median": round(statistics.median(catch_up[0::2]), 3),
            "after_block_median": round(statistics.median(catch_up[1::2]), 3),
            "after_block_max": round(max(catch_up[1::2]), 3)}
        results["low_latency_two_workers"] = two_workers.report()
        results["busy_one_worker"] = busy_one.report()
        results["busy_two_workers"] = busy_two.report()
        results["elastic"] = {"sequential": latency(elastic.samples)}
        executions = (len(api.get("/pipelines/async/executions").json())
                      + len(api.get("/pipelines/sync/executions").json()))
        results["tracked_executions"] = executions
    floor = results["bare_fastapi"]["sequential"]["p50_ms"]
    low_p50 = results["low_latency"]["sequential"]["p50_ms"]
    results["low_latency_p50_overhead_ms"] = round(low_p50 - floor, 2)
    results["low_latency_p50_vs_bare"] = round(low_p50 / floor, 1)
    results["low_latency_p50_vs_bare_exact"] = round(low_p50 / floor, 3)
    results["load_average_1m"] = round(os.getloadavg()[0], 2)
    # the service has stopped: every call's row is in its database, to spool again
    results["spool"] = spool_cost(scratch / "env" / "gristmill.sqlite3", low_p50)
    for rule in ("split", "shadow"):  # against the plain low-latency endpoint, same run
        p50 = results[f"low_latency_{rule}"]["sequential"]["p50_ms"]
        results[f"{rule}_p50_overhead_pct"] = round((p50 / low_p50 - 1) * 100, 1)
    results["targets"] = {"overhead_p50_ms_below": 5, "vs_bare_within": 1.2,
                          "ahead_of_bentoml": ["p50", "p99", "requests_per_s"],
                          "hosted_overhead_ms_below": 500}
    results["verdict"] = verdict(results)
    one = results["low_latency"]["concurrent"]["requests_per_s"]
    two = results["low_latency_two_workers"]["concurrent"]["requests_per_s"]
    results["two_workers_throughput_ratio"] = round(two / one, 2)
    busy = [results[key]["concurrent"]["requests_per_s"]
            for key in ("busy_one_worker", "busy_two_workers")]
    results["busy_two_workers_throughput_ratio"] = round(busy[1] / busy[0], 2)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'':<24}{'p50 ms':>9}{'p99 ms':>9}{'req/s @16':>11}{'cpu ms/call':>13}"
          f"{'httpx req/s':>13}")
    for key in ("bare_fastapi", "bentoml", "low_latency", "low_latency_def",
                "low_latency_split", "low_latency_shadow", "low_latency_two_workers",
                "busy_one_worker", "busy_two_workers", "elastic"):
        if key in results:
            seq = results[key].get("sequential", {})
            conc = results[key].get("concurrent", {}).get("requests_per_s", "-")
            cpu = results[key].get("server_cpu_ms_per_call", "-")
            slow = results[key].get("concurrent", {}).get("httpx_client_requests_per_s", "-")
            print(f"{key:<24}{seq.get('p50_ms', '-'):>9}{seq.get('p99_ms', '-'):>9}"
                  f"{conc:>11}{cpu:>13}{slow:>13}")
    print(f"tracked executions: {results['tracked_executions']}")
    print(f"low-latency p50 overhead over bare: {results['low_latency_p50_overhead_ms']} ms "
          f"({results['low_latency_p50_vs_bare']}x); written to {RESULTS}")
    spool = results["spool"]
    print(f"durable answers (the spool): {spool['append_p50_us']} us p50 per append, "
          f"{spool['low_latency_p50_overhead_pct']} % of the low-latency p50 (target at most "
          f"{spool['target_overhead_pct_at_most']} %)")
    print(f"two warm workers: {results['two_workers_throughput_ratio']}x the requests/s of "
          f"one at 16 clients (echo), {results['busy_two_workers_throughput_ratio']}x "
          "(a step of about 4 ms of CPU)")
    print(f"load average (1 min) at the end: {results['load_average_1m']}")
    for check, passed in results["verdict"].items():
        print(f"{'MET   ' if passed else 'MISSED'} {check}")
    print(f"traffic rules, p50 over the plain low-latency endpoint: split "
          f"{results['split_p50_overhead_pct']} %, shadow {results['shadow_p50_overhead_pct']} %")
    late = results["low_latency_shadow"]["copies_caught_up_s"]
    print(f"shadow copies all recorded {late['after_block_median']} s (median; at most "
          f"{late['after_block_max']} s) after a block's last call ({per_round} calls)")


if __name__ == "__main__":
    main()
