"""The shadow runner process (executions/shadow_runner.py): started at the first copy, not
before; runs the copies (its workers are its children); started again after a kill, the
copies the killed one had not run counted and logged, not silently lost; bad frames do
not stop it; stopped with the service; a shadow step's own API calls with its execution
token succeed from its first instant (the runner serves them). Real control service, real
processes, SQLite and PostgreSQL. No wall-clock claim."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from gristmill_platform.executions import shadow_frames as frames
from gristmill_platform.executions.shadow_process import RUNNER_NICE
from gristmill_platform.executions.shadow_runner import ShadowRunner
from gristmill_platform.executors.workers import variant_key
from gristmill_platform.telemetry.metrics import SHADOW_COPIES_DROPPED
from tests.conftest import ServerThread, start_environment
from tests.platform.stepkit import archive_of, write_folder
from tests.platform.test_low_latency import eventually
from tests.platform.test_rollout import (
    INFO_OUT,
    TEXT_IN,
    archive,
    ask,
    endpoint,
    executions,
    set_traffic,
)
from tests.platform.test_rollout_shadows import shadowed, workers_of
from tests.platform.test_runs import make_pipeline
from tests.platform.test_service_metrics_live import TOKEN, scrape, value

__all__ = ["archive"]  # the module's fixture: the step folder of test_rollout

# A shadow step that uses its execution token at once, before anything else: a metric for
# its execution, a data store object written and read back, its own execution read.
SDK_STEP_CODE = '''
import io
import os

from gristmill import Gristmill


def measured(text: str) -> dict:
    sdk = Gristmill()
    execution_id = os.environ["GRISTMILL_EXECUTION_ID"]
    sdk.record_metric_value("length", len(text))
    sdk.upload_data_store_object(io.BytesIO(text.encode()), f"shadow/{execution_id}.txt")
    info = sdk.get_data_store_object_information(f"shadow/{execution_id}.txt")
    mine = sdk.get_pipeline_execution(execution_id)
    return {"info": {"who": "measured", "size": info["size"],
                     "status": mine["status"], "shadow": mine["shadow"]}}
'''


@pytest.fixture
def service(database, tmp_path: Path) -> Iterator[tuple[ServerThread, Any]]:
    server, env, _ = start_environment(tmp_path / "env", database.url)
    try:
        yield server, env
    finally:
        server.stop()


def hand_off(server: ServerThread) -> ShadowRunner:
    app: Any = server.server.config.app
    runner = app.state.gristmill.started.executions.low_latency.hand_off
    assert isinstance(runner, ShadowRunner)
    return runner


def shadows(api: Any, name: str, status: str = "Succeeded") -> list[dict[str, Any]]:
    return [e for e in executions(api, name) if e["shadow"] and e["status"] == status]


def dropped(name: str) -> float:
    return float(SHADOW_COPIES_DROPPED.labels(name)._value.get())


def test_the_runner_starts_at_the_first_copy_runs_it_and_comes_back_after_a_kill(
        service, archive, unique) -> None:
    server, env = service
    runner = hand_off(server)
    with env.client() as api:
        name = f"run-{unique}"
        champion = make_pipeline(api, archive, f"champ-{unique}", "champion", TEXT_IN,
                                 INFO_OUT)
        challenger = make_pipeline(api, archive, f"chall-{unique}", "challenger", TEXT_IN,
                                   INFO_OUT)
        gated = make_pipeline(api, archive, f"gated-{unique}", "gated", TEXT_IN, INFO_OUT)
        token = endpoint(api, champion, name, "low_latency")
        assert ask(env, name, token, "plain")[:2] == (champion, "champion")
        assert runner.process is None  # no copy yet: no runner

        assert set_traffic(api, name, shadow=[challenger]).status_code == 200
        assert ask(env, name, token, "a")[:2] == (champion, "champion")
        [copy] = eventually(lambda: shadows(api, name), "the copy")
        assert copy["pipeline_name"] == challenger
        assert runner.process is not None
        first = psutil.Process(runner.process.pid)
        assert first.nice() == min(19, os.getpriority(os.PRIO_PROCESS, 0) + RUNNER_NICE)
        if hasattr(os, "SCHED_IDLE"):
            assert os.sched_getscheduler(first.pid) == os.SCHED_IDLE
        [worker] = workers_of(variant_key(name, challenger))
        assert first.pid in [p.pid for p in worker.parents()]  # run by the runner
        assert not workers_of(variant_key(name, gated))
        eventually(lambda: runner.waiting == 0, "the copy accounted for")

        # three copies held by their gate, then the runner killed: none silently lost
        assert set_traffic(api, name, shadow=[gated]).status_code == 200
        gate = Path(env.data_dir) / f"gate-{unique}"
        before = dropped(name)
        for _ in range(3):
            assert ask(env, name, token, str(gate))[:2] == (champion, "champion")
        assert runner.waiting == 3
        eventually(lambda: workers_of(variant_key(name, gated)), "the gated copy running")
        # all three in the runner's hands: one still waiting for a quiet moment would go
        # to the next runner instead (as it should), which this test does not look at
        eventually(lambda: runner.unwritten == 0, "the last copies written")
        first.send_signal(signal.SIGKILL)
        eventually(lambda: runner.lost == 3, "the lost copies counted")
        assert dropped(name) == before + 3
        assert runner.waiting == 0

        # the next copy starts another runner, which runs it
        gate.write_text("open")
        assert ask(env, name, token, str(gate))[:2] == (champion, "champion")
        eventually(lambda: shadows(api, name) and len(
            [e for e in shadows(api, name) if e["pipeline_name"] == gated]) == 1,
            "the copy after the kill")
        assert runner.starts == 2
        assert runner.process.pid != first.pid
        second = runner.process
    server.stop()  # the runner stops with the service, having written what it recorded
    assert second.returncode == 0


@pytest.mark.parametrize("with_runner", [True, False], ids=["runner", "in-service"])
def test_copies_wait_while_a_call_is_in_flight(database, tmp_path, archive, unique,
                                               with_runner: bool) -> None:
    """Copies yield to the calls (shadow_release.py; traffic.paused for the copies the
    service runs itself, as on Kubernetes): while a call is in flight in the service, the
    copies of calls already answered are not run; once it is answered they are. The
    service's own count of calls in flight is what holds them (app.py, runtime.py)."""
    # The cap on a copy's wait (shadow_max_delay_ms, 2 s by default) far above the test's
    # own time: on a loaded machine its checks took longer than 2 s, and a copy then ran
    # for being overdue, not for a pause of the calls (which is what this test is about).
    server, env, _ = start_environment(tmp_path / "env", database.url,
                                       shadow_runner=with_runner, metrics_token=TOKEN,
                                       shadow_max_delay_ms=60_000)
    dispatcher = server.server.config.app.state.gristmill.started.executions.low_latency
    name = f"yield-{unique}"
    try:
        with env.client() as api:
            gated = make_pipeline(api, archive, f"gated-{unique}", "gated", TEXT_IN,
                                  INFO_OUT)
            challenger = make_pipeline(api, archive, f"chall-{unique}", "challenger",
                                       TEXT_IN, INFO_OUT)
            created = api.post("/endpoints", json={
                "pipeline_name": gated, "name": name, "mode": "low_latency",
                "enable_parallel_executions": True, "max_parallel_executions_per_pod": 2})
            assert created.status_code == 201, created.text
            token = created.json()["endpoint_token"]
            assert set_traffic(api, name, shadow=[challenger]).status_code == 200
            open_gate = Path(env.data_dir) / f"open-{unique}"
            open_gate.write_text("open")
            assert ask(env, name, token, str(open_gate))[:2] == (gated, "gated")
            eventually(lambda: len(shadows(api, name)) == 1, "the first copy run")
            assert (dispatcher.hand_off is not None) is with_runner

            gate = Path(env.data_dir) / f"gate-{unique}"
            with ThreadPoolExecutor(1) as pool:
                held = pool.submit(ask, env, name, token, str(gate))  # in flight till open
                eventually(lambda: len(executions(api, name)) >= 3, "the held call")
                for _ in range(2):  # answered while the first is in flight
                    assert ask(env, name, token, str(open_gate))[:2] == (gated, "gated")
                time.sleep(0.5)  # many times the quiet time: still a call in flight
                if with_runner:
                    assert dispatcher.hand_off.unwritten == 3
                # the live gauge: held, whichever runs them
                assert value(scrape(env), "gristmill_shadow_copies_unended") == 3
                assert len(shadows(api, name)) == 1
                assert len([e for e in executions(api, name) if e["shadow"]]) == 1
                gate.write_text("open")
                assert held.result(timeout=120)[:2] == (gated, "gated")
            eventually(lambda: len(shadows(api, name)) == 4, "the three copies, once quiet")
            eventually(lambda: value(scrape(env), "gristmill_shadow_copies_unended") == 0,
                       "none left")
    finally:
        server.stop()


