"""The runner against the control-service double: the sequence, inputs, outputs, exit codes."""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path

from tests.runtime._control_double import (
    EXECUTION_ID,
    PREFIX,
    SDK_TOKEN,
    ControlDouble,
    Received,
    make_jwt,
    serve,
)
from tests.runtime.conftest import RUNNER, RunStep, free_port, runner_env, start_body, write_step


def test_success_with_every_json_output_type(run_step: RunStep) -> None:
    result = run_step(
        {
            "src/main.py": """
                def entry(a, n, cfg, items, flag, missing):
                    assert missing is None
                    return {
                        "text": a.upper(),
                        "number": n * 2,
                        "json": {"nested": cfg, "k": [1, 2]},
                        "array": items + ["z"],
                        "boolean": not flag,
                    }
            """
        },
        inputs={"a": "x", "n": 1.5, "cfg": {"k": 1}, "items": ["y"], "flag": False,
                "missing": None},
        outputs=[
            {"name": "text", "data_type": "string"},
            {"name": "number", "data_type": "number"},
            {"name": "json", "data_type": "json"},
            {"name": "array", "data_type": "array"},
            {"name": "boolean", "data_type": "boolean"},
        ],
    )
    assert result.returncode == 0, result.stderr
    assert result.finish["status"] == "succeeded"
    assert result.finish["outputs"] == {
        "text": "X",
        "number": 3.0,
        "json": {"nested": {"k": 1}, "k": [1, 2]},
        "array": ["y", "z"],
        "boolean": True,
    }
    assert result.double.routes() == [
        "POST /api/v1/auth/refresh",
        f"POST {PREFIX}/start",
        f"POST {PREFIX}/finish",
    ]
    start = result.double.received[1]
    assert start.body == b""
    assert start.headers["authorization"] == f"Bearer {result.double.access_token}"


def test_file_input_arrives_as_a_path_with_the_right_bytes(run_step: RunStep) -> None:
    payload = bytes(range(256)) * 1000
    double = ControlDouble(input_files={"data": payload})
    result = run_step(
        {
            "src/main.py": """
                import hashlib, os
                def entry(data, label):
                    path = data["path"]
                    assert list(data) == ["path"]
                    assert os.path.isabs(path)
                    with open(path, "rb") as f:
                        digest = hashlib.sha256(f.read()).hexdigest()
                    return {"digest": digest, "name": os.path.basename(path), "where": path,
                            "label": label}
            """
        },
        double,
        inputs={"label": "l"},
        file_inputs=[{"name": "data", "filename": "iris.csv"}],
        outputs=[{"name": n, "data_type": "string"} for n in ("digest", "name", "where", "label")],
    )
    assert result.returncode == 0, result.stderr
    outputs = result.finish["outputs"]
    assert outputs["digest"] == hashlib.sha256(payload).hexdigest()
    assert outputs["name"] == "iris.csv"
    assert outputs["label"] == "l"
    assert Path(outputs["where"]) == result.io_dir / "inputs" / "data" / "iris.csv"
    assert f"GET {PREFIX}/inputs/data" in result.double.routes()


def test_file_input_name_cannot_escape_the_io_folder(run_step: RunStep) -> None:
    double = ControlDouble(input_files={"data": b"x"})
    result = run_step(
        {"src/main.py": "def entry(data):\n    return {'where': data['path']}\n"},
        double,
        file_inputs=[{"name": "data", "filename": "../../evil.sh"}],
        outputs=[{"name": "where", "data_type": "string"}],
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.finish["outputs"]["where"]) == result.io_dir / "inputs/data/evil.sh"


def test_missing_file_input_fails_the_execution(run_step: RunStep) -> None:
    result = run_step(
        {"src/main.py": "def entry(data):\n    return None\n"},
        file_inputs=[{"name": "data", "filename": "x.csv"}],
    )
    assert result.returncode == 1
    assert result.error["type"] == "InputError"
    assert "'data'" in result.error["message"] and "404" in result.error["message"]


