"""Fork servers ("zygotes") for the local backend's elastic executions.

Starting a worker is mostly starting an interpreter and importing the runner. A zygote
(``python -m gristmill.runtime zygote``, sdk/gristmill/runtime/zygote.py) does that once
per step environment and forks a fresh child per execution; the child is then a
``python -m gristmill.runtime run`` process like a spawned one (own environment, working
directory, session, descriptors), without the start-up cost.

One zygote per key: the interpreter (a step environment's ``python``: a changed
requirements set is another environment, hence another zygote) and the part of the
environment that shapes an interpreter's start (``PYTHON*``, locale, ``HOME``, ``PATH``).
Zygotes start on first use, stop after ``idle_s`` without executions, and are started
again when one died.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import io
import itertools
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import psutil

from gristmill_platform.timeouts import within

log = logging.getLogger("gristmill.executors")

READY_TIMEOUT_S = 30.0
MAX_MESSAGE = 1 << 16
# How long a key whose zygote would not start is spawned for instead, before trying again.
RETRY_AFTER_S = 60.0
# A child whose zygote died: how often to look whether it is still there.
ORPHAN_POLL_S = 0.2
_STARTUP_NAMES = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ")


def pipe_file(fd: int, loop: asyncio.AbstractEventLoop) -> io.FileIO:
    """The file object to hand ``loop.connect_read_pipe`` for the read end ``fd``.

    uvloop's pipe transport closes the descriptor itself (libuv), then closes the file
    object as well: with ``closefd`` that second close(2) can hit the same number already
    given to another thread's new file (aiosqlite's, a data store upload's, a test's
    client), which then fails with EBADF or, worse, writes elsewhere. asyncio's transport
    closes only the file object, which must then own the descriptor."""
    closes_fd_itself = type(loop).__module__.split(".")[0] == "uvloop"
    return os.fdopen(fd, "rb", 0, closefd=not closes_fd_itself)


class ZygoteError(Exception):
    """The zygote could not start or fork; the caller spawns instead."""


def startup_env(env: Mapping[str, str]) -> dict[str, str]:
    """The variables an interpreter reads when it starts (site, encodings, flags): a
    zygote is started with these, and serves only executions that have the same."""
    return {name: value for name, value in env.items()
            if name in _STARTUP_NAMES or name.startswith(("PYTHON", "LC_"))}


def fork_target(argv: Sequence[str]) -> tuple[str, str, list[str]] | None:
    """(interpreter, module, arguments) when argv is ``python -m module ...``."""
    if len(argv) >= 3 and argv[1] == "-m" and argv[2]:
        return argv[0], argv[2], list(argv[3:])
    return None


class ForkedProcess:
    """A zygote's child, seen like an asyncio.subprocess.Process (pid, stdout,
    returncode, wait). ``lost`` is set when its zygote died before reporting its end:
    its exit status is then unknown."""

    def __init__(self, pid: int, stdout: asyncio.StreamReader,
                 exited: asyncio.Future[int | None]) -> None:
        self.pid = pid
        self.stdout = stdout
        self._exited = exited

    @property
    def returncode(self) -> int | None:
        if not self._exited.done():
            return None
        code = self._exited.result()
        return 255 if code is None else code

    @property
    def lost(self) -> bool:
        return self._exited.done() and self._exited.result() is None

    async def wait(self) -> int:
        await asyncio.shield(self._exited)
        return self.returncode if self.returncode is not None else 255


class Zygote:
    def __init__(self, python: str, env: Mapping[str, str], cwd: Path) -> None:
        self.python = python
        self.env = dict(env)
        self.cwd = cwd
        self.process: asyncio.subprocess.Process | None = None
        self.sock: socket.socket | None = None
        self.pid: int | None = None
        self.last_used = time.monotonic()
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[dict[str, object]]] = {}
        self._exits: dict[int, asyncio.Future[int | None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._reader: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return (self.process is not None and self.process.returncode is None
                and self.sock is not None)

    @property
    def running(self) -> int:
        return sum(1 for future in self._exits.values() if not future.done())

    async def start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.cwd.mkdir(parents=True, exist_ok=True)
        try:
            self.process = await asyncio.create_subprocess_exec(
                self.python, "-m", "gristmill.runtime", "zygote", "--fd", str(theirs.fileno()),
                env=self.env, cwd=str(self.cwd), pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, start_new_session=True)
        finally:
            theirs.close()
        ours.setblocking(False)
        self.sock = ours
        self._start(self._log_stderr())
        loop = asyncio.get_running_loop()
        try:
            ready = await within(loop.sock_recv(ours, MAX_MESSAGE), READY_TIMEOUT_S)
        except TimeoutError:
            ready = b""
        if not ready:
            await self.stop()
            raise ZygoteError(f"the fork server of {self.python} did not start")
        self.pid = int(json.loads(ready)["ready"])
        self._reader = asyncio.get_running_loop().create_task(
            self._read(), context=contextvars.Context())

    def _start(self, coro: Coroutine[Any, Any, None]) -> None:
        # a context of its own: not the launching execution's (logging context variables)
        task = asyncio.get_running_loop().create_task(coro, context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _log_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        async for raw in self.process.stderr:
            log.warning("fork server %s: %s", self.python,
                        raw.decode(errors="replace").rstrip())

    async def _read(self) -> None:
        assert self.sock is not None
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await loop.sock_recv(self.sock, MAX_MESSAGE)
                if not data:
                    break
                message = json.loads(data)
                if "exited" in message:
                    future = self._exits.pop(int(message["exited"]), None)
                    if future is not None and not future.done():
                        future.set_result(int(message["code"]))
                    continue
                if "pid" in message:
                    # handed to fork() with the answer: the child may end (and its exit
                    # message be read here) before fork() resumes
                    exit_future = loop.create_future()
                    self._exits[int(message["pid"])] = message["exit"] = exit_future
                pending = self._pending.pop(str(message.get("id")), None)
                if pending is not None and not pending.done():
                    pending.set_result(message)
        except (OSError, ValueError):
            if self.sock is not None:  # not closed by stop()
                log.exception("fork server %s: lost its socket", self.python)
        finally:
            self._gone()

    def _gone(self) -> None:
        """The zygote's socket closed: it died (or was stopped). Requests in flight fail;
        its running children live on, and their end is seen by their pid vanishing."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        for answer in self._pending.values():
            if not answer.done():
                answer.set_exception(ZygoteError("the fork server stopped"))
        self._pending.clear()
        for pid, exited in self._exits.items():
            if not exited.done():
                self._start(_watch_orphan(pid, exited))

    async def fork(self, module: str, args: list[str], env: Mapping[str, str],
                   cwd: str, channel_fd: int | None = None) -> ForkedProcess:
        if not self.alive or self.sock is None:
            raise ZygoteError("the fork server is not running")
        loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()
        request_id = str(next(self._ids))
        answer: asyncio.Future[dict[str, object]] = loop.create_future()
        self._pending[request_id] = answer
        payload = json.dumps({"id": request_id, "module": module, "args": args,
                              "env": dict(env), "cwd": cwd}).encode()
        try:
            await _send_with_fds(self.sock, payload,
                                 [write_fd] if channel_fd is None else [write_fd, channel_fd])
        except OSError as error:
            self._pending.pop(request_id, None)
            os.close(read_fd)
            raise ZygoteError(f"the fork server did not take the request: {error}") from error
        finally:
            os.close(write_fd)  # the child holds the only write end now
        try:
            reply = await answer
        except ZygoteError:
            os.close(read_fd)
            raise
        if "error" in reply:
            os.close(read_fd)
            raise ZygoteError(f"the fork server could not fork: {reply['error']}")
        pid = int(str(reply["pid"]))
        exited = cast("asyncio.Future[int | None]", reply["exit"])
        self.last_used = time.monotonic()
        reader = asyncio.StreamReader(loop=loop)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                     pipe_file(read_fd, loop))
        return ForkedProcess(pid, reader, exited)

    async def stop(self) -> None:
        if self._reader is not None and not self._reader.done():
            # off the event loop's reader list before its socket closes
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self.sock is not None:
            self.sock.close()  # the zygote exits on EOF
            self.sock = None
        if self.process is not None and self.process.returncode is None:
            try:
                await within(self.process.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.send_signal(signal.SIGKILL)
                await self.process.wait()
        for task in list(self._tasks):
            if task.get_coro().__name__ != "_watch_orphan":  # type: ignore[union-attr]
                task.cancel()


async def _send_with_fds(sock: socket.socket, payload: bytes, fds: list[int]) -> None:
    # A request is a few kilobytes: the socket's buffer takes it at once unless the
    # zygote is far behind, in which case wait a little.
    for _ in range(1000):
        try:
            socket.send_fds(sock, [payload], fds)
            return
        except BlockingIOError:
            await asyncio.sleep(0.005)
    raise OSError("the fork server's socket stayed full")


async def _watch_orphan(pid: int, future: asyncio.Future[int | None]) -> None:
    try:
        started = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        started = None
    while started is not None:
        try:
            if psutil.Process(pid).create_time() != started:
                break
        except psutil.NoSuchProcess:
            break
        await asyncio.sleep(ORPHAN_POLL_S)
    if not future.done():
        future.set_result(None)


class ZygotePool:
    """The zygotes of the local backend, one per (interpreter, start-up environment)."""

    def __init__(self, root: Path, idle_s: float) -> None:
        self.root = root
        self.idle_s = idle_s
        self._zygotes: dict[tuple[str, tuple[tuple[str, str], ...]], Zygote] = {}
        self._locks: dict[tuple[str, tuple[tuple[str, str], ...]], asyncio.Lock] = {}
        self._refused: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._janitor: asyncio.Task[None] | None = None

    @property
    def zygotes(self) -> list[Zygote]:
        return list(self._zygotes.values())

    async def fork(self, argv: Sequence[str], env: Mapping[str, str], cwd: str,
                   channel_fd: int | None = None) -> ForkedProcess | None:
        """The child running argv, or None when argv is not ``python -m ...`` or no zygote
        can serve it (then the caller spawns, as without zygotes). ``channel_fd``: a
        descriptor the child gets as its descriptor 3 (the runner's channel); the caller
        keeps and closes its own."""
        target = fork_target(argv)
        if target is None:
            return None
        python, module, args = target
        start_env = startup_env(env)
        key = (python, tuple(sorted(start_env.items())))
        refused_at = self._refused.get(key)
        if refused_at is not None and time.monotonic() - refused_at < RETRY_AFTER_S:
            return None
        async with self._locks.setdefault(key, asyncio.Lock()):
            zygote = self._zygotes.get(key)
            if zygote is None or not zygote.alive:
                if zygote is not None:
                    log.warning("fork server %s (pid %s) died; starting another", python,
                                zygote.pid)
                zygote = Zygote(python, start_env, self.root)
                try:
                    await zygote.start()
                except (OSError, ZygoteError) as error:
                    log.warning("no fork server for %s (%s): spawning workers instead",
                                python, error)
                    self._refused[key] = time.monotonic()
                    return None
                self._zygotes[key] = zygote
            self._ensure_janitor()
            zygote.last_used = time.monotonic()
        try:
            return await zygote.fork(module, args, env, cwd, channel_fd)
        except ZygoteError as error:
            log.warning("fork server %s: %s; spawning this worker instead", python, error)
            return None

    def _ensure_janitor(self) -> None:
        if self._janitor is None or self._janitor.done():
            self._janitor = asyncio.get_running_loop().create_task(
                self._evict_idle(), context=contextvars.Context())

    async def _evict_idle(self) -> None:
        while self._zygotes:
            await asyncio.sleep(max(0.05, min(self.idle_s / 2, 30.0)))
            now = time.monotonic()
            for key, zygote in list(self._zygotes.items()):
                if not zygote.alive and zygote.running == 0:
                    del self._zygotes[key]
                elif zygote.running == 0 and now - zygote.last_used >= self.idle_s:
                    del self._zygotes[key]
                    await zygote.stop()

    async def shutdown(self) -> None:
        if self._janitor is not None:
            self._janitor.cancel()
        for zygote in list(self._zygotes.values()):
            await zygote.stop()
        self._zygotes.clear()
