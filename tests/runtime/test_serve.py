"""The runner's server mode (``python -m gristmill.runtime serve``) as a real subprocess:
import once, the HTTP API, parallelism, log attribution, environment, files, failures.

Concurrency is proven by what the steps observe (barriers that only open with N executions
inside, the worker's own running/waiting counts while a gate is closed), never by timing."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.runtime._control_double import EXECUTION_ID, PREFIX, SDK_TOKEN, ControlDouble, serve
from tests.runtime.conftest import free_port, write_step

SECRET = "worker-secret-for-tests-0123456789"
DEADLINE_S = 60.0


@dataclass
class Worker:
    process: subprocess.Popen[str]
    port: int
    step_dir: Path
    io_root: Path
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, secret: str | None = SECRET) -> httpx.Client:
        headers = {"X-Gristmill-Worker-Secret": secret} if secret is not None else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120, trust_env=False)

    def health(self, secret: str | None = SECRET) -> httpx.Response:
        with self.client(secret) as client:
            return client.get("/healthz")

    def execute(self, execution_id: str = "e-1", inputs: Mapping[str, Any] | None = None,
                outputs: list[dict[str, str]] | None = None, **extra: Any) -> dict[str, Any]:
        with self.client() as client:
            response = client.post("/executions", json=body(execution_id, inputs, outputs,
                                                            **extra))
        assert response.status_code == 200, response.text
        report: dict[str, Any] = response.json()
        return report

    def wait_exit(self) -> int:
        return self.process.wait(timeout=DEADLINE_S)

    def output(self) -> str:
        return "\n".join(self.stdout + self.stderr)


def body(execution_id: str = "e-1", inputs: Mapping[str, Any] | None = None,
         outputs: list[dict[str, str]] | None = None, **extra: Any) -> dict[str, Any]:
    return {"execution_id": execution_id, "step_name": "s1", "function_path": "src/main.py",
            "function_name": "entry", "inputs": dict(inputs or {}), "file_inputs": [],
            "outputs": outputs if outputs is not None else [{"name": "r", "data_type": "json"}],
            "sdk_token": f"token-of-{execution_id}-0123456789", "env": {}, **extra}


def eventually(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _drain(stream: Any, into: list[str]) -> None:
    for line in stream:
        into.append(line.rstrip("\n"))


Start = Callable[..., Worker]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """``start(files, ready=True, **env)`` launches a worker on the step folder."""
    started: list[Worker] = []

    def launch(files: Mapping[str, str], *, ready: bool = True, function: str = "entry",
               **env: str) -> Worker:
        step_dir = write_step(tmp_path / f"step{len(started)}", files)
        io_root = tmp_path / f"io{len(started)}"
        port = free_port()
        environ = {k: v for k, v in os.environ.items()
                   if not k.startswith(("GRISTMILL_", "CRAFT_AI_"))}
        environ.update(GRISTMILL_WORKER_PORT=str(port), GRISTMILL_WORKER_SECRET=SECRET,
                       GRISTMILL_STEP_DIR=str(step_dir), GRISTMILL_IO_DIR=str(io_root),
                       GRISTMILL_FUNCTION_PATH="src/main.py", GRISTMILL_FUNCTION_NAME=function,
                       PYTHONUNBUFFERED="1", NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
        environ.update(env)
        process = subprocess.Popen(
            [sys.executable, "-m", "gristmill.runtime", "serve"], env=environ, cwd=tmp_path,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        worker = Worker(process, port, step_dir, io_root)
        for stream, lines in ((process.stdout, worker.stdout), (process.stderr, worker.stderr)):
            threading.Thread(target=_drain, args=(stream, lines), daemon=True).start()
        started.append(worker)
        if ready:
            eventually(lambda: _is_ready(worker), "the worker to be ready")
        return worker

    yield launch
    for worker in started:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()
        # the worker's own secret is never printed
        assert SECRET not in worker.output()


def _is_ready(worker: Worker) -> bool:
    if worker.process.poll() is not None:
        raise AssertionError(f"the worker exited with {worker.process.returncode}:\n"
                             f"{worker.output()}")
    try:
        return worker.health().status_code == 200
    except httpx.TransportError:
        return False


COUNTER = """
    import os
    import sys
    CALLS = 0
    print("imported once", flush=True)

    def entry(x):
        global CALLS
        CALLS += 1
        print(f"call {x}")
        print(f"warn {x}", file=sys.stderr)
        return {"r": {"x": x, "calls": CALLS, "pid": os.getpid()}}
