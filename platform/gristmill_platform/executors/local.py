"""Local backend: each elastic execution is a process of its own, running the runner in
the step's virtual environment: forked by that environment's fork server (zygotes.py) when
there is one, else spawned as a child of the control service.

The runner is also given a channel (runner_channel.py) for its start, logs and finish: no
HTTP request, no token to check, for the calls every execution makes; and its start may
be recorded with the launch, its /start then answered from memory."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import psutil

from gristmill_platform.executors.base import LogLine
from gristmill_platform.executors.runner_channel import (
    RUNTIME_FD,
    RUNTIME_FD_VAR,
    ChannelHandler,
    serve_channel,
)
from gristmill_platform.executors.spec import (
    FailureCode,
    Handle,
    LaunchSpec,
    PollResult,
    WorkerState,
)
from gristmill_platform.executors.zygotes import ForkedProcess, ZygotePool, fork_target
from gristmill_platform.timeouts import within

TAIL_LINES = 200
KILL_GRACE_S = 5.0

ExitCallback = Callable[[str, PollResult, Sequence[LogLine]], Awaitable[None]]
log = logging.getLogger("gristmill.executors")


class WorkerObserver(Protocol):
    """Optional: told about each worker process's life, for resource accounting
    (gristmill_platform.resources.usage). Its failures are logged, never propagated."""

    def worker_started(self, execution_id: str, pid: int) -> None:
        """The process exists (called right after it was spawned)."""

    def worker_exiting(self, execution_id: str) -> None:
        """Its output closed: it is exiting; the last moment it may still be read."""

    async def worker_exited(self, execution_id: str) -> None:
        """It exited and was reaped (called before the executor's exit callback)."""

_SIGNAL_REASONS = {
    signal.SIGKILL: "the worker was killed (SIGKILL): out of memory, or killed by hand",
    signal.SIGSEGV: "the Python interpreter crashed (segmentation fault)",
    signal.SIGABRT: "the Python interpreter aborted (SIGABRT)",
    signal.SIGTERM: "the worker was stopped (SIGTERM)",
    signal.SIGBUS: "the Python interpreter crashed (bus error)",
}


def exit_outcome(returncode: int) -> PollResult:
    """What a runner's exit code means (see docs/internals/runtime-protocol.md)."""
    if returncode == 0:
        return PollResult(WorkerState.SUCCEEDED, exit_code=0)
    if returncode == 3:
        return PollResult(WorkerState.FAILED, "the worker could not reach the control service",
                          exit_code=3)
    if returncode < 0:
        number = -returncode
        try:
            reason = _SIGNAL_REASONS.get(signal.Signals(number),
                                         f"the worker was killed by signal {number}")
        except ValueError:
            reason = f"the worker was killed by signal {number}"
        return PollResult(WorkerState.FAILED, reason, exit_code=returncode)
    return PollResult(WorkerState.FAILED, f"the worker exited with code {returncode}",
                      exit_code=returncode)


class _Worker:
    def __init__(self, process: asyncio.subprocess.Process | ForkedProcess,
                 work_dir: Path) -> None:
        self.process = process
        self.work_dir = work_dir
        self.tail: deque[LogLine] = deque(maxlen=TAIL_LINES)
        self.outcome: PollResult | None = None
        self.timed_out_after: int | None = None  # set when the deadline stopped it


class LocalExecutor:
    def __init__(self, work_root: Path, on_exit: ExitCallback,
                 zygotes: ZygotePool | None = None,
                 channel: ChannelHandler | None = None) -> None:
        self.work_root = work_root
        self.on_exit = on_exit
        # None: every worker is spawned (settings.local_fork_server off)
        self.zygotes = zygotes
        # What answers a forked runner's calls over its channel; None: it uses HTTP.
        self.channel = channel
        self._workers: dict[str, _Worker] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.observer: WorkerObserver | None = None

    def has_worker(self, execution_id: str) -> bool:
        """Whether this executor started a worker for the execution, not yet cleaned up."""
        return execution_id in self._workers

    def io_dir(self, execution_id: str) -> Path:
        return self.work_root / execution_id / "io"

    async def submit(self, spec: LaunchSpec,
                     start_answer: Mapping[str, Any] | None = None,
                     recorded: Awaitable[None] | None = None) -> Handle:
        """``start_answer``: the execution was started with its launch, and this is what
        the runner's /start gets over its channel (the runner must get one: spec.argv
        runs the runner, and the executor has a channel handler). ``recorded``: done once
        the launch's transaction has ended; until then the worker's channel answers only
        that start, and its exit is not reported."""
        worker = self._workers.get(spec.execution_id)
        if worker is None:
            work_dir = self.work_root / spec.execution_id
            (work_dir / "io").mkdir(parents=True, exist_ok=True)
            # Each execution's own temporary folder, removed with its work folder.
            (work_dir / "tmp").mkdir(mode=0o700, exist_ok=True)
            env = {**spec.env, "TMPDIR": str(work_dir / "tmp")}
            cwd = spec.env.get("GRISTMILL_STEP_DIR") or str(work_dir)
            process: asyncio.subprocess.Process | ForkedProcess | None = None
            channel: socket.socket | None = None
            if self.zygotes is not None:
                process, channel = await self._fork(spec.argv, env, cwd)
            if process is None:
                process, channel = await self._spawn(spec.argv, env, cwd)
            if start_answer is not None and channel is None:
                _signal_group(process.pid, signal.SIGKILL)
                raise RuntimeError("a worker started with its launch must get a channel")
            worker = self._workers.get(spec.execution_id)
            if worker is not None:  # a concurrent submit of the same execution won
                _signal_group(process.pid, signal.SIGKILL)
                if channel is not None:
                    channel.close()
                return _handle(spec.execution_id, worker.process.pid)
            if channel is not None:
                assert self.channel is not None
                prepared = None if start_answer is None else json.dumps(start_answer).encode()
                self._start(serve_channel(channel, spec.execution_id, self.channel,
                                          prepared, recorded))
            worker = _Worker(process, work_dir)
            self._workers[spec.execution_id] = worker
            self._observe("worker_started", spec.execution_id, process.pid)
            self._start(self._watch(spec.execution_id, worker, recorded))
            if spec.timeout_s is not None:
                self._start(self._deadline(spec.execution_id, worker, spec.timeout_s))
        return _handle(spec.execution_id, worker.process.pid)

    def _wants_channel(self, argv: Sequence[str]) -> bool:
        target = fork_target(argv)
        return (self.channel is not None and target is not None
                and target[1:] == ("gristmill.runtime", ["run"]))

    async def _spawn(self, argv: Sequence[str], env: dict[str, str], cwd: str
                     ) -> tuple[asyncio.subprocess.Process, socket.socket | None]:
        """The worker as a child of the control service, with its channel when it is the
        runner (under the descriptor number it has here)."""
        ours: socket.socket | None = None
        passed: tuple[int, ...] = ()
        if self._wants_channel(argv):
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            passed = (theirs.fileno(),)
            env = {**env, RUNTIME_FD_VAR: str(theirs.fileno())}
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                cwd=cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # so cancel can stop the whole process group
                pass_fds=passed,
            )
        except BaseException:
            if ours is not None:
                ours.close()
            raise
        finally:
            if ours is not None:
                theirs.close()  # the worker holds the only other end now
        if ours is not None:
            ours.setblocking(False)
        return process, ours

    async def _fork(self, argv: Sequence[str], env: dict[str, str], cwd: str
                    ) -> tuple[ForkedProcess | None, socket.socket | None]:
        """The worker forked by its environment's fork server, with its channel when it
        is the runner (None, None: spawn it)."""
        assert self.zygotes is not None
        if not self._wants_channel(argv):
            return await self.zygotes.fork(argv, env, cwd), None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = await self.zygotes.fork(argv, {**env, RUNTIME_FD_VAR: str(RUNTIME_FD)},
                                              cwd, channel_fd=theirs.fileno())
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()  # the worker holds the only other end now
        if process is None:
            ours.close()
            return None, None
        ours.setblocking(False)
        return process, ours

    def _start(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deadline(self, execution_id: str, worker: _Worker, timeout_s: int) -> None:
        """Stop the worker once it has run for timeout_s (a deployment's
        execution_timeout_s), as Kubernetes' activeDeadlineSeconds does for pods. SIGKILL,
        not SIGTERM: the runner would report being terminated, and the execution's reason
        must say it ran out of time."""
        try:
            await within(asyncio.shield(worker.process.wait()), timeout_s)
        except TimeoutError:
            worker.timed_out_after = timeout_s
            _signal_group(worker.process.pid, signal.SIGKILL)

    async def _watch(self, execution_id: str, worker: _Worker,
                     recorded: Awaitable[None] | None = None) -> None:
        assert worker.process.stdout is not None
        async for raw in worker.process.stdout:
            worker.tail.append(LogLine(datetime.now(UTC), "stdout",
                                       raw.decode(errors="replace").rstrip("\n")))
        self._observe("worker_exiting", execution_id)
        returncode = await worker.process.wait()
        worker.outcome = exit_outcome(returncode)
        if isinstance(worker.process, ForkedProcess) and worker.process.lost:
            worker.outcome = PollResult(
                WorkerState.FAILED, "the worker's fork server stopped while it ran: its "
                "exit status is unknown", code=FailureCode.WORKER_LOST)
        if worker.timed_out_after is not None:
            worker.outcome = PollResult(
                WorkerState.FAILED, f"The execution ran longer than its timeout "
                f"({worker.timed_out_after} s) and was stopped.", exit_code=returncode,
                code=FailureCode.DEADLINE_EXCEEDED)
        if self.observer is not None:
            try:
                await self.observer.worker_exited(execution_id)
            except Exception:
                log.exception("worker observer failed for %s", execution_id)
        if recorded is not None:
            await recorded  # its launch wrote what this exit is judged against
        await self.on_exit(execution_id, worker.outcome, list(worker.tail))

    def _observe(self, event: str, *args: object) -> None:
        if self.observer is None:
            return
        try:
            getattr(self.observer, event)(*args)
        except Exception:
            log.exception("worker observer failed on %s", event)

    async def poll(self, handle: Handle) -> PollResult:
        worker = self._workers.get(str(handle.get("execution_id")))
        if worker is not None:
            return worker.outcome or PollResult(WorkerState.RUNNING)
        # not ours (the control service restarted): is that process still alive?
        pid = handle.get("pid")
        if isinstance(pid, int) and _create_time(pid) == handle.get("started_at"):
            return PollResult(WorkerState.RUNNING)
        return PollResult(WorkerState.FAILED,
                          "the worker is gone (the control service restarted while it ran)")

    async def logs(self, handle: Handle) -> Sequence[LogLine]:
        worker = self._workers.get(str(handle.get("execution_id")))
        return list(worker.tail) if worker else []

    async def cancel(self, handle: Handle) -> None:
        worker = self._workers.get(str(handle.get("execution_id")))
        pid = worker.process.pid if worker else handle.get("pid")
        if not isinstance(pid, int) or (worker and worker.process.returncode is not None):
            return
        if worker is None and _create_time(pid) != handle.get("started_at"):
            return  # that pid is someone else's now
        _signal_group(pid, signal.SIGTERM)
        if worker is not None:
            try:
                await within(worker.process.wait(), KILL_GRACE_S)
            except TimeoutError:
                _signal_group(pid, signal.SIGKILL)

    async def cleanup(self, handle: Handle) -> None:
        execution_id = str(handle.get("execution_id"))
        self._workers.pop(execution_id, None)
        work_dir = self.work_root / execution_id
        if not _remove_empty_work_dir(work_dir):
            await asyncio.to_thread(shutil.rmtree, work_dir, True)

    async def shutdown(self) -> None:
        for execution_id, worker in list(self._workers.items()):
            if worker.process.returncode is None:
                await self.cancel({"execution_id": execution_id})
        for task in list(self._tasks):
            task.cancel()
        if self.zygotes is not None:
            await self.zygotes.shutdown()


def _remove_empty_work_dir(work_dir: Path) -> bool:
    """Remove an execution's work folder if it holds nothing but its two empty folders
    (io, tmp), as most executions leave it: three rmdir calls, cheaper on the event loop
    than a thread's round trip for rmtree. False when there is more (rmtree then)."""
    try:
        for name in ("io", "tmp"):
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(work_dir / name)
        os.rmdir(work_dir)
    except FileNotFoundError:
        return True  # already gone
    except OSError:
        return False  # not empty: what the execution left is removed by rmtree
    return True


def _signal_group(pid: int, signum: int) -> None:
    """Signal the worker's process group; the worker alone if it has none yet (a forked
    worker makes its group a moment after the fork server answered)."""
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _handle(execution_id: str, pid: int) -> Handle:
    return {"backend": "local", "pid": pid, "started_at": _create_time(pid),
            "execution_id": execution_id}


def _create_time(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