def test_bad_frames_do_not_stop_the_runner(service, archive, unique) -> None:
    server, env = service
    runner = hand_off(server)
    with env.client() as api:
        name = f"bad-{unique}"
        token, champion, _ = shadowed(api, env, archive, name, unique)
        assert runner.process is not None
        pid = runner.process.pid
        before = dropped(name)

        # written on the service's event loop, as the hand-off writes (another thread)
        writer, loop = runner._writer, runner._task.get_loop() if runner._task else None
        assert writer is not None and loop is not None
        for payload in (b"not json", b"[1]", b'{"e": "%s", "p": 5}' % name.encode(),
                        b'{"e": "nowhere", "p": "x", "b": {}}',
                        frames.copy_frame(name, "not-a-shadow", {"text": "c"})[4:]):
            data = frames.HEADER.pack(len(payload)) + payload
            asyncio.run_coroutine_threadsafe(_write(writer, data), loop).result(timeout=10)
        # the copy without its fields is accounted for as dropped, the others logged
        eventually(lambda: dropped(name) == before + 1, "the bad copy counted")
        assert ask(env, name, token, "b")[:2] == (champion, "champion")
        eventually(lambda: len(shadows(api, name)) == 2, "the copy after the bad frames")
        assert runner.process.pid == pid and runner.starts == 1


