"""The floor of a warm call that crosses a second process, against the bare FastAPI app.

A low-latency deployment runs the step in a warm worker: a process of its own, with the
step's own virtual environment, which the control service (the one that holds the
endpoint's URL, token and tracking) cannot import. So every warm call crosses two
processes where the bare app's call crosses one. This bench measures what that crossing
costs at the least, with nothing of Gristmill in it, in the same run as the bare app that
bench/endpoints.py compares against:

  bare_fastapi     the bench's bare app (bench/endpoints.py BARE_APP): FastAPI under
                   uvicorn, the function called in-process
  bare_asgi        the same answer from a plain ASGI callable under uvicorn, no framework
  relay_floor      a plain ASGI callable under uvicorn that sends the body to a second
                   process over a Unix socket (length-prefixed frames, one connection kept
                   open, uvloop on both sides) and returns what that process answers: the
                   function runs there. No authentication, no tracking, no framework: the
                   least any design with a separate worker process can do per call

Calls are sequential (one client, keep-alive), in rounds taken in turns. What it answers:
how far below 1.2x the bare FastAPI app's p50 (bench/endpoints.py's target) the floor of
such a design sits on this machine. Writes bench/results/hop_floor.json.

    .venv/bin/python bench/hop_floor.py [--calls 3000] [--rounds 6]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from endpoints import BARE_APP, free_port, latency, sequential, server  # type: ignore[import-not-found]

RESULTS = Path(__file__).parent / "results" / "hop_floor.json"

# What both plain ASGI apps do around their own work: read the body, send the answer.
ASGI_IO = '''
async def read_body(receive):
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def reply(send, answer):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})
'''

BARE_ASGI = ASGI_IO + '''
import json


async def echo(text: str) -> dict:
    return {"text": text}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    answer = json.dumps({"outputs": await echo(**json.loads(body))}).encode()
    await reply(send, answer)
'''

# The front: reads the caller's body, sends it to the worker, answers with the worker's
# reply. One connection to the worker, opened on the first call.
RELAY_APP = ASGI_IO + '''
import asyncio
import os
import subprocess
import sys

SOCKET = os.environ["HOP_FLOOR_SOCKET"]
# a child of the front, so that the bench counts its CPU with the front's
_worker = subprocess.Popen([sys.executable, os.environ["HOP_FLOOR_WORKER"], SOCKET],
                           stdout=subprocess.PIPE)
if _worker.stdout.readline().strip() != b"ready":
    raise SystemExit("the relay's worker did not start")
_conn = None


async def worker():
    global _conn
    if _conn is None:
        _conn = await asyncio.open_unix_connection(SOCKET)
    return _conn


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    reader, writer = await worker()
    writer.write(len(body).to_bytes(4, "big") + body)
    size = int.from_bytes(await reader.readexactly(4), "big")
    answer = await reader.readexactly(size)
    await reply(send, answer)
'''

# The worker: the function, behind a Unix socket.
WORKER = '''
import asyncio
import json
import sys

import uvloop


async def echo(text: str) -> dict:
    return {"text": text}


async def serve(reader, writer):
    try:
        while True:
            size = int.from_bytes(await reader.readexactly(4), "big")
            inputs = json.loads(await reader.readexactly(size))
            answer = json.dumps({"outputs": await echo(**inputs)}).encode()
            writer.write(len(answer).to_bytes(4, "big") + answer)
    except asyncio.IncompleteReadError:
        writer.close()


async def main():
    server = await asyncio.start_unix_server(serve, sys.argv[1])
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


uvloop.run(main())
'''


def uvicorn(module: str, port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", f"{module}:app", "--port", str(port),
            "--log-level", "warning", "--no-access-log"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="gristmill-hop-floor-"))
    for name, code in (("bare_app", BARE_APP), ("bare_asgi", BARE_ASGI),
                       ("relay_app", RELAY_APP), ("hop_worker", WORKER)):
        (scratch / f"{name}.py").write_text(code)
    sock = str(scratch / "worker.sock")
    load_start = os.getloadavg()[0]
    with ExitStack() as stack:
        targets = []
        for module, name in (("bare_app", "bare_fastapi"), ("bare_asgi", "bare_asgi"),
                             ("relay_app", "relay_floor")):
            port = free_port()
            path = "/echo" if module == "bare_app" else "/"
            targets.append(stack.enter_context(server(
                uvicorn(module, port), scratch, f"http://127.0.0.1:{port}{path}", name,
                env={**os.environ, "HOP_FLOOR_SOCKET": sock,
                     "HOP_FLOOR_WORKER": str(scratch / "hop_worker.py")})))
        per_round = max(1, args.calls // args.rounds)
        for number in range(args.rounds):
            print(f"round {number + 1}/{args.rounds} ...", flush=True)
            for target in targets:
                sequential(target, per_round)
        results: dict[str, Any] = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "method": {"calls": args.calls, "rounds": args.rounds},
            "load_average_1m_start": round(load_start, 2),
        }
        for target in targets:
            results[target.name] = {
                **latency(target.samples),
                "server_cpu_ms_per_call": round(target.cpu_s / target.cpu_calls * 1000, 3),
            }
    results["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    bare = results["bare_fastapi"]["p50_ms"]
    relay = results["relay_floor"]["p50_ms"]
    results["relay_floor_p50_vs_bare_fastapi"] = round(relay / bare, 3)
    results["crossing_p50_ms"] = round(relay - results["bare_asgi"]["p50_ms"], 3)
    results["target_vs_bare_within"] = 1.2
    results["floor_meets_target"] = relay / bare <= 1.2
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'':<16}{'p50 ms':>9}{'p99 ms':>9}{'cpu ms/call':>13}")
    for target in targets:
        row = results[target.name]
        print(f"{target.name:<16}{row['p50_ms']:>9}{row['p99_ms']:>9}"
              f"{row['server_cpu_ms_per_call']:>13}")
    print(f"relay floor p50 / bare FastAPI p50: {results['relay_floor_p50_vs_bare_fastapi']}x "
          f"(target at most 1.2x: {'within' if results['floor_meets_target'] else 'above'}); "
          f"the crossing alone: {results['crossing_p50_ms']} ms p50")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
