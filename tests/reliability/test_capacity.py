"""Admission control and execution timeouts on a real `gristmill up` (SQLite): with one
worker and room for two waiting, a burst is queued then refused with 503 and
Retry-After, every accepted call succeeds, one at a time; an execution past its timeout
is failed with that reason and its worker stopped."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.reliability.test_crash import Service, deploy


def when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def settle(api: httpx.Client, execution_ids: list[str], timeout_s: float) -> list[Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        rows = [api.get(f"/executions/{e}").json() for e in execution_ids]
        if all(r["status"] not in ("Pending", "Running") for r in rows) or \
                time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def test_a_burst_is_queued_then_refused_and_a_timeout_fails(tmp_path: Path) -> None:
    service = Service(tmp_path / "env", None, env={
        "GRISTMILL_WORKER_CAPACITY": "1", "GRISTMILL_ELASTIC_QUEUE_LIMIT": "2",
        "GRISTMILL_EXECUTION_TIMEOUT_S": "3"})
    service.start()
    try:
        with service.api() as api:
            slow = deploy(api, "cap-slow", "slow", "elastic")
            sleepy = deploy(api, "cap-sleepy", "sleepy", "elastic")
            accepted, refused = [], []
            for i in range(5):
                response = httpx.post(f"{service.url}/endpoints/cap-slow", json={"text": str(i)},
                                      headers={"Authorization": f"EndpointToken {slow}",
                                               "craft-ai-client": "tests"}, timeout=30)
                if response.status_code == 303:
                    accepted.append(response.json()["execution_id"])
                else:
                    refused.append(response)
            assert len(accepted) == 3, [r.text for r in refused]
            for response in refused:
                assert response.status_code == 503, response.text
                assert int(response.headers["retry-after"]) >= 1
                assert response.json()["name"] == "QueueFull"
            rows = settle(api, accepted, 120)
            assert [r["status"] for r in rows] == ["Succeeded"] * 3, rows
            spans = sorted((when(r["start_date"]), when(r["end_date"])) for r in rows)
            # one worker: each started after the previous one ended, in arrival order
            assert all(later[0] >= earlier[1]
                       for earlier, later in zip(spans, spans[1:], strict=False))
            assert [r["execution_id"] for r in sorted(rows, key=lambda r: r["start_date"])] \
                == accepted

            response = httpx.post(f"{service.url}/endpoints/cap-sleepy", json={"text": "z"},
                                  headers={"Authorization": f"EndpointToken {sleepy}",
                                           "craft-ai-client": "tests"}, timeout=30)
            assert response.status_code == 303, response.text
            [row] = settle(api, [response.json()["execution_id"]], 60)
            assert row["status"] == "Failed"
            assert "ran longer than its timeout (3 s)" in row["status_reason"]
    finally:
        service.stop()