"""


def test_module_imported_once_and_state_kept(start: Start) -> None:
    worker = start({"src/main.py": COUNTER})
    first = worker.execute("e-1", {"x": 1})
    second = worker.execute("e-2", {"x": 2})
    assert first["status"] == second["status"] == "succeeded"
    assert first["outputs"] == {"r": {"x": 1, "calls": 1, "pid": worker.process.pid}}
    assert second["outputs"]["r"]["calls"] == 2
    # each report carries its own lines only, with stream and timestamp
    assert [(line["stream"], line["message"]) for line in second["logs"]] == [
        ("stdout", "call 2"), ("stderr", "warn 2")]
    assert all(line["timestamp"].endswith("+00:00") for line in second["logs"])
    # module-level output went to the worker's output once; executions' lines did not
    assert worker.stdout.count("imported once") == 1
    assert not any(line.startswith(("call", "warn")) for line in worker.stdout + worker.stderr)
    assert set(first) == {"status", "outputs", "logs"}


def test_health_needs_the_secret_and_answers_503_while_importing(start: Start,
                                                                 tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    worker = start({"src/main.py": f"""
        import pathlib, time
        for _ in range(6000):
            if pathlib.Path({str(gate)!r}).exists():
                break
            time.sleep(0.01)
        def entry():
            return None
    """}, ready=False)

    def importing() -> bool:
        try:
            return worker.health().status_code == 503
        except httpx.TransportError:
            return False

    eventually(importing, "503 while importing")
    assert worker.health("wrong-secret-0123456789").status_code == 401
    assert worker.health(None).status_code == 401
    gate.write_text("open")
    eventually(lambda: _is_ready(worker), "200 once imported")
    assert worker.health().json() == {"status": "ready", "running": 0, "waiting": 0,
                                      "max_parallel_executions": 1}
    for secret in ("wrong-secret-0123456789", None, SECRET[:-1]):
        response = worker.health(secret)
        assert response.status_code == 401 and "secret" in response.json()["message"]
    with worker.client("nope") as client:
        assert client.post("/executions", json=body()).status_code == 401
    assert "GRISTMILL_WORKER_SECRET" not in worker.execute(outputs=[])["logs"]


def test_failures_are_reported_as_run_reports_them(start: Start) -> None:
    worker = start({"src/main.py": """
        import sys

        def entry(kind):
            if kind == "raise":
                raise ValueError("bad value")
            if kind == "exit":
                sys.exit(4)
            if kind == "extra":
                return {"r": 1, "surprise": 2}
            if kind == "nan":
                return {"r": float("nan")}
            return "not a dict"
    """})
    raised = worker.execute("e-1", {"kind": "raise"})
    assert raised["status"] == "failed"
    error = raised["error"]
    assert (error["type"], error["message"]) == ("ValueError", "bad value")
    # from the step's first frame: no runner, asyncio or thread-pool frames
    assert error["traceback"].startswith("Traceback (most recent call last):\n  File ")
    assert "src/main.py" in error["traceback"].splitlines()[1]
    assert "concurrent" not in error["traceback"] and "serve.py" not in error["traceback"]
    assert error["traceback"].rstrip().endswith("ValueError: bad value")
    assert [line["stream"] for line in raised["logs"]] == ["stderr"] * len(raised["logs"])
    assert raised["logs"][-1]["message"] == "ValueError: bad value"
    exited = worker.execute("e-2", {"kind": "exit"})["error"]
    assert (exited["type"], exited["message"]) == ("SystemExit", "sys.exit(4) was called")
    assert worker.execute("e-3", {"kind": "extra"})["error"]["type"] == "OutputError"
    assert "cannot be sent as JSON" in worker.execute("e-4", {"kind": "nan"})["error"]["message"]
    assert "must return a dict" in worker.execute("e-5", {"kind": "x"})["error"]["message"]
    wrong = worker.execute("e-6", {"other": 1})["error"]
    assert wrong["type"] == "TypeError" and "cannot be called with the step's inputs (other)" \
        in wrong["message"]
    mismatch = worker.execute("e-7", {"kind": "x"}, function_name="other")["error"]
    assert mismatch["type"] == "RuntimeProtocolError" and "update the deployment" \
        in mismatch["message"]
    # the worker lives on after all of them
    assert worker.health().status_code == 200


BARRIER = """
    import asyncio, sys, threading
    ACTIVE = MAX_ACTIVE = 0
    _lock = threading.Lock()
    _waiting = []
    _barrier = None

    def _enter():
        global ACTIVE, MAX_ACTIVE
        with _lock:
            ACTIVE += 1
            MAX_ACTIVE = max(MAX_ACTIVE, ACTIVE)

    def _leave():
        global ACTIVE
        with _lock:
            ACTIVE -= 1

    async def entry_async(tag, n):
        _enter()
        try:
            future = asyncio.get_running_loop().create_future()
            _waiting.append(future)
            if len(_waiting) == n:
                for waiter in _waiting:
                    waiter.set_result(None)
                _waiting.clear()
            await asyncio.wait_for(future, 60)
            for i in range(3):
                print(f"{tag} {i}")
                await asyncio.sleep(0)
            return {"r": MAX_ACTIVE}
        finally:
            _leave()

    def entry_threads(tag, n):
        global _barrier
        _enter()
        try:
            with _lock:
                _barrier = _barrier or threading.Barrier(n, timeout=60)
            _barrier.wait()
            for i in range(3):
                print(f"{tag} {i}")
                print(f"{tag} err {i}", file=sys.stderr)
            return {"r": MAX_ACTIVE}
        finally:
            _leave()
