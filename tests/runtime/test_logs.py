"""What the step prints becomes timestamped log lines, sent while it runs and at the end."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gristmill.runtime._logs import MAX_LINE_CHARS, LineAssembler, LogBuffer
from tests.runtime._control_double import SDK_TOKEN, ControlDouble
from tests.runtime.conftest import RunStep


def test_lines_keep_their_order_stream_and_timestamp(run_step: RunStep) -> None:
    result = run_step(
        {
            "src/main.py": """
                import sys
                def entry():
                    print("one")
                    print("two", file=sys.stderr)
                    print("three", end="")
                    print(" continued")
                    sys.stdout.write("no newline at the end")
            """
        }
    )
    assert result.returncode == 0, result.stderr
    lines = result.double.all_log_lines()
    assert [(line["stream"], line["message"]) for line in lines] == [
        ("stdout", "one"),
        ("stderr", "two"),
        ("stdout", "three continued"),
        ("stdout", "no newline at the end"),
    ]
    stamps = [datetime.fromisoformat(line["timestamp"]) for line in lines]
    assert all(stamp.utcoffset() == timedelta(0) for stamp in stamps)
    assert stamps == sorted(stamps)
    # Echoed to the worker's real streams too.
    assert "one\n" in result.stdout and "three continued\n" in result.stdout
    assert "two\n" in result.stderr


def test_output_that_bypasses_sys_stdout_is_kept(run_step: RunStep) -> None:
    result = run_step(
        {
            "src/main.py": """
                import os, subprocess, sys
                def entry():
                    os.write(1, b"raw descriptor write\\n")
                    os.system("echo from a shell")
                    subprocess.run([sys.executable, "-c",
                                    "import sys; print('child err', file=sys.stderr)"])
                    sys.__stdout__.write("through sys.__stdout__\\n")
                    sys.stdout.buffer.write("bytes é\\n".encode())
            """
        }
    )
    assert result.returncode == 0, result.stderr
    stdout = result.double.messages("stdout")
    assert {"raw descriptor write", "from a shell", "through sys.__stdout__", "bytes é"} <= set(
        stdout
    )
    assert result.double.messages("stderr") == ["child err"]
    assert "from a shell" in result.stdout and "child err" in result.stderr


def test_threads_printing_at_once_give_whole_lines(run_step: RunStep) -> None:
    result = run_step(
        {
            "src/main.py": """
                import threading
                def entry():
                    def talk(who):
                        for i in range(200):
                            print(f"{who}-{i}")
                    threads = [threading.Thread(target=talk, args=(w,)) for w in "abcd"]
                    for t in threads: t.start()
                    for t in threads: t.join()
            """
        }
    )
    assert result.returncode == 0, result.stderr
    messages = result.double.messages("stdout")
    assert sorted(messages) == sorted(f"{w}-{i}" for w in "abcd" for i in range(200))
    for who in "abcd":
        own = [m for m in messages if m.startswith(who)]
        assert own == [f"{who}-{i}" for i in range(200)]


def test_logs_are_sent_while_the_function_runs(run_step: RunStep, tmp_path: Path) -> None:
    go = tmp_path / "go"
    posts_with_tick: list[int] = []

    class Watching(ControlDouble):
        def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes
                   ) -> Any:
            answer = super().handle(method, raw_path, headers, body)
            if raw_path.endswith("/logs"):
                if any(line["message"] == "tick" for line in self.log_posts[-1]):
                    posts_with_tick.append(len(self.log_posts))
                # Released only after heartbeats, some of them empty, have arrived.
                if posts_with_tick and len(self.log_posts) >= posts_with_tick[0] + 2:
                    go.write_text("x")
            return answer

    result = run_step(
        {
            "src/main.py": f"""
                import os, time
                def entry():
                    print("tick")
                    deadline = time.monotonic() + 60
                    while not os.path.exists({str(go)!r}) and time.monotonic() < deadline:
                        time.sleep(0.02)
                    print("tock")
            """
        },
        Watching(),
    )
    assert result.returncode == 0, result.stderr
    double = result.double
    assert posts_with_tick, "the line printed first should go out with POST /logs"
    assert [] in double.log_posts  # heartbeats go out even with nothing to say
    assert double.all_log_lines()[-1]["message"] == "tock"
    assert [m for m in double.messages() if m in ("tick", "tock")] == ["tick", "tock"]


def test_the_token_is_masked_in_logs(run_step: RunStep) -> None:
    result = run_step(
        {"src/main.py": "import os\n\ndef entry():\n    print(os.environ['GRISTMILL_SDK_TOKEN'])\n"}
    )
    assert result.returncode == 0
    assert result.double.messages("stdout") == ["***"]
    assert SDK_TOKEN not in str(result.double.finish)


# -- the line assembler, in process --


def _assemble(*writes: str) -> list[str]:
    buffer = LogBuffer()
    assembler = LineAssembler("stdout", buffer)
    for text in writes:
        assembler.feed(text)
    assembler.flush()
    return [line["message"] for line in buffer.take()]


def test_carriage_returns_keep_the_last_state_of_a_progress_bar() -> None:
    assert _assemble("10%\r", "50%\r", "100%\n") == ["100%"]
    assert _assemble("windows line\r\n", "next\r", "\n") == ["windows line", "next"]
    assert _assemble("a\n\nb\n") == ["a", "", "b"]


def test_long_lines_are_split() -> None:
    messages = _assemble("x" * (MAX_LINE_CHARS * 2 + 5) + "\n")
    assert [len(m) for m in messages] == [MAX_LINE_CHARS, MAX_LINE_CHARS, 5]


def test_partial_lines_of_different_threads_stay_apart() -> None:
    buffer = LogBuffer()
    assembler = LineAssembler("stdout", buffer)
    assembler.feed("main ")
    worker = threading.Thread(target=lambda: assembler.feed("thread line\n"))
    worker.start()
    worker.join()
    assembler.feed("line\n")
    assert [line["message"] for line in buffer.take()] == ["thread line", "main line"]


def test_buffer_drops_the_oldest_lines_and_says_so() -> None:
    buffer = LogBuffer(max_pending=3)
    for index in range(5):
        buffer.add("stdout", str(index))
    messages = [line["message"] for line in buffer.take()]
    assert messages[0].startswith("[gristmill] 2 earlier log lines were dropped")
    assert messages[1:] == ["2", "3", "4"]


def test_lines_put_back_go_first() -> None:
    buffer = LogBuffer()
    buffer.add("stdout", "a")
    buffer.add("stdout", "b")
    taken = buffer.take(1)
    buffer.add("stdout", "c")
    buffer.put_back(taken)
    assert [line["message"] for line in buffer.take()] == ["a", "b", "c"]


def test_many_lines_arrive_complete_and_in_order(run_step: RunStep) -> None:
    result = run_step(
        {"src/main.py": "def entry():\n    for i in range(2500):\n        print(f'line {i}')\n"}
    )
    assert result.returncode == 0, result.stderr
    assert result.double.messages("stdout") == [f"line {i}" for i in range(2500)]
    batches = [*result.double.log_posts, result.finish["logs"]]
    assert max(len(batch) for batch in batches) <= 1000


def test_output_of_forked_children_is_kept(run_step: RunStep) -> None:
    result = run_step(
        {
            "src/main.py": """
                import multiprocessing

                def child(tag):
                    print(f"from the forked child {tag}")

                def entry():
                    process = multiprocessing.get_context("fork").Process(target=child,
                                                                           args=("c1",))
                    process.start()
                    process.join()
                    print("parent done")
            """
        }
    )
    assert result.returncode == 0, result.stderr
    assert result.double.messages("stdout") == ["from the forked child c1", "parent done"]


def test_a_background_process_left_running_does_not_hold_the_worker(
    run_step: RunStep, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    try:
        result = run_step(
            {
                "src/main.py": f"""
                    import subprocess, sys
                    def entry():
                        child = subprocess.Popen([sys.executable, "-c",
                            "import time; print('bg started', flush=True); time.sleep(120)"])
                        open({str(pid_file)!r}, "w").write(str(child.pid))
                        return {{"r": "done"}}
                """
            },
            outputs=[{"name": "r", "data_type": "string"}],
        )
        assert result.returncode == 0, result.stderr
        assert result.finish["outputs"] == {"r": "done"}
    finally:
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_execution_logs_make_their_buffer_at_the_first_line() -> None:
    from gristmill.runtime._logs import ExecutionLogs

    quiet = ExecutionLogs()
    assert quiet.close() == [] and quiet.closed
    logs = ExecutionLogs(lambda text: text.replace("secret", "***"))
    logs.feed("stdout", "one secret\ntwo")
    logs.feed("stderr", "err\n")
    lines = logs.close()
    assert [(line["stream"], line["message"]) for line in lines] == [
        ("stdout", "one ***"), ("stderr", "err"), ("stdout", "two")]
    with pytest.raises(KeyError):
        ExecutionLogs().feed("elsewhere", "x\n")


def test_execution_logs_take_lines_from_several_threads() -> None:
    import threading

    from gristmill.runtime._logs import ExecutionLogs

    logs = ExecutionLogs()
    start = threading.Barrier(8)

    def write(n: int) -> None:
        start.wait()
        for i in range(50):
            logs.feed("stdout" if n % 2 else "stderr", f"{n}-{i}\n")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(logs.close()) == 400