def test_file_output_is_uploaded_with_its_filename(run_step: RunStep) -> None:
    result = run_step(
        {
            "src/main.py": """
                from pathlib import Path
                def entry():
                    Path("out").mkdir()
                    Path("out/model.bin").write_bytes(b"\\x00weights\\xff")
                    return {"model": {"path": "out/model.bin"}, "report": {"path": "résumé.txt"},
                            "score": 0.9}
            """,
            "résumé.txt": "accents",
        },
        outputs=[
            {"name": "model", "data_type": "file"},
            {"name": "report", "data_type": "file"},
            {"name": "score", "data_type": "number"},
        ],
    )
    assert result.returncode == 0, result.stderr
    assert result.double.outputs == {
        "model": ("model.bin", b"\x00weights\xff"),
        "report": ("résumé.txt", b"accents"),
    }
    upload = next(item for item in result.double.received if item.path.endswith("/model"))
    assert upload.method == "PUT"
    assert upload.headers["content-type"] == "application/octet-stream"
    assert upload.headers["x-gristmill-filename"] == "model.bin"
    # File outputs travel with PUT only; finish carries the JSON ones.
    assert result.finish["outputs"] == {"score": 0.9}
    routes = result.double.routes()
    assert routes.index(f"PUT {PREFIX}/outputs/model") < routes.index(f"POST {PREFIX}/finish")


def test_async_def_function_is_awaited(run_step: RunStep) -> None:
    result = run_step(
        {
            "src/main.py": """
                import asyncio
                from gristmill.runtime.context import current_execution_id

                async def entry(x):
                    await asyncio.sleep(0)
                    task_view = await asyncio.create_task(read())
                    return {"doubled": x * 2, "id": task_view}

                async def read():
                    return current_execution_id.get()
            """
        },
        inputs={"x": 21},
        outputs=[{"name": "doubled", "data_type": "number"}, {"name": "id", "data_type": "string"}],
    )
    assert result.returncode == 0, result.stderr
    assert result.finish["outputs"] == {"doubled": 42, "id": EXECUTION_ID}


def test_none_return_without_outputs_succeeds(run_step: RunStep) -> None:
    result = run_step({"src/main.py": "def entry():\n    pass\n"})
    assert result.returncode == 0, result.stderr
    assert result.finish["status"] == "succeeded"
    assert result.finish["outputs"] == {}
    assert result.finish["logs"] == []


def test_409_on_start_exits_0_and_runs_nothing(run_step: RunStep, tmp_path: Path) -> None:
    marker = tmp_path / "called"
    result = run_step(
        {
            "src/main.py": f"""
                from pathlib import Path
                Path({str(marker)!r}).write_text("imported")
                def entry():
                    Path({str(marker)!r}).write_text("called")
            """
        },
        ControlDouble(start_status=409),
    )
    assert result.returncode == 0
    assert not marker.exists()
    assert result.double.finish is None
    assert result.double.routes() == ["POST /api/v1/auth/refresh", f"POST {PREFIX}/start"]
    assert "already started" in result.stderr


