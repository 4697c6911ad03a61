"""Low-latency deployments on local workers, end to end: the real control service, the
real warm worker (``python -m gristmill.runtime serve``) in the step's environment.

Ordering and concurrency are proven from the executions' own timestamps and from what the
steps observe (barriers that only open when N executions run at once, gates the test opens),
never from durations."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.platform.stepkit import archive_of, write_folder
from tests.platform.test_auth import assert_error
from tests.platform.test_runs import make_pipeline

STEP_CODE = '''
import asyncio
import os
import sys
import threading
import time
from pathlib import Path

# Module-level code: runs once per worker. The file counts imports across workers.
_imports = Path("imports.txt")
IMPORTS = int(_imports.read_text()) + 1 if _imports.exists() else 1
_imports.write_text(str(IMPORTS))
if Path("crash-on-import").exists():
    raise RuntimeError("the crash marker is there")
print(f"module imported (import number {IMPORTS})", flush=True)

CALLS = 0
ACTIVE = 0
MAX_ACTIVE = 0
_lock = threading.Lock()
_waiting = []
_barriers = {}


def _enter():
    global ACTIVE, MAX_ACTIVE
    with _lock:
        ACTIVE += 1
        MAX_ACTIVE = max(MAX_ACTIVE, ACTIVE)


def _leave():
    global ACTIVE
    with _lock:
        ACTIVE -= 1


def _info(text):
    from gristmill.runtime import context
    import __craft_internal_execution_context as craft

    return {"text": text, "imports": IMPORTS, "calls": CALLS, "pid": os.getpid(),
            "env_id": os.environ["CRAFT_AI_EXECUTION_ID"],
            "context_id": context.current_execution_id.get(),
            "craft_id": craft.current_execution_id.get(),
            "variable": os.environ.get(text, "<unset>")}


def counter(text: str) -> dict:
    global CALLS
    CALLS += 1
    print(f"counter called with {text}")
    return {"info": _info(text)}


def crash(text: str) -> dict:
    global CALLS
    CALLS += 1
    if text == "die":
        print("about to die", flush=True)  # the execution's own line: lost with it
        os.write(1, b"last words before the crash\\n")  # the worker's output: kept
        os.kill(os.getpid(), 9)
    if text == "die-for-good":
        Path("crash-on-import").write_text("x")
        os._exit(3)
    if text.startswith("die-after:"):  # once the gate file exists
        gate = Path(text.split(":", 1)[1])
        for _ in range(6000):
            if gate.exists():
                os._exit(5)
            time.sleep(0.01)
    return {"info": _info(text)}


def gated(text: str) -> dict:
    """Holds its slot until the gate file exists."""
    _enter()
    try:
        for _ in range(6000):
            if Path(text).exists():
                break
            time.sleep(0.01)
        else:
            raise TimeoutError("the gate never opened")
        return {"info": {"max_active": MAX_ACTIVE}}
    finally:
        _leave()


async def meet_async(text: str, n: float) -> dict:
    """Returns only once n executions are inside at the same time."""
    _enter()
    try:
        future = asyncio.get_running_loop().create_future()
        _waiting.append(future)
        if len(_waiting) == int(n):
            for waiter in _waiting:
                waiter.set_result(True)
            _waiting.clear()
        await asyncio.wait_for(future, 60)
        for i in range(5):
            print(f"{text} line {i}")
            await asyncio.sleep(0)
        return {"info": {"max_active": MAX_ACTIVE}}
    finally:
        _leave()


def meet_threads(text: str, n: float) -> dict:
    _enter()
    try:
        with _lock:
            barrier = _barriers.setdefault(int(n), threading.Barrier(int(n), timeout=60))
        barrier.wait()
        for i in range(5):
            print(f"{text} line {i}")
            print(f"{text} err {i}", file=sys.stderr)
            time.sleep(0.001)
        return {"info": {"max_active": MAX_ACTIVE}}
    finally:
        _leave()


def hold(text: str) -> dict:
    """At once, or for "gate:<path>" once that file exists; writes "<path>.done" as it
    returns (a call abandoned with its worker never does)."""
    if text.startswith("gate:"):
        gate = Path(text.split(":", 1)[1])
        for _ in range(6000):
            if gate.exists():
                break
            time.sleep(0.01)
        Path(f"{gate}.done").write_text("done")
    return {"info": _info(text)}


def hold_file(doc: dict, text: str) -> dict:
    return hold(text)


def files(doc: dict, suffix: str) -> dict:
    with open(doc["path"], "rb") as handle:
        data = handle.read()
    out = os.path.join(os.environ["GRISTMILL_IO_DIR"], "result.bin")
    with open(out, "wb") as handle:
        handle.write(data + suffix.encode())
    return {"result": {"path": out}, "size": len(data)}
'''

BROKEN_CODE = '''
print("importing the broken module")
import no_such_module_for_gristmill_tests


def entry(text: str) -> dict:
    return {"info": {}}
'''

TEXT_IN = [{"name": "text", "data_type": "string"}]
MEET_IN = [*TEXT_IN, {"name": "n", "data_type": "number"}]
INFO_OUT = [{"name": "info", "data_type": "json"}]
DEADLINE_S = 90.0


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return archive_of(write_folder(tmp_path_factory.mktemp("low-latency"),
                                   {"src/steps.py": STEP_CODE, "src/broken.py": BROKEN_CODE}))


def low_latency(api: httpx.Client, archive: bytes, name: str, function: str,
                inputs: list[dict[str, Any]] = TEXT_IN,
                outputs: list[dict[str, Any]] = INFO_OUT, **options: Any) -> dict[str, Any]:
    make_pipeline(api, archive, name, function, inputs, outputs)
    response = api.post("/endpoints", json={"pipeline_name": name, "name": name,
                                            "mode": "low_latency", **options})
    assert response.status_code == 201, response.text
    return response.json()


def trigger(env: Any, name: str, token: str, inputs: dict[str, Any]) -> str:
    """The SDK's way: a 303 at once, with the execution id."""
    response = httpx.post(f"{env.url}/endpoints/{name}", json=inputs, timeout=60,
                          headers={"Authorization": f"EndpointToken {token}",
                                   "craft-ai-client": "x"})
    assert response.status_code == 303, response.text
    return str(response.json()["execution_id"])