async def _write(writer: Any, data: bytes) -> None:
    writer.write(data)


@pytest.fixture(scope="module")
def sdk_archive(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return archive_of(write_folder(tmp_path_factory.mktemp("shadow-sdk"),
                                   {"src/steps.py": SDK_STEP_CODE}))


def test_a_shadow_step_calls_the_api_with_its_token_at_once(
        service, archive, sdk_archive, unique) -> None:
    """Its token and execution are in the runner's journal, not yet in the database: its
    workers call the runner's own API (executions/shadow_api.py), whose transactions
    write what the journal holds first."""
    server, env = service
    runner = hand_off(server)
    with env.client() as api:
        name = f"sdk-{unique}"
        champion = make_pipeline(api, archive, f"champ-{unique}", "champion", TEXT_IN,
                                 INFO_OUT)
        measured = make_pipeline(api, sdk_archive, f"meas-{unique}", "measured", TEXT_IN,
                                 INFO_OUT)
        token = endpoint(api, champion, name, "low_latency")
        assert set_traffic(api, name, shadow=[measured]).status_code == 200
        for text in ("four", "seven!!"):
            assert ask(env, name, token, text)[:2] == (champion, "champion")
        ended = eventually(lambda: len([e for e in executions(api, name) if e["shadow"]
                                        and e["status"] != "Running"]) == 2 and [
            e for e in executions(api, name) if e["shadow"]], "the two copies ended")
        assert [e["status"] for e in ended] == ["Succeeded", "Succeeded"], ended
        assert runner.process is not None
        [worker] = workers_of(variant_key(name, measured))
        own_api = worker.environ()["GRISTMILL_ENVIRONMENT_URL"]
        assert own_api != env.url and own_api.startswith("http://127.0.0.1:")
        assert runner.process.pid in [p.pid for p in worker.parents()]

        # what the steps wrote, seen through the control service
        for execution in ended:
            execution_id = execution["execution_id"]
            found = api.get(f"/executions/{execution_id}").json()
            text = found["inputs"][0]["value"]
            assert found["outputs"][0]["value"] == {
                "who": "measured", "size": len(text), "status": "Running", "shadow": True}
            metrics = api.get("/metrics/single-value",
                              params={"filters[execution_id]": execution_id})
            assert metrics.status_code == 200, metrics.text
            assert [(m["name"], m["value"]) for m in metrics.json()["metrics"]] == [
                ("length", len(text))]
            stored = api.post("/data-store/download",
                              data={"path_to_object": f"shadow/{execution_id}.txt"})
            assert stored.status_code == 200, stored.text
            assert httpx.get(stored.json()["signed_url"], timeout=30).content == \
                text.encode()


def test_copies_not_written_yet_run_when_the_service_stops(
        database, tmp_path, archive, unique) -> None:
    """Copies wait in the service for a quiet moment of the calls (shadow_release.py):
    those still held when the service stops are written before the end of file, and the
    runner runs every copy it holds before it stops (shadow_process.DRAIN_S): none lost,
    none counted."""
    server, env, _ = start_environment(tmp_path / "env", database.url)
    runner = hand_off(server)
    name = f"stop-{unique}"
    with env.client() as api:
        token, champion, _ = shadowed(api, env, archive, name, unique)  # the runner is up
        eventually(lambda: runner.waiting == 0, "the first copy accounted for")
        # the next copies are held until the service stops
        runner._quiet_s, runner._max_delay_s = 3600.0, 7200.0
        for text in ("a", "b", "c"):
            assert ask(env, name, token, text)[:2] == (champion, "champion")
        assert runner.unwritten == 3  # not written yet
        before = dropped(name)
    server.stop()
    assert runner.process is not None and runner.process.returncode == 0
    assert (runner.lost, dropped(name), runner.waiting) == (0, before, 0)

    server, env, _ = start_environment(tmp_path / "env", database.url)
    try:
        with env.client() as api:
            ran = [api.get(f"/executions/{e['execution_id']}").json()["inputs"][0]["value"]
                   for e in shadows(api, name)]
            assert sorted(ran) == ["a", "b", "c", "first"]
    finally:
        server.stop()
