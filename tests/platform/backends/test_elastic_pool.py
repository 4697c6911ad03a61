"""The elastic pool through the control service, on the API emulator with the kubelet
double (conftest.py): pool pods really run ``python -m gristmill.runtime pool``, claim
their execution, run it and exit.

Its own environment (a pool of one pod per step), not the package's ``backend``: the
behavioural suite runs with the pool off, as deployments do by default.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gristmill_platform.executors.kubernetes.elastic_pool import pool_token
from gristmill_platform.executors.kubernetes.pool_manifests import MODE_POOL
from tests.conftest import (
    _create_postgres_database,
    _drop_postgres_database,
    _postgres_admin_url,
)
from tests.datastore_conformance.conftest import Moto
from tests.platform.backends.conftest import Backend, _emulated, query_one
from tests.platform.stepkit import archive_of, post_step, step_form, write_folder
from tests.platform.test_auth import assert_error
from tests.platform.test_runs import outputs_of, run, run_and_wait, wait

STEP_CODE = '''
import os
import time


def env_of(text: str) -> dict:
    return {"text": os.environ.get(text, "<unset>")}


def hold(text: str) -> dict:
    while not os.path.exists(text):
        time.sleep(0.05)
    return {"text": "released"}
'''
TEXT = [{"name": "text", "data_type": "string"}]
PATIENCE_S = 90
SECRET_VARIABLE = "POOL_TEST_SECRET"
SECRET_VALUE = "hush-" + uuid.uuid4().hex


def eventually(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + PATIENCE_S
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def pooled(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           moto: Moto) -> Iterator[Backend]:
    root = tmp_path_factory.mktemp(f"pool-{request.param}")
    if request.param == "sqlite":
        yield from _emulated(root, moto, kubernetes_elastic_pool_size=1,
                             kubernetes_elastic_pool_idle_s=600.0)
        return
    admin_url = _postgres_admin_url()
    if admin_url is None:
        pytest.skip("PostgreSQL is not reachable (GRISTMILL_TEST_POSTGRES_URL)")
    name, url = _create_postgres_database(admin_url)
    try:
        yield from _emulated(root, moto, database_url=url, kubernetes_elastic_pool_size=1,
                             kubernetes_elastic_pool_idle_s=600.0)
    finally:
        _drop_postgres_database(admin_url, name)


@pytest.fixture(scope="module")
def api(pooled: Backend) -> Iterator[httpx.Client]:
    with pooled.env.client() as client:
        client.put("/environment-variables",
                   json={"environment_variables": {SECRET_VARIABLE: SECRET_VALUE}})
        yield client


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    folder = tmp_path_factory.mktemp("pool-steps")
    return archive_of(write_folder(folder, {"src/steps.py": STEP_CODE}))


def pipeline(api: httpx.Client, archive: bytes, function: str) -> str:
    name = f"pool-{function.replace('_', '-')}-{uuid.uuid4().hex[:6]}"
    response = post_step(api, step_form(name, function_path="src/steps.py",
                                        function_name=function, inputs=TEXT, outputs=TEXT,
                                        name_field="pipeline_name"),
                         archive, route="/pipelines")
    assert response.status_code == 201, response.text
    return name


def database(backend: Backend) -> Path | str:
    url = str(backend.env.settings.database_url)  # type: ignore[attr-defined]
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite") else url


def step_of(backend: Backend, execution_id: str) -> str:
    (step_id,) = query_one(database(backend), "SELECT step_id FROM executions WHERE id = ?",
                           (execution_id,))
    return str(step_id)


def pool_pods(backend: Backend, step_id: str) -> dict[str, Any]:
    """The step's idle pool pods the kubelet double runs (their runner started)."""
    assert backend.emulator is not None and backend.kubelet is not None
    found = {}
    for (resource, _, name), obj in list(backend.emulator.objects.items()):
        if resource.plural != "pods" or obj.deleted:
            continue
        metadata = obj.raw.get("metadata") or {}
        if ((metadata.get("labels") or {}).get("gristmill.io/mode") == MODE_POOL
                and (metadata.get("annotations") or {}).get("gristmill.io/step-id") == step_id):
            found[name] = obj.raw
    return found


