"""Traffic rules apply on every replica (docs/rollout.md#replicas): two real control service
processes on one PostgreSQL database; a rule set through one is applied to the calls made
through the other.

No wall-clock claim: the test polls the second replica until the X-Gristmill-Pipeline
header shows the rule, failing only past a generous bound (SEEN_WITHIN_S). How long it
took is measured by bench/rollout_replicas.py."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gristmill_platform.deployments.directory import TTL_S
from tests.conftest import free_port
from tests.platform.stepkit import archive_of, write_folder
from tests.platform.test_low_latency import process_gone
from tests.platform.test_rollout import INFO_OUT, STEP_CODE, TEXT_IN
from tests.platform.test_runs import make_pipeline, outputs_of, wait
from tests.platform.test_scheduler_replicas import replicas, serve, stop

__all__ = ["replicas"]  # the fixture: two processes on one fresh PostgreSQL database

# A failure bound, not a timing claim: the rule is due within directory.TTL_S (1 s); this
# leaves room for a loaded machine and for the challenger's warm worker to start.
SEEN_WITHIN_S = 10.0
POLL_S = 0.1


def client(base: str, token: str) -> httpx.Client:
    access = httpx.post(f"{base}/api/v1/auth/refresh",
                        json={"refresh_token": token}).json()["access_token"]
    return httpx.Client(base_url=f"{base}/api/v1", timeout=60,
                        headers={"Authorization": f"Bearer {access}"})


def answering(base: str, name: str, token: str, text: str) -> str:
    """The pipeline that answers a call, from the header alone: as an SDK caller, which
    gets the 303 to the results at once (the execution goes on)."""
    response = httpx.post(f"{base}/endpoints/{name}", json={"text": text}, timeout=60,
                          headers={"Authorization": f"EndpointToken {token}",
                                   "Gristmill-Client": "tests"})
    assert response.status_code == 303, response.text
    return response.headers["x-gristmill-pipeline"]


def seen_on(base: str, name: str, token: str, text: str, expected: str) -> float:
    """Call until the answer comes from expected; the seconds from now until the call that
    showed it was sent. Fails past SEEN_WITHIN_S."""
    start = time.monotonic()
    while True:
        sent = time.monotonic()
        got = answering(base, name, token, text)
        if got == expected:
            return sent - start
        assert sent - start < SEEN_WITHIN_S, (
            f"{name}: calls through the other replica still answered by {got!r}, not "
            f"{expected!r}, {SEEN_WITHIN_S:.0f} s after the rule was set")
        time.sleep(POLL_S)


@pytest.mark.parametrize("mode", ["low_latency", "elastic"])
def test_a_rule_set_on_one_replica_applies_on_the_other(replicas: Any, tmp_path, mode: str
                                                        ) -> None:
    data_dir, url, sdk_token = replicas
    ports = [free_port(), free_port()]
    processes = [serve(data_dir, url, ports[0])]
    try:
        a = f"http://127.0.0.1:{ports[0]}"
        api = client(a, sdk_token)
        archive = archive_of(write_folder(tmp_path / "code", {"src/steps.py": STEP_CODE}))
        champion = make_pipeline(api, archive, "champion", "champion", TEXT_IN, INFO_OUT)
        challenger = make_pipeline(api, archive, "challenger", "challenger", TEXT_IN,
                                   INFO_OUT)
        created = api.post("/endpoints", json={"pipeline_name": champion, "name": "ep",
                                               "mode": mode})
        assert created.status_code == 201, created.text
        token = created.json()["endpoint_token"]
        # the second replica: it adopts the low-latency worker at start-up
        processes.append(serve(data_dir, url, ports[1]))
        b = f"http://127.0.0.1:{ports[1]}"
        assert answering(b, "ep", token, "b") == champion

        assert api.put("/deployments/ep/traffic", json={
            "key": "text", "routes": {"b": challenger}, "default": champion}
                       ).status_code == 200
        seen_on(b, "ep", token, "b", challenger)
        assert answering(b, "ep", token, "a") == champion  # the default of the key rule
        # the rule is stored: the other replica reads it back as set
        assert client(b, sdk_token).get("/deployments/ep/traffic").json()["rule"] == {
            "key": "text", "routes": {"b": challenger}, "default": champion}

        # and back: no rule, the own pipeline answers everything again
        assert api.put("/deployments/ep/traffic", json={}).status_code == 200
        seen_on(b, "ep", token, "b", champion)
    finally:
        for process in processes:
            stop(process)


def test_a_low_latency_endpoint_created_after_a_replica_started_is_served_there(
        replicas: Any, tmp_path) -> None:
    """Each local control service runs its own warm workers: one that started before the
    endpoint was created (through the other) brings its worker up at the first call."""
    data_dir, url, sdk_token = replicas
    ports = [free_port(), free_port()]
    processes = [serve(data_dir, url, port) for port in ports]  # both before the endpoint
    try:
        a, b = (f"http://127.0.0.1:{port}" for port in ports)
        api = client(a, sdk_token)
        archive = archive_of(write_folder(tmp_path / "code", {"src/steps.py": STEP_CODE}))
        champion = make_pipeline(api, archive, "champion", "champion", TEXT_IN, INFO_OUT)
        created = api.post("/endpoints", json={"pipeline_name": champion, "name": "late",
                                               "mode": "low_latency"})
        assert created.status_code == 201, created.text
        token = created.json()["endpoint_token"]
        for text in ("first", "second"):  # the first one waits for b's worker to start
            answer = httpx.post(f"{b}/endpoints/late", json={"text": text}, timeout=120,
                                headers={"Authorization": f"EndpointToken {token}"})
            assert answer.status_code == 200, answer.text
            assert answer.json()["outputs"]["info"] == {"who": "champion", "text": text}
            assert answer.headers["x-gristmill-pipeline"] == champion
        # a name no deployment has is still a 404 there, and starts nothing
        missing = httpx.post(f"{b}/endpoints/nothing", json={"text": "x"}, timeout=60,
                             headers={"Authorization": f"EndpointToken {token}"})
        assert missing.status_code == 404, missing.text
    finally:
        for process in processes:
            stop(process)


# A step whose answer tells which import of its module answers: the module reads the
# version file once, at import, as a worker imports a step's code once.
VERSIONED_CODE = '''
import os
from pathlib import Path

VERSION = Path({path!r}).read_text()


def versioned(text: str) -> dict:
    return {{"info": {{"version": VERSION, "pid": os.getpid(), "text": text}}}}
'''
# Bounded waits (failure bounds, not timing claims): a worker's start on a loaded machine.
GONE_WITHIN_S = 60.0


def versioned_endpoint(api: httpx.Client, tmp_path: Path, name: str) -> tuple[Path, str]:
    """A low-latency endpoint of the versioned step, its version file at "v1"; (that
    file, the endpoint token)."""
    version = tmp_path / "version"
    version.write_text("v1")
    archive = archive_of(write_folder(tmp_path / "code", {
        "src/steps.py": VERSIONED_CODE.format(path=str(version))}))
    pipeline = make_pipeline(api, archive, f"{name}-p", "versioned", TEXT_IN, INFO_OUT)
    created = api.post("/endpoints", json={"pipeline_name": pipeline, "name": name,
                                           "mode": "low_latency"})
    assert created.status_code == 201, created.text
    return version, str(created.json()["endpoint_token"])


def versioned_call(base: str, name: str, token: str, text: str = "x") -> dict[str, Any]:
    """A plain HTTP call (the fast path): what answered it."""
    answer = httpx.post(f"{base}/endpoints/{name}", json={"text": text}, timeout=120,
                        headers={"Authorization": f"EndpointToken {token}"})
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["outputs"]["info"])


def children_running(parent: int) -> set[int]:
    """The warm worker processes (the runner's serve mode) a control service started."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # the name in parentheses may hold spaces: the fields after it are fixed
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"gristmill.runtime" in command and b"serve" in command:
            found.add(int(entry.name))
    return found


def until(check: Any, what: str, within_s: float = GONE_WITHIN_S) -> Any:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(POLL_S)
    raise AssertionError(f"timed out waiting for {what}")


def test_an_update_or_a_deletion_through_one_replica_is_followed_by_the_other(
        replicas: Any, tmp_path: Path) -> None:
    """No call through the second replica needed: its periodic check of the deployments
    whose workers it holds rolls them on an update and stops them on a deletion, the
    variants' with them (executors/following.py)."""
    data_dir, url, sdk_token = replicas
    ports = [free_port(), free_port()]
    processes = [serve(data_dir, url, ports[0])]
    try:
        a, b = (f"http://127.0.0.1:{port}" for port in ports)
        api = client(a, sdk_token)
        version, token = versioned_endpoint(api, tmp_path, "fol")
        archive = archive_of(write_folder(tmp_path / "rollout", {"src/steps.py": STEP_CODE}))
        challenger = make_pipeline(api, archive, "challenger", "challenger", TEXT_IN,
                                   INFO_OUT)
        assert api.put("/deployments/fol/traffic", json={
            "key": "text", "routes": {"c": challenger}, "default": "fol-p"}
                       ).status_code == 200
        processes.append(serve(data_dir, url, ports[1]))  # resumes the worker: v1
        first = versioned_call(b, "fol", token)
        assert first["version"] == "v1"
        # the variant's warm worker on b, brought up by its first call there
        assert answering(b, "fol", token, "c") == challenger
        on_b = client(b, sdk_token)
        b_pods = on_b.get("/deployments/fol").json()["pods"]
        assert b_pods == [{"pod_id": "local-fol-1", "status": "running"}]

        version.write_text("v2")
        updated = api.patch("/deployments/fol", json={})
        assert updated.status_code == 200, updated.text
        assert updated.json()["version"] == 2
        # b rolls its worker with no call there: the new one serves, the old one stops
        until(lambda: on_b.get("/deployments/fol").json()["pods"] == [
            {"pod_id": "local-fol-2", "status": "running"}], "b's worker to roll")
        until(lambda: process_gone(first["pid"]), "b's old worker to stop")
        second = versioned_call(b, "fol", token)
        assert second["version"] == "v2" and second["pid"] != first["pid"]
        # which processes run b's warm workers (its own and the variant's)
        workers = children_running(processes[1].pid)
        assert second["pid"] in workers and len(workers) == 2, workers

        deleted = api.delete("/deployments/fol")
        assert deleted.status_code == 200, deleted.text
        # b stops them, no call needed
        until(lambda: all(process_gone(pid) for pid in workers), "b's workers to stop")
        assert on_b.get("/deployments/fol").status_code == 404
    finally:
        for process in processes:
            stop(process)


def test_a_call_through_the_other_replica_after_an_update_gets_the_new_code(
        replicas: Any, tmp_path: Path) -> None:
    """The periodic check is off on the second replica (GRISTMILL_WORKER_FOLLOW_S): a
    call arriving there more than the endpoint directory's TTL after an update made
    through the first is answered by the new code all the same (the call rolls the
    workers and waits for them: LowLatencyDispatcher.follow), on the fast path and on
    the database path (an SDK token's call, as a periodic fire)."""
    data_dir, url, sdk_token = replicas
    ports = [free_port(), free_port()]
    processes = [serve(data_dir, url, ports[0])]
    try:
        a, b = (f"http://127.0.0.1:{port}" for port in ports)
        api = client(a, sdk_token)
        version, token = versioned_endpoint(api, tmp_path, "cal")
        processes.append(serve(data_dir, url, ports[1], {"GRISTMILL_WORKER_FOLLOW_S": "3600"}))
        on_b = client(b, sdk_token)
        assert versioned_call(b, "cal", token)["version"] == "v1"

        for number, path in ((2, "database"), (3, "fast")):
            version.write_text(f"v{number}")
            assert api.patch("/deployments/cal", json={}).status_code == 200
            time.sleep(TTL_S + 0.5)  # what b knows of the deployment is older than TTL_S
            if path == "fast":
                info = versioned_call(b, "cal", token)
            else:
                triggered = on_b.post("/deployments/cal/executions", json={"text": "x"})
                assert triggered.status_code == 201, triggered.text
                info = outputs_of(wait(on_b, triggered.json()["execution_id"]))["info"]
            assert info["version"] == f"v{number}", (path, info)
    finally:
        for process in processes:
            stop(process)