def test_control_service_unreachable_exits_3(tmp_path: Path) -> None:
    step_dir = write_step(tmp_path / "step", {"main.py": "def entry():\n    pass\n"})
    url = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.run(
        RUNNER,
        env=runner_env(url, step_dir, tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3
    assert "could not start the execution" in proc.stderr
    assert SDK_TOKEN not in proc.stderr


def test_rejected_execution_token_exits_3_without_printing_it(tmp_path: Path) -> None:
    step_dir = write_step(tmp_path / "step", {"main.py": "def entry():\n    pass\n"})
    with serve(ControlDouble()) as double:
        proc = subprocess.run(
            RUNNER,
            env={**runner_env(double.url, step_dir, tmp_path),
                 "GRISTMILL_SDK_TOKEN": "wrong-token-that-must-stay-secret"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 3
    assert "401" in proc.stderr
    assert "wrong-token-that-must-stay-secret" not in proc.stderr + proc.stdout


def test_missing_configuration_is_reported(tmp_path: Path) -> None:
    env = runner_env("http://127.0.0.1:1", tmp_path, tmp_path)
    del env["GRISTMILL_SDK_TOKEN"], env["CRAFT_AI_SDK_TOKEN"]
    proc = subprocess.run(RUNNER, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    assert "GRISTMILL_SDK_TOKEN or CRAFT_AI_SDK_TOKEN" in proc.stderr


def test_transient_failures_are_retried_within_the_budget(run_step: RunStep) -> None:
    double = ControlDouble(fail_first={
        f"POST {PREFIX}/start": [503],
        f"POST {PREFIX}/finish": [502, 503],
    })
    result = run_step(
        {"src/main.py": "def entry():\n    return {'r': 'ok'}\n"},
        double,
        env={"GRISTMILL_RUNTIME_RETRY_BUDGET_S": "60"},
        outputs=[{"name": "r", "data_type": "string"}],
    )
    assert result.returncode == 0, result.stderr
    assert result.double.routes().count(f"POST {PREFIX}/finish") == 3
    assert result.finish["outputs"] == {"r": "ok"}


def test_expired_access_token_is_exchanged_again(run_step: RunStep) -> None:
    double = ControlDouble(fail_first={f"POST {PREFIX}/finish": [401]})
    result = run_step({"src/main.py": "def entry():\n    pass\n"}, double)
    assert result.returncode == 0, result.stderr
    assert double.refreshes == 2


def test_finish_answer_decides_the_exit_code(run_step: RunStep) -> None:
    double = ControlDouble(
        finish_answer=lambda payload: {"status": "failed", "reason": "output 'r' is missing"}
    )
    result = run_step(
        {"src/main.py": "def entry():\n    return None\n"},
        double,
        outputs=[{"name": "r", "data_type": "string"}],
    )
    assert result.finish["status"] == "succeeded"
    assert result.returncode == 1
    assert "output 'r' is missing" in result.stderr


def test_execution_context_is_visible_inside_the_step(run_step: RunStep) -> None:
    result = run_step(
        {
            "src/main.py": """
                import os
                import threading
                import __craft_internal_execution_context as craft
                from gristmill.runtime import context

                def entry():
                    env_value = os.environ.pop("CRAFT_AI_EXECUTION_ID")
                    # craft-ai-sdk's own lookup goes through the module when the variable
                    # is gone, as in a warm worker running several executions.
                    from craft_ai_sdk.utils import get_execution_id
                    return {
                        "craft": craft.current_execution_id.get(),
                        "gristmill": context.current_execution_id.get(),
                        "env": env_value,
                        "gristmill_env": os.environ["GRISTMILL_EXECUTION_ID"],
                        "sdk": get_execution_id(),
                    }
            """
        },
        outputs=[{"name": n, "data_type": "string"}
                 for n in ("craft", "gristmill", "env", "gristmill_env", "sdk")],
    )
    assert result.returncode == 0, result.stderr
    assert set(result.finish["outputs"].values()) == {EXECUTION_ID}


def test_409_on_logs_stops_the_worker(run_step: RunStep, tmp_path: Path) -> None:
    marker = tmp_path / "finished"
    double = ControlDouble(logs_status=409)
    result = run_step(
        {
            "src/main.py": f"""
                import time
                from pathlib import Path
                def entry():
                    # Only the runner stopping the process ends this loop.
                    while True:
                        time.sleep(0.05)
                    Path({str(marker)!r}).write_text("x")
            """
        },
        double,
    )
    assert result.returncode == 1
    assert not marker.exists()
    assert double.finish is None
    assert "no longer accepts this execution" in result.stderr


def test_sigterm_while_running_reports_a_failure(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    step_dir = write_step(
        tmp_path / "step",
        {
            "main.py": f"""
                import time
                from pathlib import Path
                def entry():
                    Path({str(ready)!r}).write_text("x")
                    while True:
                        time.sleep(0.05)
            """
        },
    )
    double = ControlDouble(start_body=start_body(function_path="main.py"))
    with serve(double):
        proc = subprocess.Popen(
            RUNNER,
            env=runner_env(double.url, step_dir, tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while not ready.exists() and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.02)
            proc.terminate()
            _, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 1, stderr
    assert double.finish is not None
    assert double.finish["error"]["type"] == "Terminated"
    assert "SIGTERM" in double.finish["error"]["message"]


def test_threads_left_running_do_not_keep_the_worker_alive(run_step: RunStep) -> None:
    result = run_step(
        {
            "src/main.py": """
                import threading, time
                def entry():
                    threading.Thread(target=lambda: time.sleep(3600), name="forgotten").start()
                    return {"r": "done"}
            """
        },
        env={"GRISTMILL_RUNTIME_EXIT_GRACE_S": "0.2"},
        outputs=[{"name": "r", "data_type": "string"}],
    )
    assert result.returncode == 0
    assert result.finish["outputs"] == {"r": "done"}
    assert "threads started by the step are still running" in result.stderr
    assert "forgotten" in result.stderr


def test_unreadable_start_answer_fails_the_execution(run_step: RunStep) -> None:
    class Garbled(ControlDouble):
        def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes
                   ) -> tuple[int, dict[str, str], bytes]:
            if raw_path.endswith("/start"):
                self.received.append(Received(method, raw_path, headers, body))
                return 200, {"Content-Type": "application/json"}, b'{"function_name": 3}'
            return super().handle(method, raw_path, headers, body)

    result = run_step({"src/main.py": "def entry():\n    pass\n"}, Garbled())
    assert result.returncode == 1
    assert result.error["type"] == "RuntimeProtocolError"


def test_short_lived_access_tokens_are_renewed(run_step: RunStep) -> None:
    # Within the renewal margin from the start: every call exchanges the token first.
    double = ControlDouble(access_token=make_jwt(exp=time.time() + 30))
    result = run_step({"src/main.py": "def entry():\n    pass\n"}, double)
    assert result.returncode == 0, result.stderr
    assert double.refreshes == 2  # start, finish


def test_file_input_that_cannot_be_saved_fails_the_execution(run_step: RunStep) -> None:
    def blocked(tmp: Path) -> None:
        (tmp / "io").mkdir(exist_ok=True)
        (tmp / "io" / "inputs").write_text("a file where the folder should be")

    double = ControlDouble(input_files={"data": b"x"})
    result = run_step(
        {"src/main.py": "def entry(data):\n    pass\n"},
        double,
        before=blocked,
        file_inputs=[{"name": "data", "filename": "x.csv"}],
    )
    assert result.returncode == 1
    assert result.error["type"] == "InputError"
    assert result.error["message"].startswith("File input 'data' could not be saved: cannot")


def test_a_given_access_token_is_used_without_an_exchange(run_step: RunStep) -> None:
    double = ControlDouble()
    result = run_step(
        {"src/main.py": "import os\n\ndef entry():\n"
                        "    return {'seen': os.environ.get('GRISTMILL_ACCESS_TOKEN', '')}\n"},
        double, env={"GRISTMILL_ACCESS_TOKEN": double.access_token},
        outputs=[{"name": "seen", "data_type": "string"}],
    )
    assert result.returncode == 0, result.stderr
    assert double.refreshes == 0
    assert result.double.routes() == [f"POST {PREFIX}/start", f"POST {PREFIX}/finish"]
    # the runner's own: the step does not see it
    assert result.finish["outputs"] == {"seen": ""}


def test_a_refused_given_access_token_is_replaced_by_an_exchange(run_step: RunStep) -> None:
    double = ControlDouble()
    other = make_jwt(exp=time.time() + 7200)  # not the double's
    result = run_step({"src/main.py": "def entry():\n    pass\n"}, double,
                      env={"GRISTMILL_ACCESS_TOKEN": other})
    assert result.returncode == 0, result.stderr
    assert double.refreshes == 1
    assert result.double.routes() == [f"POST {PREFIX}/start", "POST /api/v1/auth/refresh",
                                      f"POST {PREFIX}/start", f"POST {PREFIX}/finish"]


def test_a_given_access_token_near_its_expiry_is_not_used(run_step: RunStep) -> None:
    double = ControlDouble()
    result = run_step({"src/main.py": "def entry():\n    pass\n"}, double,
                      env={"GRISTMILL_ACCESS_TOKEN": make_jwt(exp=time.time() + 5)})
    assert result.returncode == 0, result.stderr
    assert double.refreshes == 1
    assert result.double.routes()[0] == "POST /api/v1/auth/refresh"
