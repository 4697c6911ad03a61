"""kill -9 of the control service with low-latency and elastic work in flight, then a
restart on the same data (SQLite and PostgreSQL): every call answered before the kill is
in the history, nothing stays Pending or Running, every failure has a reason.

The service runs as `gristmill up` in a process of its own (the other tests run it in a
thread, which cannot be killed)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    _create_postgres_database,
    _drop_postgres_database,
    _postgres_admin_url,
    free_port,
)

STEP = '''
import time


async def echo(text: str) -> dict:
    return {"text": text}


def slow(text: str) -> dict:
    time.sleep(2)
    return {"text": text}


def sleepy(text: str) -> dict:
    time.sleep(120)
    return {"text": text}
'''
LOW_CALLS = 200
ELASTIC_CALLS = 6
SETTLE_S = 150


def archive(code: str = STEP) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = code.encode()
        info = tarfile.TarInfo("main.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class Service:
    def __init__(self, data_dir: Path, database_url: str | None,
                 env: dict[str, str] | None = None) -> None:
        self.data_dir, self.database_url = data_dir, database_url
        self.env = env or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "gristmill.cli", "up", "--data-dir",
                   str(self.data_dir), "--port", str(self.port)]
        if self.database_url:
            command += ["--database-url", self.database_url]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL,
                                        env={**os.environ, "GRISTMILL_LOG_LEVEL": "warning",
                                             **self.env})
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "gristmill up exited"
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise AssertionError("the control service did not start")

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def api(self) -> httpx.Client:
        credentials = (self.data_dir / "credentials.env").read_text()
        sdk = next(line.split("=", 1)[1].strip() for line in credentials.splitlines()
                   if "GRISTMILL_SDK_TOKEN=" in line)
        token = httpx.post(f"{self.url}/api/v1/auth/refresh", json={"refresh_token": sdk},
                           timeout=60).json()["access_token"]
        return httpx.Client(base_url=f"{self.url}/api/v1", timeout=120,
                            headers={"Authorization": f"Bearer {token}"})


@pytest.fixture(params=["sqlite", "postgres"])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    url = None
    if request.param == "postgres":
        admin = _postgres_admin_url()
        if admin is None:
            pytest.skip("PostgreSQL is not reachable")
        name, url = _create_postgres_database(admin)
    service = Service(tmp_path / "env", url)
    try:
        yield service
    finally:
        service.stop()
        if url is not None:
            _drop_postgres_database(admin, name)  # type: ignore[arg-type]


def deploy(api: httpx.Client, name: str, function: str, mode: str, code: str = STEP) -> str:
    created = api.post("/pipelines", data={
        "pipeline_name": name, "function_path": "main.py", "function_name": function,
        "inputs[0][name]": "text", "inputs[0][data_type]": "string",
        "outputs[0][name]": "text", "outputs[0][data_type]": "string"},
        files={"step_file": ("step_file", archive(code))})
    assert created.status_code == 201, created.text
    options: dict[str, Any] = {"pipeline_name": name, "name": name, "mode": mode}
    if mode == "low_latency":
        options |= {"enable_parallel_executions": True, "max_parallel_executions_per_pod": 16}
    endpoint = api.post("/endpoints", json=options)
    assert endpoint.status_code == 201, endpoint.text
    return str(endpoint.json()["endpoint_token"])


def test_kill_9_loses_no_answered_call(service: Service) -> None:
    service.start()
    with service.api() as api:
        low_token = deploy(api, "crash-low", "echo", "low_latency")
        elastic_token = deploy(api, "crash-elastic", "slow", "elastic")

    answered: list[str] = []
    accepted: list[str] = []
    lock = threading.Lock()

    def low_call(i: int) -> None:
        try:
            response = httpx.post(f"{service.url}/endpoints/crash-low", json={"text": str(i)},
                                  headers={"Authorization": f"EndpointToken {low_token}"},
                                  timeout=30)
        except httpx.HTTPError:
            return  # in flight when the service died: not answered
        if response.status_code == 200:
            with lock:
                answered.append(response.headers["craft-ai-execution-id"])

    # elastic calls the SDK's way: accepted at once (303), then running when the kill comes
    for i in range(ELASTIC_CALLS):
        response = httpx.post(f"{service.url}/endpoints/crash-elastic", json={"text": str(i)},
                              headers={"Authorization": f"EndpointToken {elastic_token}",
                                       "craft-ai-client": "tests"}, timeout=30)
        assert response.status_code == 303, response.text
        accepted.append(response.json()["execution_id"])
    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(low_call, i) for i in range(LOW_CALLS)]
        while len(answered) < LOW_CALLS // 2:
            time.sleep(0.01)
        service.kill()
        for future in futures:
            future.result()
    assert answered, "no call was answered before the kill"

    service.start()
    with service.api() as api:
        deadline = time.monotonic() + SETTLE_S
        while True:
            low = {e["execution_id"]: e for e in
                   api.get("/deployments/crash-low/executions").json()}
            elastic = {e["execution_id"]: e for e in
                       api.get("/deployments/crash-elastic/executions").json()}
            everything = [*low.values(), *elastic.values()]
            active = [e for e in everything if e["status"] in ("Pending", "Running")]
            if not active or time.monotonic() > deadline:
                break
            time.sleep(1)
    assert [e for e in answered if e not in low] == []
    assert [e for e in accepted if e not in elastic] == []
    assert active == [], f"still active {SETTLE_S} s after the restart: {active}"
    assert [e for e in everything if e["status"] == "Failed" and not e["status_reason"]] == []
    assert all(low[e]["status"] == "Succeeded" for e in answered)
    # accepted elastic work is never dropped for want of a worker: queued again at start-up
    assert [e for e in elastic.values()
            if e["status_reason"] == "no worker was started for this execution"] == []
