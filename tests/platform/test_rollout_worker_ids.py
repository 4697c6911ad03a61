"""Each warm worker of a variant pipeline has an id and a folder of its own, also when the
pipeline is deleted and created again under its name, which rolls its workers at an
unchanged deployment generation (docs/rollout.md). On the real control service and real
warm workers, SQLite and PostgreSQL.

Before, the old and the new worker were both ``local-<deployment>@<pipeline>-<generation>``
and shared ``data_dir/low-latency/<pod id>``: the old one's retirement removed the files of
the executions the new one ran."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from gristmill_platform.executors.workers import variant_key
from tests.platform.test_low_latency import eventually
from tests.platform.test_rollout import INFO_OUT, TEXT_IN, archive, endpoint, set_traffic
from tests.platform.test_rollout_shadows import workers_of
from tests.platform.test_runs import make_pipeline

__all__ = ["archive"]  # the module's fixture: the step folder of test_rollout


def running(api: httpx.Client, name: str, pipeline: str, *, but: str = "") -> dict[str, Any]:
    """The execution of that pipeline running on a worker (once it runs), but that one."""
    def found() -> dict[str, Any] | None:
        for listed in api.get(f"/deployments/{name}/executions").json():
            if listed["pipeline_name"] == pipeline and listed["execution_id"] != but:
                execution: dict[str, Any] = api.get(f"/executions/{listed['execution_id']}").json()
                if execution["status"] == "Running" and execution.get("worker"):
                    return execution
        return None
    return eventually(found, f"an execution of {pipeline} running")


def call(env: Any, name: str, token: str, text: str) -> httpx.Response:
    return httpx.post(f"{env.url}/endpoints/{name}", json={"text": text}, timeout=120,
                      headers={"Authorization": f"EndpointToken {token}"},
                      follow_redirects=True)


def test_a_variant_created_again_gets_a_worker_and_a_folder_of_its_own(
        gristmill_env, api, archive, unique) -> None:
    name = f"inc-{unique}"
    champion = make_pipeline(api, archive, f"inc-c-{unique}", "champion", TEXT_IN, INFO_OUT)
    variant = make_pipeline(api, archive, f"inc-v-{unique}", "gated", TEXT_IN, INFO_OUT)
    token = endpoint(api, champion, name, "low_latency")
    assert set_traffic(api, name, split={variant: 1}).status_code == 200
    key = variant_key(name, variant)
    gates = Path(gristmill_env.data_dir)
    old_gate, new_gate = gates / f"old-{unique}", gates / f"new-{unique}"

    with ThreadPoolExecutor(2) as threads:
        # a call held on the variant's worker: once rolled, that worker drains it
        held = threads.submit(call, gristmill_env, name, token, str(old_gate))
        old = running(api, name, variant)
        [old_process] = workers_of(key)
        old_io = Path(old_process.environ()["GRISTMILL_IO_DIR"])
        assert old_io.is_dir()

        assert api.delete(f"/pipelines/{variant}").status_code == 200
        assert make_pipeline(api, archive, variant, "scratch", TEXT_IN, INFO_OUT) == variant
        # the next call rolls the variant's workers (same deployment generation) and runs
        # on the new worker, keeping a file in its scratch folder until its gate opens
        fresh = threads.submit(call, gristmill_env, name, token, str(new_gate))
        eventually(lambda: Path(f"{new_gate}.started").exists(), "the new worker's call")
        new = running(api, name, variant, but=old["execution_id"])
        assert new["worker"] != old["worker"], "two workers with one pod id"
        [new_process] = [p for p in workers_of(key) if p.pid != old_process.pid]
        new_io = Path(new_process.environ()["GRISTMILL_IO_DIR"])
        assert new_io != old_io

        # the old worker's call ends: it stops, and its folder goes with it...
        old_gate.write_text("open")
        answer = held.result()
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"]["info"]["who"] == "gated"
        eventually(lambda: not old_io.exists(), "the old worker's folder to be removed")
        # ...not the new one's, whose call still finds its file
        assert new_io.is_dir()
        new_gate.write_text("open")
        answer = fresh.result()
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"]["info"] == {"who": "scratch",
                                                    "text": str(new_gate)}, answer.json()
    ended = api.get(f"/executions/{new['execution_id']}").json()
    assert (ended["status"], ended["worker"]) == ("Succeeded", new["worker"]), ended
    # the old call is tracked too, although its pipeline was deleted while it ran (the
    # journal wrote the deleted pipeline's id back, which the foreign key refused)
    before = api.get(f"/executions/{old['execution_id']}").json()
    assert (before["status"], before["worker"], before["pipeline_name"]) == (
        "Succeeded", old["worker"], variant), before
    assert [o["value"] for o in before["outputs"]] == [
        {"who": "gated", "text": str(old_gate)}], before


def test_a_shadow_pipeline_that_starts_answering_keeps_its_files_when_the_copies_stop(
        gristmill_env, api, archive, unique) -> None:
    """The shadow runner process (executions/shadow_runner.py) runs a shadow pipeline's
    copies on workers of its own, in the same data directory; once a split makes that
    pipeline answer, the control service starts its own worker for it, under the same pod
    id, and the runner stops its worker: that never removes the answering worker's files."""
    name = f"sh-{unique}"
    champion = make_pipeline(api, archive, f"sh-c-{unique}", "champion", TEXT_IN, INFO_OUT)
    variant = make_pipeline(api, archive, f"sh-v-{unique}", "scratch", TEXT_IN, INFO_OUT)
    token = endpoint(api, champion, name, "low_latency")
    key = variant_key(name, variant)
    gates = Path(gristmill_env.data_dir)
    open_gate, new_gate = gates / f"open-{unique}", gates / f"held-{unique}"
    open_gate.write_text("open")

    assert set_traffic(api, name, shadow=[variant]).status_code == 200
    answer = call(gristmill_env, name, token, str(open_gate))
    assert answer.status_code == 200, answer.text
    eventually(lambda: [e for e in api.get(f"/deployments/{name}/executions").json()
                        if e["shadow"] and e["status"] == "Succeeded"], "the copy")
    [shadow_process] = workers_of(key)
    shadow_io = Path(shadow_process.environ()["GRISTMILL_IO_DIR"])

    assert set_traffic(api, name, split={variant: 1}).status_code == 200
    with ThreadPoolExecutor(1) as threads:
        fresh = threads.submit(call, gristmill_env, name, token, str(new_gate))
        eventually(lambda: Path(f"{new_gate}.started").exists(), "the answering call")
        [answering] = [p for p in workers_of(key) if p.pid != shadow_process.pid]
        new_io = Path(answering.environ()["GRISTMILL_IO_DIR"])
        # no longer a shadow: the runner stops its worker, and its folder goes with it...
        eventually(lambda: not shadow_io.exists(), "the shadow worker's folder removed")
        # ...not the answering worker's, whose call still finds its file
        assert new_io.is_dir()
        new_gate.write_text("open")
        answer = fresh.result()
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-gristmill-pipeline"] == variant
    assert answer.json()["outputs"]["info"] == {"who": "scratch", "text": str(new_gate)}