def result(env: Any, name: str, token: str, execution_id: str) -> httpx.Response:
    return httpx.get(f"{env.url}/endpoints/{name}/executions/{execution_id}",
                     headers={"Authorization": f"EndpointToken {token}"},
                     follow_redirects=True, timeout=120)


def call(env: Any, name: str, token: str, inputs: dict[str, Any]) -> dict[str, Any]:
    response = result(env, name, token, trigger(env, name, token, inputs))
    assert response.status_code == 200, response.text
    outputs: dict[str, Any] = response.json()["outputs"]
    return outputs


def eventually(check: Callable[[], Any], what: str) -> Any:
    """Poll until check() returns something truthy (a bounded wait, not a timing claim)."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def deployment(api: httpx.Client, name: str) -> dict[str, Any]:
    response = api.get(f"/deployments/{name}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def deployment_logs(api: httpx.Client, name: str) -> list[str]:
    response = api.post(f"/deployments/{name}/logs", json={})
    assert response.status_code == 200, response.text
    return [line["message"] for line in response.json()]


def execution_logs(api: httpx.Client, execution_id: str) -> list[dict[str, Any]]:
    response = api.post(f"/executions/{execution_id}/logs", json={})
    assert response.status_code == 200, response.text
    return [line for page in response.json() for line in
            (page if isinstance(page, list) else [page])]


def timestamps(api: httpx.Client, execution_id: str) -> tuple[datetime, datetime]:
    body = api.get(f"/executions/{execution_id}").json()
    return (datetime.fromisoformat(body["start_date"].replace("Z", "+00:00")),
            datetime.fromisoformat(body["end_date"].replace("Z", "+00:00")))


def max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    # ends sort before starts at the same instant: the next execution starts when a
    # slot is released, possibly within the same millisecond
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                    key=lambda event: (event[0], event[1]))
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def concurrently() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        yield pool


def test_module_runs_once_logs_and_pods(gristmill_env, api, archive, unique) -> None:
    name = f"ll-once-{unique}"
    created = low_latency(api, archive, name, "counter")
    token = created["endpoint_token"]
    assert created["status"] == "up", (created["status_reason"], created["pods"])
    assert created["mode"] == "low_latency" and created["enable_parallel_executions"] is False
    first = call(gristmill_env, name, token, {"text": "a"})["info"]
    second = call(gristmill_env, name, token, {"text": "b"})["info"]
    # one import, one process, state kept between executions
    assert (first["imports"], first["calls"]) == (1, 1)
    assert (second["imports"], second["calls"]) == (1, 2)
    assert first["pid"] == second["pid"]
    # each execution sees its own id, in os.environ and in both context variables
    for info in (first, second):
        assert info["env_id"] == info["context_id"] == info["craft_id"]
    assert first["env_id"] != second["env_id"]
    # the import's print is in the deployment's logs, once; the executions' prints are not
    messages = eventually(lambda: (lambda m: m if any("module imported" in x for x in m)
                                   else None)(deployment_logs(api, name)), "deployment logs")
    assert sum("module imported (import number 1)" in m for m in messages) == 1
    assert not any("counter called" in m for m in messages)
    # ...but in the execution's, attributed to it
    lines = execution_logs(api, first["env_id"])
    assert [(line["stream"], line["message"]) for line in lines] == [
        ("stdout", "counter called with a")]
    shown = deployment(api, name)
    assert shown["pods"] == [{"pod_id": f"local-{name}-1", "status": "running"}]
    assert shown["deployment_health"] == "Ready"
    execution = api.get(f"/executions/{first['env_id']}").json()
    assert execution["worker"] == f"local-{name}-1"
    assert execution["deployment_name"] == name and execution["status"] == "Succeeded"
    # a plain HTTP client gets the outputs in the answer to its POST
    plain = httpx.post(f"{gristmill_env.url}/endpoints/{name}", json={"text": "curl"},
                       headers={"Authorization": f"EndpointToken {token}"}, timeout=60)
    assert plain.status_code == 200, plain.text
    assert plain.json()["outputs"]["info"]["calls"] == 3


def test_one_at_a_time_without_parallelism(gristmill_env, api, archive, unique, tmp_path,
                                           concurrently) -> None:
    name = f"ll-seq-{unique}"
    token = low_latency(api, archive, name, "gated")["endpoint_token"]
    gate = tmp_path / "gate"
    futures = [concurrently.submit(trigger, gristmill_env, name, token, {"text": str(gate)})
               for _ in range(2)]
    ids = [future.result() for future in futures]

    def one_running_one_waiting() -> list[str] | None:
        statuses = {i: api.get(f"/executions/{i}").json()["status"] for i in ids}
        if sorted(statuses.values()) == ["Pending", "Running"]:
            return sorted(ids, key=lambda i: statuses[i] != "Running")
        return None

    # the gate is closed: the first holds the only slot, the second waits, pending
    first, second = eventually(one_running_one_waiting, "one running, one pending")
    gate.write_text("open")
    for execution_id in (first, second):
        response = result(gristmill_env, name, token, execution_id)
        assert response.status_code == 200, response.text
        assert response.json()["outputs"]["info"]["max_active"] == 1
    first_start, first_end = timestamps(api, first)
    second_start, second_end = timestamps(api, second)
    assert first_start <= first_end <= second_start <= second_end


@pytest.mark.parametrize(("function", "parallel", "runs"),
                         [("meet_async", 3, 6), ("meet_threads", 2, 4)])
def test_parallel_executions_overlap_up_to_the_limit(gristmill_env, api, archive, unique,
                                                     concurrently, function, parallel,
                                                     runs) -> None:
    name = f"ll-par-{function.replace('_', '-')}-{unique}"
    created = low_latency(api, archive, name, function, MEET_IN,
                          enable_parallel_executions=True,
                          max_parallel_executions_per_pod=parallel)
    assert created["max_parallel_executions_per_pod"] == parallel
    token = created["endpoint_token"]
    tags = [f"tag{i}-{unique}" for i in range(runs)]
    ids = list(concurrently.map(
        lambda tag: trigger(gristmill_env, name, token, {"text": tag, "n": parallel}), tags))
    for execution_id in ids:
        response = result(gristmill_env, name, token, execution_id)
        # each one passed a barrier that opens only with `parallel` executions inside
        assert response.status_code == 200, response.text
        assert response.json()["outputs"]["info"]["max_active"] <= parallel
    intervals = [timestamps(api, execution_id) for execution_id in ids]
    assert max_overlap(intervals) == parallel
    # every line is in the logs of the execution that printed it, and only there
    for tag, execution_id in zip(tags, ids, strict=True):
        messages = [line["message"] for line in execution_logs(api, execution_id)]
        mine = [m for m in messages if m.startswith(f"{tag} ")]
        assert [m for m in mine if " line " in m] == [f"{tag} line {i}" for i in range(5)]
        if function == "meet_threads":
            assert [m for m in mine if " err " in m] == [f"{tag} err {i}" for i in range(5)]
        assert len(mine) == len(messages), messages


def test_environment_variables_are_refreshed_per_execution(gristmill_env, api, archive,
                                                           unique) -> None:
    name = f"ll-env-{unique}"
    variable = f"LL_VARIABLE_{unique.upper()}"
    api.put("/environment-variables", json={"environment_variables": {variable: "one"}})
    try:
        token = low_latency(api, archive, name, "counter")["endpoint_token"]
        assert call(gristmill_env, name, token, {"text": variable})["info"]["variable"] == "one"
        api.put("/environment-variables", json={"environment_variables": {variable: "two"}})
        changed = call(gristmill_env, name, token, {"text": variable})["info"]
        assert changed["variable"] == "two" and changed["imports"] == 1  # same worker
    finally:
        api.delete(f"/environment-variables/{variable}")
    assert call(gristmill_env, name, token, {"text": variable})["info"]["variable"] == "<unset>"


def test_file_input_and_output(gristmill_env, api, archive, unique) -> None:
    name = f"ll-files-{unique}"
    token = low_latency(
        api, archive, name, "files",
        [{"name": "doc", "data_type": "file"}, {"name": "suffix", "data_type": "string"}],
        [{"name": "result", "data_type": "file"}, {"name": "size", "data_type": "number"}],
        inputs_mapping=[{"pipeline_input_name": "suffix", "constant_value": "!"}],
        outputs_mapping=[{"pipeline_output_name": "size", "is_null": True}],
    )["endpoint_token"]
    response = httpx.post(f"{gristmill_env.url}/endpoints/{name}",
                          files={"doc": ("doc.txt", b"abc")}, timeout=60,
                          headers={"Authorization": f"EndpointToken {token}",
                                   "craft-ai-client": "x"})
    assert response.status_code == 303, response.text
    final = result(gristmill_env, name, token, response.json()["execution_id"])
    assert final.status_code == 200 and final.content == b"abc!"


def test_a_crash_fails_the_execution_and_the_worker_comes_back(gristmill_env, api, archive,
                                                               unique) -> None:
    name = f"ll-crash-{unique}"
    token = low_latency(api, archive, name, "crash")["endpoint_token"]
    before = call(gristmill_env, name, token, {"text": "ok"})["info"]
    execution_id = trigger(gristmill_env, name, token, {"text": "die"})
    body = assert_error(result(gristmill_env, name, token, execution_id), 500,
                        "the low-latency worker crashed")
    assert "SIGKILL" in body["message"]
    assert "its last output: last words before the crash" in body["message"]
    assert "worker ready" not in body["message"]  # nothing from before the execution
    shown = api.get(f"/executions/{execution_id}").json()
    assert shown["status"] == "Failed" and "crashed" in shown["status_reason"]
    lines = [(line["stream"], line["message"]) for line in execution_logs(api, execution_id)]
    assert lines[0] == ("worker", "last words before the crash")
    assert lines[-1][0] == "system" and "crashed" in lines[-1][1]
    assert len(lines) == 2
    eventually(lambda: process_gone(before["pid"]), "the crashed worker to be gone")
    eventually(lambda: deployment(api, name)["status"] == "up", "the worker to come back")
    after = call(gristmill_env, name, token, {"text": "ok"})["info"]
    # a new process, which imported the module again (module state starts over)
    assert after["pid"] != before["pid"]
    assert (after["imports"], after["calls"]) == (2, 1)
    assert deployment(api, name)["pods"] == [{"pod_id": f"local-{name}-1-1",
                                              "status": "running"}]
    messages = deployment_logs(api, name)
    assert any("The worker crashed" in m and "SIGKILL" in m for m in messages), messages


def test_executions_queued_behind_a_crash_run_on_the_new_worker(gristmill_env, api, archive,
                                                               unique, tmp_path) -> None:
    name = f"ll-queue-{unique}"
    token = low_latency(api, archive, name, "crash")["endpoint_token"]
    gate = tmp_path / "gate"
    doomed = trigger(gristmill_env, name, token, {"text": f"die-after:{gate}"})
    eventually(lambda: api.get(f"/executions/{doomed}").json()["status"] == "Running",
               "the doomed execution to run")
    queued = trigger(gristmill_env, name, token, {"text": "ok"})
    assert api.get(f"/executions/{queued}").json()["status"] == "Pending"
    gate.write_text("open")
    body = assert_error(result(gristmill_env, name, token, doomed), 500,
                        "the low-latency worker crashed")
    assert "exited with code 5" in body["message"]
    response = result(gristmill_env, name, token, queued)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"]["info"]["imports"] == 2  # on the new worker


def test_workers_stop_with_the_service_and_come_back_with_it(archive, tmp_path) -> None:
    from tests.conftest import start_environment

    data, url = tmp_path / "env", f"sqlite:///{tmp_path}/gristmill.sqlite3"
    server, env, _ = start_environment(data, url)
    try:
        with env.client() as api:
            token = low_latency(api, archive, "ll-resume", "counter")["endpoint_token"]
        pid = call(env, "ll-resume", token, {"text": "a"})["info"]["pid"]
    finally:
        server.stop()
    assert process_gone(pid)
    server, env, _ = start_environment(data, url)
    try:
        # triggered at once: the execution waits for the worker being brought back
        info = call(env, "ll-resume", token, {"text": "b"})["info"]
        assert info["pid"] != pid and (info["imports"], info["calls"]) == (2, 1)
        with env.client() as api:
            assert deployment(api, "ll-resume")["pods"] == [
                {"pod_id": "local-ll-resume-1", "status": "running"}]
    finally:
        server.stop()
    assert process_gone(info["pid"])


def test_a_worker_that_keeps_crashing_on_start_ends_creation_failed(gristmill_env, api, archive,
                                                                    unique) -> None:
    name = f"ll-loop-{unique}"
    token = low_latency(api, archive, name, "crash")["endpoint_token"]
    execution_id = trigger(gristmill_env, name, token, {"text": "die-for-good"})
    assert_error(result(gristmill_env, name, token, execution_id), 500, "crashed")
    failed = eventually(lambda: (lambda d: d if d["status"] == "creation_failed" else None)(
        deployment(api, name)), "creation_failed")
    assert "the crash marker is there" in failed["status_reason"]
    assert failed["deployment_health"] == "Unavailable"
    assert [pod["status"] for pod in failed["pods"]] == ["failed"]
    assert_error(httpx.post(f"{gristmill_env.url}/endpoints/{name}", json={"text": "x"},
                            headers={"Authorization": f"EndpointToken {token}"}),
                 409, "not ready")


def test_update_rolls_the_worker(gristmill_env, api, archive, unique) -> None:
    name = f"ll-roll-{unique}"
    created = low_latency(api, archive, name, "counter")
    token = created["endpoint_token"]
    before = call(gristmill_env, name, token, {"text": "a"})["info"]
    updated = api.patch(f"/deployments/{name}", json={})
    assert updated.status_code == 200, updated.text
    assert updated.json()["status"] == "up" and updated.json()["version"] == 2
    assert updated.json()["pods"] == [{"pod_id": f"local-{name}-2", "status": "running"}]
    after = call(gristmill_env, name, token, {"text": "b"})["info"]
    assert after["pid"] != before["pid"]
    assert (after["imports"], after["calls"]) == (2, 1)  # the module code ran again
    eventually(lambda: process_gone(before["pid"]), "the old worker to stop")
    messages = eventually(lambda: (lambda m: m if any("import number 2" in x for x in m)
                                   else None)(deployment_logs(api, name)), "the new import")
    assert any("import number 1" in m for m in messages)


def test_delete_stops_the_worker(gristmill_env, api, archive, unique) -> None:
    name = f"ll-del-{unique}"
    token = low_latency(api, archive, name, "counter")["endpoint_token"]
    pid = call(gristmill_env, name, token, {"text": "a"})["info"]["pid"]
    assert not process_gone(pid)
    response = api.delete(f"/deployments/{name}")
    assert response.status_code == 200, response.text
    assert process_gone(pid)
    assert api.get(f"/deployments/{name}").status_code == 404


def test_an_import_error_is_creation_failed_with_the_reason(gristmill_env, api, archive,
                                                           unique) -> None:
    name = f"ll-broken-{unique}"
    response = api.post("/pipelines", data={
        "pipeline_name": name, "function_path": "src/broken.py", "function_name": "entry"},
        files={"step_file": ("step_file", archive)})
    assert response.status_code == 201, response.text
    response = api.post("/endpoints", json={"pipeline_name": name, "name": name,
                                            "mode": "low_latency"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "creation_failed"
    assert body["status_reason"] == (
        "ModuleNotFoundError: No module named 'no_such_module_for_gristmill_tests'")
    assert body["deployment_health"] == "Unavailable"
    assert [pod["status"] for pod in body["pods"]] == ["failed"]
    messages = deployment_logs(api, name)
    assert "importing the broken module" in messages
    assert any(m.startswith("Traceback") for m in messages)
    assert_error(httpx.post(f"{gristmill_env.url}/endpoints/{name}", json={},
                            headers={"Authorization": f"EndpointToken {body['endpoint_token']}"}),
                 409, "not ready")


def test_get_deployment_lists_low_latency_fields(api, archive, unique) -> None:
    name = f"ll-get-{unique}"
    low_latency(api, archive, name, "meet_async", MEET_IN, enable_parallel_executions=True)
    shown = deployment(api, name)
    assert shown["max_parallel_executions_per_pod"] == 6  # the documented default
    assert shown["pods"] == [{"pod_id": f"local-{name}-1", "status": "running"}]
    assert shown["deployment_health"] == "Ready"
    listed = {d["name"]: d for d in api.get("/deployments").json()}
    assert listed[name]["mode"] == "low_latency" and listed[name]["status"] == "up"
    assert json.loads(json.dumps(shown))  # plain JSON all the way


async def test_the_worker_client_reuses_connections_and_reports_broken_ones() -> None:
    """The pool's keep-alive client against a scripted server: reuse, Connection: close,
    an answer cut short (the worker died mid-answer), and a port nobody listens on."""
    import asyncio

    from gristmill_platform.executors.worker_client import WorkerClient, WorkerUnreachable

    connections = 0
    seen_secrets: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            headers = dict(line.split(": ", 1) for line in
                           head.decode().split("\r\n")[1:] if ": " in line)
            seen_secrets.append(headers.get("X-Gristmill-Worker-Secret", ""))
            body = await reader.readexactly(int(headers["Content-Length"]))
            path = head.split(b" ")[1]
            if path == b"/cut":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"part")
                await writer.drain()
                break
            close = path == b"/close"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (
                len(body), b"Connection: close\r\n" if close else b"", body))
            await writer.drain()
            if close:
                break
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = WorkerClient(port, "the-secret")
    try:
        for i in range(3):
            payload = b'{"n": %d}' % i
            assert await client.request("POST", "/echo", payload) == (200, payload)
        assert connections == 1  # kept alive
        assert await client.request("POST", "/close", b"x") == (200, b"x")
        assert await client.request("POST", "/echo", b"y") == (200, b"y")
        assert connections == 2  # the closed one was not reused
        with pytest.raises(WorkerUnreachable, match="IncompleteReadError"):
            await client.request("POST", "/cut", b"z")
        assert await client.request("GET", "/echo") == (200, b"")
        assert connections == 3
        assert set(seen_secrets) == {"the-secret"}
    finally:
        client.close()
        server.close()
        await server.wait_closed()
    with pytest.raises(WorkerUnreachable):
        await client.request("GET", "/healthz")  # closed client
    with pytest.raises(WorkerUnreachable):
        await WorkerClient(port, "s").request("GET", "/healthz")  # nobody listens


TIMEOUT_REASON = "exceeded the deployment's execution timeout"


def test_an_execution_past_the_timeout_fails_at_once_and_the_worker_is_replaced(
        gristmill_env, api, archive, unique, tmp_path) -> None:
    name = f"ll-timeout-{unique}"
    created = low_latency(api, archive, name, "hold", execution_timeout_s=1)
    assert created["execution_timeout_s"] == 1
    token = created["endpoint_token"]
    before = call(gristmill_env, name, token, {"text": "fast"})["info"]
    gate = tmp_path / "gate"
    held = trigger(gristmill_env, name, token, {"text": f"gate:{gate}"})
    eventually(lambda: api.get(f"/executions/{held}").json()["status"] == "Running",
               "the held execution to run")
    queued = trigger(gristmill_env, name, token, {"text": "fast"})  # waits in line
    body = assert_error(result(gristmill_env, name, token, held), 500,
                        f"{TIMEOUT_REASON} (1 s)")
    assert body["name"] == "ExecutionFailed"
    # answered while the function still runs: the gate is closed, it has not returned
    assert not Path(f"{gate}.done").exists()
    shown = api.get(f"/executions/{held}").json()
    assert shown["status"] == "Failed"
    assert f"{TIMEOUT_REASON} (1 s)" in shown["status_reason"]
    assert "worker is replaced" in shown["status_reason"]
    lines = execution_logs(api, held)
    assert lines[-1]["stream"] == "system" and TIMEOUT_REASON in lines[-1]["message"]
    # the execution that waited in line runs on the new worker, which imported the module
    response = result(gristmill_env, name, token, queued)
    assert response.status_code == 200, response.text
    after = response.json()["outputs"]["info"]
    assert after["pid"] != before["pid"] and after["imports"] == before["imports"] + 1
    plain = httpx.post(f"{gristmill_env.url}/endpoints/{name}", json={"text": "fast"},
                       headers={"Authorization": f"EndpointToken {token}"}, timeout=60)
    assert plain.status_code == 200, plain.text
    assert plain.json()["outputs"]["info"]["pid"] == after["pid"]
    # the old worker stopped, and the abandoned call with it
    eventually(lambda: process_gone(before["pid"]), "the replaced worker to stop")
    assert not Path(f"{gate}.done").exists()
    assert deployment(api, name)["status"] == "up"
    assert deployment(api, name)["pods"] == [{"pod_id": f"local-{name}-1-1",
                                              "status": "running"}]
    messages = deployment_logs(api, name)
    assert any("The worker is replaced" in m and held in m for m in messages), messages


def test_a_timeout_lets_the_other_executions_of_the_worker_finish(
        gristmill_env, api, archive, unique, tmp_path) -> None:
    name = f"ll-timeout-par-{unique}"
    token = low_latency(api, archive, name, "hold", execution_timeout_s=4,
                        enable_parallel_executions=True,
                        max_parallel_executions_per_pod=2)["endpoint_token"]
    stuck_gate, other_gate = tmp_path / "stuck", tmp_path / "other"
    stuck = trigger(gristmill_env, name, token, {"text": f"gate:{stuck_gate}"})
    eventually(lambda: api.get(f"/executions/{stuck}").json()["status"] == "Running",
               "the first execution to run")
    # Not a timing claim: the second one starts later so that its own deadline is still
    # ahead when the first one's has passed.
    time.sleep(2)
    other = trigger(gristmill_env, name, token, {"text": f"gate:{other_gate}"})
    eventually(lambda: api.get(f"/executions/{other}").json()["status"] == "Running",
               "the second execution to run beside it")
    assert_error(result(gristmill_env, name, token, stuck), 500, f"{TIMEOUT_REASON} (4 s)")
    other_gate.write_text("open")
    response = result(gristmill_env, name, token, other)
    assert response.status_code == 200, response.text  # not stopped with the old worker
    old_pid = response.json()["outputs"]["info"]["pid"]
    assert api.get(f"/executions/{other}").json()["status"] == "Succeeded"
    fresh = call(gristmill_env, name, token, {"text": "fast"})["info"]
    assert fresh["pid"] != old_pid
    eventually(lambda: process_gone(old_pid), "the replaced worker to stop once idle")
    assert not Path(f"{stuck_gate}.done").exists()


def test_a_timeout_of_an_execution_with_files(gristmill_env, api, archive, unique,
                                              tmp_path) -> None:
    """Executions with files are recorded in the database, not on the fast path."""
    name = f"ll-timeout-files-{unique}"
    gate = tmp_path / "gate"
    token = low_latency(
        api, archive, name, "hold_file",
        [{"name": "doc", "data_type": "file"}, {"name": "text", "data_type": "string"}],
        inputs_mapping=[{"pipeline_input_name": "text", "constant_value": f"gate:{gate}"}],
        execution_timeout_s=1)["endpoint_token"]

    def send() -> tuple[str, httpx.Response]:
        response = httpx.post(f"{gristmill_env.url}/endpoints/{name}",
                              files={"doc": ("doc.txt", b"abc")}, timeout=60,
                              headers={"Authorization": f"EndpointToken {token}",
                                       "craft-ai-client": "x"})
        assert response.status_code == 303, response.text
        execution_id = response.json()["execution_id"]
        return execution_id, result(gristmill_env, name, token, execution_id)

    failed, response = send()
    assert_error(response, 500, f"{TIMEOUT_REASON} (1 s)")
    assert not Path(f"{gate}.done").exists()
    shown = api.get(f"/executions/{failed}").json()
    assert shown["status"] == "Failed" and TIMEOUT_REASON in shown["status_reason"]
    gate.write_text("open")
    _, response = send()
    assert response.status_code == 200, response.text
    assert response.json()["outputs"]["info"]["imports"] == 2  # on the new worker