def ready_pool_pod(backend: Backend, step_id: str) -> str:
    """A pool pod of the step that the next take gives: running on the node, and Running in
    the pool's own listing (the node's word alone is not enough: until the pool lists the
    pod's new status, a take passes it over and the execution runs cold)."""
    pool = backend.state.executions.pool

    def ready() -> str | None:
        for name in pool.takeable_pods(step_id):
            if name in backend.kubelet.running:  # type: ignore[union-attr]
                return str(name)
        return None

    return str(eventually(ready, "a running pool pod"))


def worker_of(api: httpx.Client, execution_id: str) -> str:
    return str(api.get(f"/executions/{execution_id}").json()["worker"])


def test_a_miss_runs_cold_then_the_next_execution_takes_a_pool_pod(
        pooled: Backend, api: httpx.Client, archive: bytes) -> None:
    name = pipeline(api, archive, "env_of")
    first, response = run_and_wait(api, name, {"text": SECRET_VARIABLE})
    assert outputs_of(response) == {"text": SECRET_VALUE}
    assert worker_of(api, first).startswith("gm-exec-")  # no pool yet: a cold pod
    step_id = step_of(pooled, first)
    pod = ready_pool_pod(pooled, step_id)
    spec_env = pool_pods(pooled, step_id)[pod]["spec"]["containers"][0]["env"]
    # before it takes an execution, the pod holds nothing of one
    assert SECRET_VALUE not in str(spec_env)
    assert "GRISTMILL_SDK_TOKEN" not in str(spec_env)

    second, response = run_and_wait(api, name, {"text": SECRET_VARIABLE})
    assert outputs_of(response) == {"text": SECRET_VALUE}  # delivered at the hand-off
    assert worker_of(api, second) == pod
    # one execution per pod: its process exits, the watcher deletes it, another replaces it
    eventually(lambda: pod not in pooled.kubelet.running  # type: ignore[union-attr]
               and not pooled.emulator.has("v1/pods", pod),  # type: ignore[union-attr]
               "the used pool pod gone")
    replacement = ready_pool_pod(pooled, step_id)
    assert replacement != pod
    third, response = run_and_wait(api, name, {"text": "GRISTMILL_POOL_TOKEN"})
    assert outputs_of(response) == {"text": "<unset>"}  # the step never sees it
    assert worker_of(api, third) == replacement


def test_pool_claims_are_refused_with_clear_errors(
        pooled: Backend, api: httpx.Client, archive: bytes, tmp_path: Path) -> None:
    name = pipeline(api, archive, "hold")
    release = tmp_path / "release"
    started = run(api, name, {"text": str(release)})
    assert started.status_code == 201, started.text
    cold = started.json()["execution_id"]
    step_id = eventually(lambda: _step_if_recorded(pooled, cold), "the execution recorded")
    pod = ready_pool_pod(pooled, step_id)
    started = run(api, name, {"text": str(release)})
    held = started.json()["execution_id"]
    eventually(lambda: api.get(f"/executions/{held}").json()["status"] == "Running",
               "the pool pod's execution running")
    assert worker_of(api, held) == pod
    key = pooled.state.executions.pool.key
    claim = pooled.env.url + "/api/v1/runtime/pool/claim"

    def claim_as(pod_name: str, step: str, token: str | None, **body: Any) -> httpx.Response:
        headers = {} if token is None else {"X-Gristmill-Pool-Token": token}
        return httpx.post(claim, json={"pod": pod_name, "step_id": step, "wait_s": 0, **body},
                          headers=headers, timeout=30)

    # a second claim by the pod running an execution
    assert_error(claim_as(pod, step_id, pool_token(key, pod, step_id)), 409,
                 "a pool pod runs exactly one execution")
    # its token, for another pod or another step
    assert_error(claim_as("gm-pool-other-1", step_id, pool_token(key, pod, step_id)), 401,
                 "not valid for this pod and step")
    assert_error(claim_as(pod, "another-step", pool_token(key, pod, step_id)), 401,
                 "not valid for this pod and step")
    # a token good for this pod under another step cannot claim this step's execution
    assert_error(claim_as(pod, "another-step", pool_token(key, pod, "another-step")), 403,
                 "cannot run execution")
    assert_error(claim_as(pod, step_id, None), 401, "X-Gristmill-Pool-Token")
    assert_error(claim_as(pod, step_id, "x", wait_s=-1), 400, "wait_s")
    assert_error(httpx.post(claim, json={"step_id": step_id}, timeout=30,
                            headers={"X-Gristmill-Pool-Token": "x"}), 400, "pod")
    # a pool token is no SDK token: the runtime routes refuse it
    refused = httpx.post(f"{pooled.env.url}/api/v1/runtime/executions/{held}/start",
                         headers={"Authorization": f"Bearer {pool_token(key, pod, step_id)}"},
                         timeout=30)
    assert refused.status_code == 401, refused.text
    # an idle pod with nothing given to it: told to come back (204)
    assert claim_as("gm-pool-idle-1", step_id,
                    pool_token(key, "gm-pool-idle-1", step_id)).status_code == 204
    release.write_text("go")
    assert outputs_of(wait(api, held)) == {"text": "released"}
    assert outputs_of(wait(api, cold)) == {"text": "released"}


