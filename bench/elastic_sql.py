"""Requests and SQL statements per elastic execution of a trivial step, counted in the
control service (a SQLAlchemy ``before_cursor_execute`` listener, each statement charged to
the HTTP request whose handling issued it, tasks it started included: the launch, and
the runner's start and finish, which a local worker sends over its channel, not HTTP),
and the calls handed to aiosqlite's thread (`hops`: each a wake-up of that thread and
of the event loop).

Starts `gristmill up` in a subprocess through this same file (``--serve``), which installs
the listener first; runs 3 executions to warm up, then N counted ones (run + long-poll for
the outputs). Prints the counts per execution.

    .venv/bin/python bench/elastic_sql.py [--runs 20]
"""

from __future__ import annotations

import argparse
import collections
import contextvars
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STEP = 'def echo(text: str) -> dict:\n    return {"text": text}\n'


def serve(log_path: str, argv: list[str]) -> None:
    """`gristmill up` with every statement and request written to log_path."""
    import fastapi
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    out = open(log_path, "a", buffering=1)  # noqa: SIM115 - open as long as the process
    current: contextvars.ContextVar[str] = contextvars.ContextVar("current", default="-")

    def statement(_c: Any, _cu: Any, sql: str, *_a: Any) -> None:
        out.write(f"SQL\t{current.get()}\t{' '.join(sql.split())[:100]}\n")

    import aiosqlite

    original_execute = aiosqlite.Connection._execute

    async def hop(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        # each call queued to aiosqlite's thread (SQLite only): a hand-off and back
        out.write(f"HOP\t{current.get()}\n")
        return await original_execute(self, fn, *args, **kwargs)

    aiosqlite.Connection._execute = hop  # type: ignore[method-assign]
    event.listen(Engine, "before_cursor_execute", statement)
    event.listen(Engine, "begin", lambda _c: out.write(f"SQL\t{current.get()}\tBEGIN\n"))
    original = fastapi.FastAPI.__call__

    async def call(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            current.set(f"{scope['method']} {scope['path']}")
            out.write(f"REQ\t{scope['method']} {scope['path']}\n")
        await original(self, scope, receive, send)

    fastapi.FastAPI.__call__ = call  # type: ignore[method-assign]
    from gristmill.cli import main

    sys.argv = ["gristmill", *argv]
    main()


def measure(runs: int) -> None:
    import httpx
    from _env import free_port, step_archive  # type: ignore[import-not-found]

    with tempfile.TemporaryDirectory(prefix="gristmill-bench-") as work:
        log = Path(work) / "sql.log"
        log.write_text("")
        port = free_port()
        data = Path(work) / "env"
        process = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(log), "up", "--data-dir", str(data),
             "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "GRISTMILL_LOG_LEVEL": "warning"})
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            token = re.search(r"GRISTMILL_SDK_TOKEN=(\S+)",
                              (data / "credentials.env").read_text())
            assert token
            access = httpx.post(f"{url}/api/v1/auth/refresh",
                                json={"refresh_token": token.group(1)}).json()["access_token"]
            api = httpx.Client(base_url=f"{url}/api/v1", timeout=120,
                               headers={"Authorization": f"Bearer {access}"})
            api.post("/pipelines", data={
                "pipeline_name": "echo", "function_path": "main.py", "function_name": "echo",
                "inputs[0][name]": "text", "inputs[0][data_type]": "string",
                "outputs[0][name]": "text", "outputs[0][data_type]": "string",
            }, files={"step_file": ("step_file", step_archive(STEP))}).raise_for_status()

            def one() -> None:
                execution_id = api.post("/pipelines/echo/run", data={
                    "json_inputs": json.dumps({"text": "hi"})}).json()["execution_id"]
                while True:
                    result = api.get(f"/executions/{execution_id}/outputs",
                                     params={"wait_for_results": "true"},
                                     follow_redirects=False)
                    if result.status_code != 307:
                        break
                if result.status_code != 200:
                    raise SystemExit(f"run failed: {result.text}")
                time.sleep(0.3)  # the worker's exit and its usage are written meanwhile

            for _ in range(3):
                one()
            mark = len(log.read_text().splitlines())
            for _ in range(runs):
                one()
            lines = log.read_text().splitlines()[mark:]
        finally:
            process.send_signal(2)
            process.wait(timeout=30)
    requests: collections.Counter[str] = collections.Counter()
    statements: collections.Counter[str] = collections.Counter()
    transactions: collections.Counter[str] = collections.Counter()
    hops: collections.Counter[str] = collections.Counter()
    for line in lines:
        kind, what, *rest = line.split("\t")
        what = re.sub(r"echo-[0-9a-f]+", "{id}", what)
        if kind == "REQ":
            requests[what] += 1
        elif kind == "HOP":
            hops[what] += 1
        elif rest == ["BEGIN"]:
            transactions[what] += 1
        else:
            statements[what] += 1
    print(f"per elastic execution of a trivial step, {runs} runs "
          f"(load average {os.getloadavg()[0]:.1f})")
    print(f"{'':<52}{'requests':>9}{'SQL':>6}{'txns':>6}{'hops':>6}")
    for what in sorted(set(requests) | set(statements)):
        print(f"{what[:52]:<52}{requests[what] / runs:>9.1f}{statements[what] / runs:>6.1f}"
              f"{transactions[what] / runs:>6.1f}{hops[what] / runs:>6.1f}")
    print(f"{'total':<52}{sum(requests.values()) / runs:>9.1f}"
          f"{sum(statements.values()) / runs:>6.1f}{sum(transactions.values()) / runs:>6.1f}"
          f"{sum(hops.values()) / runs:>6.1f}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        serve(sys.argv[2], sys.argv[3:])
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--runs", type=int, default=20)
        measure(parser.parse_args().runs)
