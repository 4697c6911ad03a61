"""Traffic rules apply on every replica (docs/rollout.md#replicas): two real control service
processes on one PostgreSQL database; a rule set through one is applied to the calls made
through the other.

No wall-clock claim: the test polls the second replica until the X-Gristmill-Pipeline
header shows the rule, failing only past a generous bound (SEEN_WITHIN_S). How long it
took is measured by bench/rollout_replicas.py."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.platform.stepkit import archive_of, write_folder
from tests.platform.test_rollout import INFO_OUT, STEP_CODE, TEXT_IN
from tests.platform.test_runs import make_pipeline
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
