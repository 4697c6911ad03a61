"""Elastic workers forked by a fork server (zygote) are as isolated as spawned ones: each
execution sees exactly its own environment, working directory and temporary folder, no
descriptor beyond stdio, and nothing another execution left in memory. The executor's
contract (exit status, cancel, timeout, idempotent submit) holds for forked workers, and
the fork server is started again when it dies and stopped when idle."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from gristmill_platform.executors.base import LogLine
from gristmill_platform.executors.local import LocalExecutor
from gristmill_platform.executors.spec import FailureCode, LaunchSpec, PollResult, WorkerState
from gristmill_platform.executors.zygotes import ForkedProcess, ZygotePool

# Run once per execution; reports what it sees, then leaves marks for the next one.
PROBE = '''
import json, os, sys, tempfile
import gristmill.runtime.runner as runner
import helper

descriptors = []
for fd in range(3, 1024):
    try:
        os.fstat(fd)
    except OSError:
        continue
    descriptors.append(fd)
report = {
    "pid": os.getpid(), "pgid": os.getpgid(0), "ppid": os.getppid(),
    "env": dict(os.environ), "cwd": os.getcwd(), "tmp": tempfile.gettempdir(),
    "descriptors": descriptors, "argv": sys.argv,
    "runner_mark": getattr(runner, "probe_mark", None), "helper_calls": helper.call(),
    "stdin": sys.stdin.read(),
}
print("REPORT " + json.dumps(report))
# marks a later execution must not see
runner.probe_mark = os.environ["PROBE_ID"]
os.environ["PROBE_LEAK"] = "1"
kept = open(os.path.join(tempfile.gettempdir(), "kept.txt"), "w")
kept.write("left open, flushed at exit")
code = int(os.environ.get("PROBE_EXIT", "0"))
if code:
    raise SystemExit(code)
'''
HELPER = "calls = 0\ndef call():\n    global calls\n    calls += 1\n    return calls\n"


class Ended:
    def __init__(self) -> None:
        self.outcomes: dict[str, PollResult] = {}
        self.tails: dict[str, list[str]] = {}
        self.changed = asyncio.Condition()

    async def __call__(self, execution_id: str, outcome: PollResult,
                       tail: Sequence[LogLine]) -> None:
        async with self.changed:
            self.outcomes[execution_id] = outcome
            self.tails[execution_id] = [line.message for line in tail]
            self.changed.notify_all()

    async def wait(self, execution_id: str, timeout: float = 60) -> PollResult:
        async with self.changed:
            await asyncio.wait_for(
                self.changed.wait_for(lambda: execution_id in self.outcomes), timeout)
        return self.outcomes[execution_id]

    def report(self, execution_id: str) -> dict[str, object]:
        line = next(m for m in self.tails[execution_id] if m.startswith("REPORT "))
        return dict(json.loads(line.removeprefix("REPORT ")))


@pytest.fixture
def step_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "step"
    folder.mkdir()
    (folder / "probe.py").write_text(PROBE)
    (folder / "helper.py").write_text(HELPER)
    return folder


def spec(execution_id: str, step_dir: Path, module: str = "probe", args: Sequence[str] = (),
         timeout_s: int | None = None, **extra: str) -> LaunchSpec:
    env = {"GRISTMILL_STEP_DIR": str(step_dir), "PYTHONUNBUFFERED": "1",
           "PROBE_ID": execution_id, "PATH": os.environ.get("PATH", ""), **extra}
    return LaunchSpec(execution_id=execution_id, step_name="", pipeline_name="", language="",
                      argv=(sys.executable, "-m", module, *args), env=env,
                      timeout_s=timeout_s)


@pytest.fixture
async def pool(tmp_path: Path) -> AsyncIterator[ZygotePool]:
    zygotes = ZygotePool(tmp_path / "zygotes", idle_s=300)
    yield zygotes
    await zygotes.shutdown()


async def run_probes(executor: LocalExecutor, ended: Ended, step_dir: Path,
                     ids: Sequence[str]) -> list[dict[str, object]]:
    reports = []
    for execution_id in ids:
        await executor.submit(spec(execution_id, step_dir))
        outcome = await ended.wait(execution_id)
        assert outcome.state == WorkerState.SUCCEEDED, ended.tails[execution_id]
        reports.append(ended.report(execution_id))
    return reports


@pytest.mark.parametrize("forked", [True, False], ids=["fork-server", "spawned"])
async def test_each_execution_starts_fresh(tmp_path: Path, step_dir: Path, pool: ZygotePool,
                                          forked: bool) -> None:
    ended = Ended()
    work = tmp_path / "work"
    executor = LocalExecutor(work, ended, pool if forked else None)
    try:
        first, second = await run_probes(executor, ended, step_dir, ["one", "two"])
        zygote_pids = {z.pid for z in pool.zygotes}
    finally:
        await executor.shutdown()
    if forked:
        assert first["ppid"] in zygote_pids and second["ppid"] == first["ppid"]
    for report, execution_id in ((first, "one"), (second, "two")):
        expected_env = {**spec(execution_id, step_dir).env,
                        "TMPDIR": str(work / execution_id / "tmp")}
        env = dict(report["env"])  # type: ignore[call-overload]
        env.pop("LC_CTYPE", None)  # set by the interpreter itself in a C locale (PEP 538)
        assert env == expected_env  # exactly the spec's, nothing leaked
        assert report["cwd"] == str(step_dir)
        assert report["tmp"] == str(work / execution_id / "tmp")
        assert report["descriptors"] == []
        assert report["pgid"] == report["pid"]  # its own process group, for cancel
        assert report["stdin"] == ""
        assert report["argv"] == [str(step_dir / "probe.py")]
        # the step's modules are imported afresh, the runner's state is untouched
        assert report["helper_calls"] == 1
        assert report["runner_mark"] is None


async def test_file_left_open_is_flushed(tmp_path: Path, step_dir: Path,
                                         pool: ZygotePool) -> None:
    ended = Ended()
    executor = LocalExecutor(tmp_path / "work", ended, pool)
    try:
        await run_probes(executor, ended, step_dir, ["one"])
        kept = tmp_path / "work" / "one" / "tmp" / "kept.txt"
        assert kept.read_text() == "left open, flushed at exit"
    finally:
        await executor.shutdown()


async def test_exit_code_and_logs(tmp_path: Path, step_dir: Path, pool: ZygotePool) -> None:
    ended = Ended()
    executor = LocalExecutor(tmp_path / "work", ended, pool)
    try:
        handle = await executor.submit(spec("bad", step_dir, PROBE_EXIT="7"))
        outcome = await ended.wait("bad")
        assert handle["pid"] != os.getpid() and isinstance(handle["started_at"], float)
        assert outcome == PollResult(WorkerState.FAILED, "the worker exited with code 7",
                                     exit_code=7)
        assert (await executor.poll(handle)).state == WorkerState.FAILED
        assert any(line.message.startswith("REPORT ") for line in await executor.logs(handle))
        (step_dir / "boom.py").write_text("raise RuntimeError('boom')\n")
        await executor.submit(spec("boom", step_dir, "boom"))
        assert (await ended.wait("boom")).exit_code == 1
        assert any("RuntimeError: boom" in m for m in ended.tails["boom"])
    finally:
        await executor.shutdown()


async def test_submit_is_idempotent(tmp_path: Path, step_dir: Path, pool: ZygotePool) -> None:
    (step_dir / "sleeper.py").write_text("import time\ntime.sleep(60)\n")
    ended = Ended()
    executor = LocalExecutor(tmp_path / "work", ended, pool)
    try:
        first = await executor.submit(spec("s", step_dir, "sleeper"))
        again = await executor.submit(spec("s", step_dir, "sleeper"))
        assert first == again
        assert (await executor.poll(first)).state == WorkerState.RUNNING
    finally:
        await executor.shutdown()


async def test_cancel_stops_the_forked_worker(tmp_path: Path, step_dir: Path,
                                             pool: ZygotePool) -> None:
    (step_dir / "sleeper.py").write_text("import time\ntime.sleep(60)\n")
    ended = Ended()
    executor = LocalExecutor(tmp_path / "work", ended, pool)
    try:
        handle = await executor.submit(spec("c", step_dir, "sleeper"))
        await executor.cancel(handle)
        outcome = await ended.wait("c")
        assert outcome.exit_code == -signal.SIGTERM
        assert outcome.reason == "the worker was stopped (SIGTERM)"
    finally:
        await executor.shutdown()


async def test_timeout_stops_the_forked_worker(tmp_path: Path, step_dir: Path,
                                              pool: ZygotePool) -> None:
    (step_dir / "sleeper.py").write_text("import time\ntime.sleep(60)\n")
    ended = Ended()
    executor = LocalExecutor(tmp_path / "work", ended, pool)
    try:
        handle = await executor.submit(spec("t", step_dir, "sleeper", timeout_s=1))
        outcome = await ended.wait("t")
    finally:
        await executor.shutdown()
    assert isinstance(executor._workers["t"].process, ForkedProcess)
    assert handle["pid"] == executor._workers["t"].process.pid
    assert outcome.code == FailureCode.DEADLINE_EXCEEDED
    assert outcome.reason == "The execution ran longer than its timeout (1 s) and was stopped."


async def test_dead_fork_server_is_replaced(tmp_path: Path, step_dir: Path,
                                           pool: ZygotePool) -> None:
    (step_dir / "waiter.py").write_text(
        "import os, time\nwhile not os.path.exists('go'):\n    time.sleep(0.05)\n")
    ended = Ended()
    executor = LocalExecutor(tmp_path / "work", ended, pool)
    try:
        orphan = await executor.submit(spec("orphan", step_dir, "waiter"))
        (zygote,) = pool.zygotes
        assert zygote.pid is not None
        os.kill(zygote.pid, signal.SIGKILL)
        # the running worker lives on; its end is still seen, with an unknown status
        await asyncio.sleep(0.3)
        assert (await executor.poll(orphan)).state == WorkerState.RUNNING
        (step_dir / "go").write_text("")
        outcome = await ended.wait("orphan")
        assert outcome.state == WorkerState.FAILED and outcome.code == FailureCode.WORKER_LOST
        # the next execution gets a new fork server
        (report,) = await run_probes(executor, ended, step_dir, ["after"])
        (replacement,) = pool.zygotes
        assert replacement.pid != zygote.pid and report["ppid"] == replacement.pid
    finally:
        await executor.shutdown()


async def test_idle_fork_server_stops_and_keys(tmp_path: Path, step_dir: Path) -> None:
    pool = ZygotePool(tmp_path / "zygotes", idle_s=0.2)
    ended = Ended()
    executor = LocalExecutor(tmp_path / "work", ended, pool)
    try:
        (first,) = await run_probes(executor, ended, step_dir, ["one"])
        zygote = next(z for z in pool.zygotes if z.pid == first["ppid"])
        # another start-up environment (here PYTHONHASHSEED) needs its own fork server
        await executor.submit(spec("seeded", step_dir, PYTHONHASHSEED="3"))
        await ended.wait("seeded")
        seeded = ended.report("seeded")
        assert seeded["ppid"] != first["ppid"]
        assert seeded["ppid"] in {z.pid for z in pool.zygotes} | {zygote.pid}
        for _ in range(100):
            if not pool.zygotes:
                break
            await asyncio.sleep(0.1)
        assert pool.zygotes == []
        assert zygote.process is not None and zygote.process.returncode is not None
    finally:
        await executor.shutdown()


async def test_not_python_module_is_spawned(tmp_path: Path, pool: ZygotePool) -> None:
    ended = Ended()
    executor = LocalExecutor(tmp_path / "work", ended, pool)
    try:
        await executor.submit(LaunchSpec(
            execution_id="c", step_name="", pipeline_name="", language="",
            argv=(sys.executable, "-c", "print('spawned')"), env={}))
        assert (await ended.wait("c")).state == WorkerState.SUCCEEDED
        assert pool.zygotes == []
        assert not isinstance(executor._workers["c"].process, ForkedProcess)
    finally:
        await executor.shutdown()


CHANNEL_STEP = '''
import os, subprocess, sys

def entry(text):
    # the channel is the runner's: neither the step's environment nor its subprocesses
    # get it
    inherited = subprocess.run([sys.executable, "-c", "import os; os.fstat(3)"]).returncode
    return {"echo": text, "variable": os.environ.get("GRISTMILL_RUNTIME_FD"),
            "inherited": inherited == 0}
'''


class RecordingCalls:
    """The control service's side of a forked runner's channel, recording each call."""

    def __init__(self, start_status: int = 200) -> None:
        self.calls: list[tuple[str, str, dict[str, object]]] = []
        self.start_status = start_status

    async def __call__(self, execution_id: str, path: str, body: bytes
                       ) -> tuple[int, bytes]:
        self.calls.append((execution_id, path, json.loads(body) if body else {}))
        if path == "/start":
            if self.start_status != 200:
                return self.start_status, b'{"message": "already started"}'
            return 200, json.dumps({
                "function_path": "main.py", "function_name": "entry",
                "inputs": {"text": "hi"}, "file_inputs": [],
                "outputs": [{"name": n, "data_type": "json"}
                            for n in ("echo", "variable", "inherited")]}).encode()
        if path == "/finish":
            return 200, json.dumps({"status": "succeeded", "reason": None}).encode()
        return 200, b'{"accepted": 0}'


def runner_spec(execution_id: str, step_dir: Path) -> LaunchSpec:
    # an environment URL nothing listens on, and no retries: a call over HTTP fails (exit 3)
    return spec(execution_id, step_dir, "gristmill.runtime", ["run"],
                GRISTMILL_ENVIRONMENT_URL="http://127.0.0.1:9",
                GRISTMILL_SDK_TOKEN="execution-token-for-tests",
                GRISTMILL_EXECUTION_ID=execution_id,
                GRISTMILL_RUNTIME_RETRY_BUDGET_S="0")


async def test_forked_runner_calls_over_its_channel(tmp_path: Path, step_dir: Path,
                                                    pool: ZygotePool) -> None:
    (step_dir / "main.py").write_text(CHANNEL_STEP)
    ended, calls = Ended(), RecordingCalls()
    executor = LocalExecutor(tmp_path / "work", ended, pool, calls)
    try:
        await executor.submit(runner_spec("chan", step_dir))
        outcome = await ended.wait("chan")
    finally:
        await executor.shutdown()
    assert outcome.state == WorkerState.SUCCEEDED, ended.tails["chan"]
    assert [(execution_id, path) for execution_id, path, _ in calls.calls] == [
        ("chan", "/start"), ("chan", "/finish")]
    finish = calls.calls[-1][2]
    assert finish["status"] == "succeeded"
    assert finish["outputs"] == {"echo": "hi", "variable": None, "inherited": False}


async def test_channel_answers_keep_the_protocol(tmp_path: Path, step_dir: Path,
                                                 pool: ZygotePool) -> None:
    """A 409 on start over the channel means what it means over HTTP: nothing to run."""
    (step_dir / "main.py").write_text(CHANNEL_STEP)
    ended, calls = Ended(), RecordingCalls(start_status=409)
    executor = LocalExecutor(tmp_path / "work", ended, pool, calls)
    try:
        await executor.submit(runner_spec("late", step_dir))
        outcome = await ended.wait("late")
    finally:
        await executor.shutdown()
    assert outcome.state == WorkerState.SUCCEEDED
    assert [path for _, path, _ in calls.calls] == ["/start"]
    assert any("already started" in line for line in ended.tails["late"])


async def test_spawned_runner_gets_a_channel_too(tmp_path: Path, step_dir: Path) -> None:
    """Without a fork server the runner is spawned, with its channel all the same."""
    (step_dir / "main.py").write_text(CHANNEL_STEP)
    ended, calls = Ended(), RecordingCalls()
    executor = LocalExecutor(tmp_path / "work", ended, None, calls)
    try:
        await executor.submit(runner_spec("spawned", step_dir))
        outcome = await ended.wait("spawned")
    finally:
        await executor.shutdown()
    assert outcome.state == WorkerState.SUCCEEDED, ended.tails["spawned"]
    assert [path for _, path, _ in calls.calls] == ["/start", "/finish"]
    assert calls.calls[-1][2]["outputs"] == {"echo": "hi", "variable": None,
                                             "inherited": False}


@pytest.mark.parametrize("forked", [True, False], ids=["fork-server", "spawned"])
async def test_start_recorded_with_the_launch_is_answered_from_memory(
        tmp_path: Path, step_dir: Path, pool: ZygotePool, forked: bool) -> None:
    (step_dir / "main.py").write_text(CHANNEL_STEP)
    ended, calls = Ended(), RecordingCalls()
    executor = LocalExecutor(tmp_path / "work", ended, pool if forked else None, calls)
    answer = {"function_path": "main.py", "function_name": "entry",
              "inputs": {"text": "prepared"}, "file_inputs": [],
              "outputs": [{"name": n, "data_type": "json"}
                          for n in ("echo", "variable", "inherited")]}
    try:
        await executor.submit(runner_spec("ready", step_dir), answer)
        outcome = await ended.wait("ready")
    finally:
        await executor.shutdown()
    assert outcome.state == WorkerState.SUCCEEDED, ended.tails["ready"]
    assert [path for _, path, _ in calls.calls] == ["/finish"]
    assert calls.calls[-1][2]["outputs"]["echo"] == "prepared"  # type: ignore[index]