"""


@pytest.mark.parametrize("function", ["entry_async", "entry_threads"])
def test_parallel_executions_up_to_the_limit_with_their_own_logs(start: Start,
                                                                 function: str) -> None:
    worker = start({"src/main.py": BARRIER}, function=function,
                   GRISTMILL_MAX_PARALLEL_EXECUTIONS="3")
    tags = [f"tag{i}" for i in range(6)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        reports = list(pool.map(
            lambda tag: worker.execute(tag, {"tag": tag, "n": 3}, function_name=function),
            tags))
    for tag, report in zip(tags, reports, strict=True):
        # every one got through a barrier that opens only with 3 executions inside...
        assert report["status"] == "succeeded", report
        # ...and never more than 3 ran at once
        assert report["outputs"]["r"] <= 3
        messages = [line["message"] for line in report["logs"]]
        expected = [f"{tag} {i}" for i in range(3)]
        if function == "entry_threads":
            assert sorted(messages) == sorted(expected + [f"{tag} err {i}" for i in range(3)])
        else:
            assert messages == expected


def test_one_at_a_time_by_default(start: Start, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    worker = start({"src/main.py": f"""
        import pathlib, threading, time
        ACTIVE = MAX_ACTIVE = 0
        lock = threading.Lock()

        def entry():
            global ACTIVE, MAX_ACTIVE
            with lock:
                ACTIVE += 1
                MAX_ACTIVE = max(MAX_ACTIVE, ACTIVE)
            for _ in range(6000):
                if pathlib.Path({str(gate)!r}).exists():
                    break
                time.sleep(0.01)
            with lock:
                ACTIVE -= 1
            return {{"r": MAX_ACTIVE}}
    """})
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(worker.execute, f"e-{i}") for i in range(2)]
        # the gate is closed: one runs, the other waits for the only slot
        eventually(lambda: worker.health().json()["waiting"] == 1, "one waiting")
        assert worker.health().json()["running"] == 1
        gate.write_text("open")
        reports = [future.result() for future in futures]
    assert [report["outputs"]["r"] for report in reports] == [1, 1]


def test_environment_and_context_are_set_per_execution(start: Start) -> None:
    worker = start({"src/main.py": """
        import os
        import __craft_internal_execution_context as craft
        from gristmill.runtime import context

        def entry(names):
            return {"r": {
                "env": {name: os.environ.get(name) for name in names},
                "ids": [os.environ["CRAFT_AI_EXECUTION_ID"], os.environ["GRISTMILL_EXECUTION_ID"],
                        context.current_execution_id.get(), craft.current_execution_id.get()],
                "token": os.environ["CRAFT_AI_SDK_TOKEN"] == os.environ["GRISTMILL_SDK_TOKEN"],
                "io_dir": os.environ["GRISTMILL_IO_DIR"],
                "secret": os.environ.get("GRISTMILL_WORKER_SECRET"),
            }}
    """}, GRISTMILL_WORKER_ENV_NAMES='["A", "B"]', A="launch-a", B="launch-b", KEEP="kept")
    names = ["A", "B", "C", "KEEP"]
    first = worker.execute("e-1", {"names": names}, env={"A": "one"})["outputs"]["r"]
    assert first["env"] == {"A": "one", "B": None, "C": None, "KEEP": "kept"}
    assert first["ids"] == ["e-1"] * 4 and first["token"] is True
    assert first["io_dir"] == str(worker.io_root / "e-1")
    assert first["secret"] is None  # the step cannot read the worker's secret
    second = worker.execute("e-2", {"names": names}, env={"A": "two", "C": "new"})
    assert second["outputs"]["r"]["env"] == {"A": "two", "B": None, "C": "new", "KEEP": "kept"}
    assert second["outputs"]["r"]["ids"] == ["e-2"] * 4
    third = worker.execute("e-3", {"names": names}, env={})["outputs"]["r"]
    assert third["env"] == {"A": None, "B": None, "C": None, "KEEP": "kept"}
    # per-execution scratch folders do not pile up (executions without files make none)
    assert not worker.io_root.exists() or not list(worker.io_root.iterdir())


def test_output_outside_executions_and_token_masking(start: Start) -> None:
    worker = start({"src/main.py": """
        import os, sys, threading

        def entry():
            print("token is " + os.environ["GRISTMILL_SDK_TOKEN"])
            # a thread the step starts itself does not inherit the execution's context
            thread = threading.Thread(target=lambda: print("from a bare thread", flush=True))
            thread.start()
            thread.join()
            os.write(1, b"straight to the descriptor\\n")
            sys.stdout.buffer.write("bytes \\u00e9\\n".encode())
            return None
    """})
    report = worker.execute("e-1", outputs=[])
    assert [line["message"] for line in report["logs"]] == ["token is ***", "bytes é"]
    eventually(lambda: {"from a bare thread", "straight to the descriptor"} <= set(worker.stdout),
               "the worker's own output")


def test_file_inputs_and_outputs_go_through_the_control_service(start: Start) -> None:
    double = ControlDouble(input_files={"doc": b"abc"})
    with serve(double):
        worker = start({"src/main.py": """
            import os

            def entry(doc, suffix):
                with open(doc["path"], "rb") as handle:
                    data = handle.read()
                out = os.path.join(os.environ["GRISTMILL_IO_DIR"], "result.bin")
                with open(out, "wb") as handle:
                    handle.write(data + suffix.encode())
                return {"result": {"path": out}, "size": len(data)}
        """}, GRISTMILL_ENVIRONMENT_URL=double.url, GRISTMILL_RUNTIME_RETRY_BUDGET_S="0")
        report = worker.execute(
            EXECUTION_ID, {"suffix": "!"}, sdk_token=SDK_TOKEN,
            file_inputs=[{"name": "doc", "filename": "../doc.txt"}],
            outputs=[{"name": "result", "data_type": "file"},
                     {"name": "size", "data_type": "number"}])
    assert report["status"] == "succeeded", report
    assert report["outputs"] == {"size": 3}
    assert double.outputs == {"result": ("result.bin", b"abc!")}
    # the worker fetched and sent files; start and finish are the pool's business
    assert double.routes() == ["POST /api/v1/auth/refresh", f"GET {PREFIX}/inputs/doc",
                               f"PUT {PREFIX}/outputs/result"]
    assert not list(worker.io_root.iterdir())


def test_file_input_that_cannot_be_fetched_fails_the_execution(start: Start) -> None:
    double = ControlDouble()  # no such input there
    with serve(double):
        worker = start({"src/main.py": "def entry(doc):\n    return None\n"},
                       GRISTMILL_ENVIRONMENT_URL=double.url, GRISTMILL_RUNTIME_RETRY_BUDGET_S="0")
        report = worker.execute(EXECUTION_ID, sdk_token=SDK_TOKEN, outputs=[],
                                file_inputs=[{"name": "doc", "filename": "d.txt"}])
    assert report["status"] == "failed"
    assert report["error"]["type"] == "InputError" and "404" in report["error"]["message"]


@pytest.mark.parametrize(
    ("files", "function", "last_line"),
    [
        ({"src/main.py": "print('before')\nimport no_such_module_here\n"}, "entry",
         "ModuleNotFoundError: No module named 'no_such_module_here'"),
        ({"src/main.py": "def other():\n    pass\n"}, "entry",
         "FunctionNotFoundError: Function 'entry' not found in src/main.py. "
         "Functions defined there: other."),
        ({"src/other.py": ""}, "entry",
         "FileNotFoundError: function_path 'src/main.py': no such file in the step folder"),
    ],
)
def test_an_import_failure_exits_with_the_traceback(start: Start, files: dict[str, str],
                                                    function: str, last_line: str) -> None:
    worker = start(files, ready=False, function=function)
    assert worker.wait_exit() == 1
    eventually(lambda: worker.stderr, "stderr")
    assert worker.stderr[-1].startswith(last_line)
    if "no_such_module_here" in last_line:
        assert worker.stderr[0] == "Traceback (most recent call last):"
        assert worker.stdout == ["before"]


def test_configuration_errors(start: Start) -> None:
    worker = start({"src/main.py": COUNTER}, ready=False, GRISTMILL_WORKER_SECRET="short")
    assert worker.wait_exit() == 3
    assert "GRISTMILL_WORKER_SECRET" in worker.output()
    worker = start({"src/main.py": COUNTER}, ready=False, GRISTMILL_MAX_PARALLEL_EXECUTIONS="0")
    assert worker.wait_exit() == 3


def test_a_taken_port_is_its_own_exit_code(start: Start) -> None:
    first = start({"src/main.py": COUNTER})
    second = start({"src/main.py": COUNTER}, ready=False,
                   GRISTMILL_WORKER_PORT=str(first.port))
    assert second.wait_exit() == 75


def test_http_details(start: Start) -> None:
    worker = start({"src/main.py": COUNTER})
    connection = http.client.HTTPConnection("127.0.0.1", worker.port, timeout=30)
    headers = {"X-Gristmill-Worker-Secret": SECRET, "Content-Type": "application/json"}
    sockets = set()
    for i in range(3):  # keep-alive: one connection for several executions
        connection.request("POST", "/executions", json.dumps(body(f"e-{i}", {"x": i})), headers)
        response = connection.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["outputs"]["r"]["calls"] == i + 1
        sockets.add(id(connection.sock))
    assert len(sockets) == 1
    for method, path, payload, status in [
        ("GET", "/nope", None, 404),
        ("GET", "/executions", None, 405),
        ("POST", "/executions", b"{not json", 400),
        ("POST", "/executions", b'{"no": "id"}', 400),
    ]:
        connection.request(method, path, payload, headers)
        response = connection.getresponse()
        assert response.status == status
        assert "message" in json.loads(response.read())
    connection.close()


def test_sigterm_stops_the_worker(start: Start) -> None:
    worker = start({"src/main.py": COUNTER})
    worker.process.send_signal(signal.SIGTERM)
    assert worker.wait_exit() == 0
    eventually(lambda: any("worker stopping" in line for line in worker.stderr), "goodbye")


# the worker's output to nowhere, or to a pipe only its launcher reads (as the control
# service and the shadow runner launch theirs): once the launcher is killed, saying
# goodbye there fails with a broken pipe, which once left the worker running forever
@pytest.mark.parametrize("output", ["DEVNULL", "PIPE"])
def test_an_orphaned_worker_exits(tmp_path: Path, output: str) -> None:
    step_dir = write_step(tmp_path / "step", {"src/main.py": COUNTER})
    launcher = subprocess.Popen(
        [sys.executable, "-c", f"""
