"""Workers killed from outside (kill -9, as the OOM killer does) while calls are in flight,
on a real `gristmill up` (SQLite and PostgreSQL): the killed work fails with a reason and
its caller gets an error answer naming its execution, the work beside it is untouched,
nothing stays Pending or Running, and the next call is served.

The step writes its process id to a file, then holds until a release file exists, so the
test knows which process runs which call and when every call is in flight."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.reliability.test_crash import Service, deploy, service  # noqa: F401  (fixture)

STEP = '''
import os
import time
from pathlib import Path


def hold(text: str) -> dict:
    """text is "<folder>|<name>": record the pid as <folder>/<name>.pid, wait for release."""
    folder, name = text.split("|")
    Path(folder, f"{name}.pid.tmp").write_text(str(os.getpid()))
    os.replace(Path(folder, f"{name}.pid.tmp"), Path(folder, f"{name}.pid"))
    deadline = time.monotonic() + 120
    while not Path(folder, "release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return {"text": name}
'''
DEADLINE_S = 120


def eventually(check: Any, what: str) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def pids(folder: Path, names: list[str]) -> dict[str, int] | None:
    files = {name: folder / f"{name}.pid" for name in names}
    if not all(path.exists() for path in files.values()):
        return None
    return {name: int(path.read_text()) for name, path in files.items()}


def settled(api: httpx.Client, deployment: str) -> list[dict[str, Any]] | None:
    rows: list[dict[str, Any]] = api.get(f"/deployments/{deployment}/executions").json()
    if any(row["status"] in ("Pending", "Running") for row in rows):
        return None
    return rows


def call(env: Service, name: str, token: str, text: str, *,
         client: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"EndpointToken {token}"}
    if client:
        headers["craft-ai-client"] = client  # the SDK's way: 303 at once, then the result
    return httpx.post(f"{env.url}/endpoints/{name}", json={"text": text}, headers=headers,
                      follow_redirects=client is None, timeout=DEADLINE_S)


def result(env: Service, name: str, token: str, execution_id: str) -> httpx.Response:
    return httpx.get(f"{env.url}/endpoints/{name}/executions/{execution_id}",
                     headers={"Authorization": f"EndpointToken {token}"},
                     follow_redirects=True, timeout=DEADLINE_S)


@pytest.fixture
def running(service: Service) -> Service:  # noqa: F811
    service.env = {"GRISTMILL_WORKER_CAPACITY": "4"}
    service.start()
    return service


def test_killed_elastic_workers_fail_alone(running: Service, tmp_path: Path) -> None:
    folder = tmp_path / "elastic"
    folder.mkdir()
    with running.api() as api:
        token = deploy(api, "killed-elastic", "hold", "elastic", STEP)
        names = ["a", "b", "c", "d"]
        accepted = {}
        for name in names:
            response = call(running, "killed-elastic", token, f"{folder}|{name}", client="tests")
            assert response.status_code == 303, response.text
            accepted[name] = response.json()["execution_id"]
        workers = eventually(lambda: pids(folder, names), "every call to be running")
        for name in ("a", "b"):
            os.kill(workers[name], signal.SIGKILL)
        (folder / "release").touch()
        rows = {row["execution_id"]: row
                for row in eventually(lambda: settled(api, "killed-elastic"), "the end")}
        assert set(rows) == set(accepted.values())
        for name in ("a", "b"):
            row = rows[accepted[name]]
            assert row["status"] == "Failed", row
            assert "SIGKILL" in row["status_reason"], row
        for name in ("c", "d"):
            assert rows[accepted[name]]["status"] == "Succeeded", rows[accepted[name]]
            answer = result(running, "killed-elastic", token, accepted[name])
            assert answer.status_code == 200, answer.text
            assert answer.json()["outputs"] == {"text": name}

        # the caller of killed work gets the failure, naming its execution
        answer = result(running, "killed-elastic", token, accepted["a"])
        assert answer.status_code == 500, answer.text
        assert "SIGKILL" in answer.json()["message"]
        assert answer.headers.get("craft-ai-execution-id") == accepted["a"]

        after = call(running, "killed-elastic", token, f"{folder}|e")
        assert after.status_code == 200, after.text
        assert after.json()["outputs"] == {"text": "e"}


def test_a_killed_low_latency_worker_fails_its_calls_and_comes_back(
    running: Service, tmp_path: Path
) -> None:
    folder = tmp_path / "low"
    folder.mkdir()
    with running.api() as api:
        token = deploy(api, "killed-low", "hold", "low_latency", STEP)
        names = ["a", "b", "c"]
        with ThreadPoolExecutor(len(names)) as pool:
            futures = {name: pool.submit(call, running, "killed-low", token, f"{folder}|{name}")
                       for name in names}
            workers = eventually(lambda: pids(folder, names), "every call to be in flight")
            # parallel executions share one warm worker: one kill fails them all
            assert len(set(workers.values())) == 1
            os.kill(workers["a"], signal.SIGKILL)
            answers = {name: future.result() for name, future in futures.items()}
        for name, answer in answers.items():
            assert answer.status_code == 500, (name, answer.text)
            assert "crashed" in answer.json()["message"], answer.text
            assert answer.headers.get("craft-ai-execution-id"), answer.headers

        rows = eventually(lambda: settled(api, "killed-low"), "the end")
        ids = {answer.headers["craft-ai-execution-id"] for answer in answers.values()}
        assert {row["execution_id"] for row in rows} == ids
        assert all(row["status"] == "Failed" and "crashed" in row["status_reason"]
                   for row in rows), rows

        eventually(lambda: api.get("/deployments/killed-low").json()["status"] == "up",
                   "the worker to come back")
        (folder / "release").touch()
        after = call(running, "killed-low", token, f"{folder}|d")
        assert after.status_code == 200, after.text
        assert after.json()["outputs"] == {"text": "d"}
        assert int((folder / "d.pid").read_text()) != workers["a"]