def _step_if_recorded(backend: Backend, execution_id: str) -> str | None:
    try:
        return step_of(backend, execution_id)
    except TypeError:
        return None


def test_an_execution_whose_pool_pod_dies_fails_with_a_reason(
        pooled: Backend, api: httpx.Client, archive: bytes, tmp_path: Path) -> None:
    name = pipeline(api, archive, "hold")
    release = tmp_path / "release"
    warm, _ = run_and_wait(api, name, {"text": str(tmp_path)})  # exists: returns at once
    pod = ready_pool_pod(pooled, step_of(pooled, warm))
    started = run(api, name, {"text": str(release)})
    held = started.json()["execution_id"]
    eventually(lambda: api.get(f"/executions/{held}").json()["status"] == "Running",
               "the execution running on the pool pod")
    assert worker_of(api, held) == pod
    os.killpg(pooled.kubelet.pids[pod], signal.SIGKILL)  # type: ignore[union-attr]
    eventually(lambda: api.get(f"/executions/{held}").json()["status"] == "Failed",
               "the execution failed")
    # the kubelet double reports a SIGKILLed container as OOMKilled, as a node would
    assert "memory" in api.get(f"/executions/{held}").json()["status_reason"].lower()
    eventually(lambda: not pooled.emulator.has("v1/pods", pod),  # type: ignore[union-attr]
               "the dead pool pod deleted")


def test_after_a_restart_the_idle_pool_pod_is_adopted_and_runs_the_next_execution(
        pooled: Backend, api: httpx.Client, archive: bytes) -> None:
    """Last in the module: it restarts the control service its tests share."""
    from tests.conftest import ServerThread

    name = pipeline(api, archive, "env_of")
    first, response = run_and_wait(api, name, {"text": SECRET_VARIABLE})
    assert outputs_of(response) == {"text": SECRET_VALUE}
    step_id = step_of(pooled, first)
    pod = ready_pool_pod(pooled, step_id)

    old = pooled.server
    old.stop()
    old.thread.join(90)  # a claim in flight holds the old server for its wait
    assert not old.thread.is_alive()
    assert pod in pooled.kubelet.running  # type: ignore[union-attr]  # the pod waits on
    restarted = ServerThread(pooled.env.settings)
    restarted.start(pooled.env.url)
    pooled.server = restarted
    pooled.state = restarted.server.config.app.state.gristmill

    assert ready_pool_pod(pooled, step_id) == pod  # adopted: the same pod, none added
    assert set(pool_pods(pooled, step_id)) == {pod}
    second, response = run_and_wait(api, name, {"text": SECRET_VARIABLE})
    assert outputs_of(response) == {"text": SECRET_VALUE}
    assert worker_of(api, second) == pod