import os, subprocess, sys, time
env = {{**os.environ, "GRISTMILL_WORKER_PARENT_PID": str(os.getpid())}}
child = subprocess.Popen([sys.executable, "-m", "gristmill.runtime", "serve"], env=env,
                         stdout=subprocess.{output}, stderr=subprocess.{output})
print(child.pid, flush=True)
time.sleep(600)
"""],
        env={**os.environ, "GRISTMILL_WORKER_PORT": str(free_port()),
             "GRISTMILL_WORKER_SECRET": SECRET, "GRISTMILL_STEP_DIR": str(step_dir),
             "GRISTMILL_FUNCTION_PATH": "src/main.py", "GRISTMILL_FUNCTION_NAME": "entry"},
        stdout=subprocess.PIPE, text=True)
    assert launcher.stdout is not None
    pid = int(launcher.stdout.readline())
    launcher.kill()
    launcher.wait()

    def gone() -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    eventually(gone, "the orphaned worker to exit")


LOOP_REPORTER = """
    import asyncio

    async def entry():
        return {"r": type(asyncio.get_running_loop()).__module__}
"""


@pytest.mark.parametrize(("asked", "expected"), [
    ("", "uvloop"),  # auto: uvloop is installed beside the runner here
    ("auto", "uvloop"),
    ("asyncio", "asyncio"),
    ("uvloop", "uvloop"),
])
def test_the_event_loop_is_uvloop_unless_asked_otherwise(start: Start, asked: str,
                                                         expected: str) -> None:
    pytest.importorskip("uvloop")
    worker = start({"src/main.py": LOOP_REPORTER}, GRISTMILL_WORKER_LOOP=asked)
    report = worker.execute(outputs=[{"name": "r", "data_type": "string"}])
    assert report["status"] == "succeeded", report
    assert report["outputs"]["r"].split(".")[0] == expected


def test_an_unknown_loop_is_a_warning_and_the_default() -> None:
    from gristmill.runtime.serve import ServeConfig

    config = ServeConfig.from_env({
        "GRISTMILL_WORKER_PORT": "8080", "GRISTMILL_WORKER_SECRET": SECRET,
        "GRISTMILL_FUNCTION_PATH": "main.py", "GRISTMILL_FUNCTION_NAME": "f",
        "GRISTMILL_STEP_DIR": str(Path.cwd()), "GRISTMILL_WORKER_LOOP": "trio"})
    assert config.loop == "auto"
    assert any("GRISTMILL_WORKER_LOOP" in warning for warning in config.warnings)
