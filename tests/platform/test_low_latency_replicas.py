"""Several warm workers per low-latency deployment on the local backend
(``GRISTMILL_LOCAL_WARM_WORKERS``): the real control service and real worker processes.
That two executions run at once on a deployment without parallel executions is proven
from their statuses and timestamps while a gate the test holds keeps them running."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
from pydantic import ValidationError

from gristmill_platform.executors.workers import replica_key, replica_of
from gristmill_platform.settings import Settings
from tests.platform.stepkit import archive_of, write_folder
from tests.platform.test_low_latency import (
    STEP_CODE,
    deployment,
    eventually,
    low_latency,
    max_overlap,
    process_gone,
    result,
    timestamps,
    trigger,
)


def worker_pids(data_dir: Path) -> set[int]:
    """The warm workers of the control service on data_dir (a thread of this process, as
    other modules' services may be): they run in its step code folders."""
    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if "gristmill.runtime" in child.cmdline() and "serve" in child.cmdline() \
                    and Path(child.cwd()).is_relative_to(data_dir):
                found.add(child.pid)
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.fixture(scope="module")
def steps(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return archive_of(write_folder(tmp_path_factory.mktemp("steps"),
                                   {"src/steps.py": STEP_CODE}))


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.conftest import start_environment

    data = tmp_path_factory.mktemp("replicas")
    server, env, _ = start_environment(data / "env", f"sqlite:///{data}/gristmill.sqlite3",
                                       local_warm_workers=2)
    try:
        yield env
    finally:
        server.stop()


def test_replica_keys_round_trip() -> None:
    assert replica_key("dep", 0) == "dep"
    assert replica_of("dep") == ("dep", 0)
    for key in ("dep", "dep@challenger", "dep@#step"):
        assert replica_of(replica_key(key, 3)) == (key, 3)


def test_a_deployment_needs_at_least_one_warm_worker(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="local_warm_workers"):
        Settings(data_dir=tmp_path, local_warm_workers=0)


def test_two_workers_run_two_calls_at_once_and_stop_together(two_workers, steps,
                                                             tmp_path) -> None:
    env = two_workers
    with env.client() as api:
        created = low_latency(api, steps, "ll-two", "gated")
        assert created["status"] == "up", created["status_reason"]
        pods = created["pods"]
        assert sorted(pod["pod_id"] for pod in pods) == ["local-ll-two-1", "local-ll-two~1-1"]
        assert {pod["status"] for pod in pods} == {"running"}
        pids = worker_pids(Path(env.data_dir).resolve())
        assert len(pids) == 2
        token = created["endpoint_token"]
        gate = tmp_path / "gate"
        with ThreadPoolExecutor(max_workers=2) as pool:
            ids = list(pool.map(lambda _: trigger(env, "ll-two", token, {"text": str(gate)}),
                                range(2)))

        def both_running() -> bool:
            return all(api.get(f"/executions/{i}").json()["status"] == "Running" for i in ids)

        # one place per worker (no parallel executions): both run only on two workers
        eventually(both_running, "two executions running at once")
        gate.write_text("open")
        for execution_id in ids:
            response = result(env, "ll-two", token, execution_id)
            assert response.status_code == 200, response.text
            assert response.json()["outputs"]["info"]["max_active"] == 1
        assert max_overlap([timestamps(api, i) for i in ids]) == 2
        assert deployment(api, "ll-two")["status"] == "up"
        assert api.delete("/deployments/ll-two").status_code == 200
    assert all(process_gone(pid) for pid in pids)
