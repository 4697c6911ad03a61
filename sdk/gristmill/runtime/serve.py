"""``python -m gristmill.runtime serve``: the warm worker of a low-latency deployment.

The worker imports the step's module once (its module-level code runs here, once), then
runs executions on request: a ``def`` function in a thread, an ``async def`` one as a task
on the worker's event loop, at most ``GRISTMILL_MAX_PARALLEL_EXECUTIONS`` at a time (the
others wait their turn). What an execution prints is attributed to it through a context
variable (``_logs.RoutingStream``); everything printed outside any execution goes to the
worker's own output, which the control service keeps as the deployment's logs.

The HTTP API is for the control service's worker pool only: bound to 127.0.0.1 (a pod binds
``GRISTMILL_WORKER_HOST=0.0.0.0`` so that the control service and the kubelet's readiness
probe reach it), and every request carries the worker's secret in
``X-Gristmill-Worker-Secret``.

SIGTERM stops the worker at once, unless ``GRISTMILL_WORKER_DRAIN_S`` is above 0 (set in
Kubernetes pods, whose rolling updates stop old pods while they run executions): the worker
then stops accepting connections, answers 503 on ``/healthz``, keeps serving the connections
it has, and exits once the last one is closed, or after that many seconds. A second SIGTERM
stops it at once.

    GET  /healthz     200 once the module is imported; 503 while it imports
    POST /executions  {<the POST /start answer>, "sdk_token": ..., "env": {...}}
                      -> 200 with the report ``run`` would send to /finish, logs included

HTTP/1.1 with keep-alive, one request at a time per connection: the pool opens as many
connections as it runs executions at once. Standard library only, like ``run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import faulthandler
import functools
import gc
import hmac
import inspect
import ipaddress
import json
import os
import queue
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gristmill.runtime._control import (
    CONTROL_URL_VARS,
    DEFAULT_RETRY_BUDGET_S,
    ENVIRONMENT_URL_VARS,
    IO_DIR_VAR,
    RETRY_BUDGET_VAR,
    STEP_DIR_VAR,
    ConfigError,
    ControlClient,
    ControlError,
    RunnerConfig,
    _first_optional,
    _seconds,
    _url,
)
from gristmill.runtime._loader import (
    StepFailure,
    failure_from,
    find_function,
    import_step_module,
    prepare_step_folder,
)
from gristmill.runtime._logs import ExecutionLogs, RoutingStream, current_logs
from gristmill.runtime.runner import (
    PREFIX,
    Job,
    Outcome,
    _safe_component,
    check_arguments,
    collect_outputs,
    craft_context_module,
    download_file_inputs,
    set_execution_context_vars,
    upload_file_outputs,
)

PORT_VAR = "GRISTMILL_WORKER_PORT"
SECRET_VAR = "GRISTMILL_WORKER_SECRET"  # noqa: S105 - a variable's name, not a secret
HOST_VAR = "GRISTMILL_WORKER_HOST"
# A Unix socket path instead of host/port: a launcher on the same machine saves a TCP
# round trip on every execution (loopback TCP costs several times a Unix socket).
SOCKET_VAR = "GRISTMILL_WORKER_SOCKET"
DRAIN_VAR = "GRISTMILL_WORKER_DRAIN_S"
# auto: uvloop when importable; asyncio: the standard loop (for a step whose code does not
# get on with uvloop); uvloop: uvloop, with a warning when it is missing.
LOOP_VAR = "GRISTMILL_WORKER_LOOP"
LOOP_KINDS = ("auto", "asyncio", "uvloop")
DEFAULT_HOST = "127.0.0.1"
MAX_PARALLEL_VAR = "GRISTMILL_MAX_PARALLEL_EXECUTIONS"
FUNCTION_PATH_VAR = "GRISTMILL_FUNCTION_PATH"
FUNCTION_NAME_VAR = "GRISTMILL_FUNCTION_NAME"
# JSON list of the environment variables the control service manages (the environment's
# variables at launch): one that is gone from an execution's "env" is removed.
MANAGED_ENV_VAR = "GRISTMILL_WORKER_ENV_NAMES"
# The launcher's pid: the worker exits when it is orphaned, instead of holding its port.
PARENT_PID_VAR = "GRISTMILL_WORKER_PARENT_PID"
SECRET_HEADER = "x-gristmill-worker-secret"  # noqa: S105 - a header's name

EXIT_STOPPED = 0
EXIT_IMPORT_FAILED = 1
EXIT_CONFIG = 3
# EX_TEMPFAIL: the port was taken between the launcher choosing it and the bind; the
# launcher picks another and starts again.
EXIT_PORT_IN_USE = 75

MIN_SECRET_CHARS = 16
MAX_HEAD = 64 * 1024
# Inputs are JSON values (files travel separately); the endpoint gateway caps a request
# at 64 MiB, the worker leaves room above that.
MAX_BODY = 256 * 1024 * 1024
PARENT_CHECK_S = 1.0

_REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
    405: "Method Not Allowed", 413: "Content Too Large", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
}


def _say(message: str) -> None:
    # Outside any execution: the worker's own output (the deployment's logs).
    print(f"{PREFIX} {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ServeConfig:
    port: int
    secret: str = field(repr=False)
    max_parallel: int
    step_dir: Path
    function_path: str
    function_name: str
    environment_url: str | None
    control_url: str | None
    io_root: Path
    managed_env: frozenset[str] = frozenset()
    retry_budget_s: float = DEFAULT_RETRY_BUDGET_S
    parent_pid: int | None = None
    host: str = DEFAULT_HOST
    socket_path: Path | None = None
    drain_s: float = 0.0
    loop: str = "auto"
    warnings: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ServeConfig:
        warnings: list[str] = []
        socket_value = env.get(SOCKET_VAR, "").strip()
        # a Unix socket replaces the port
        port = _integer(env, PORT_VAR, 0 if socket_value else None, 0, 65535)
        secret = env.get(SECRET_VAR, "")
        if len(secret) < MIN_SECRET_CHARS:
            raise ConfigError(f"{SECRET_VAR} must hold at least {MIN_SECRET_CHARS} characters.")
        max_parallel = _integer(env, MAX_PARALLEL_VAR, 1, 1, 10_000)
        step_dir = Path(env.get(STEP_DIR_VAR) or os.getcwd()).resolve()
        if not step_dir.is_dir():
            raise ConfigError(f"{STEP_DIR_VAR}={step_dir} is not a folder.")
        function_path = env.get(FUNCTION_PATH_VAR, "").strip()
        function_name = env.get(FUNCTION_NAME_VAR, "").strip()
        if not function_path or not function_name:
            raise ConfigError(f"Set {FUNCTION_PATH_VAR} and {FUNCTION_NAME_VAR}.")
        found = _first_optional(env, ENVIRONMENT_URL_VARS)
        environment_url = _url(found) if found else None
        control = _first_optional(env, CONTROL_URL_VARS)
        control_url = _url(control) if control else environment_url
        io_value = env.get(IO_DIR_VAR, "").strip()
        io_root = (Path(io_value).resolve() if io_value
                   else Path(tempfile.mkdtemp(prefix="gristmill-worker-io-")))
        managed: frozenset[str] = frozenset()
        raw_names = env.get(MANAGED_ENV_VAR, "").strip()
        if raw_names:
            try:
                names = json.loads(raw_names)
            except ValueError:
                names = None
            if isinstance(names, list) and all(isinstance(n, str) for n in names):
                managed = frozenset(names)
            else:
                warnings.append(f"{MANAGED_ENV_VAR} ignored: expected a JSON list of names.")
        parent = env.get(PARENT_PID_VAR, "").strip()
        host = env.get(HOST_VAR, "").strip() or DEFAULT_HOST
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ConfigError(f"{HOST_VAR} must be an IPv4 address, got {host!r}.") from None
        return cls(
            port=port if port is not None else 0,
            secret=secret,
            max_parallel=max_parallel if max_parallel is not None else 1,
            step_dir=step_dir,
            function_path=function_path,
            function_name=function_name,
            environment_url=environment_url,
            control_url=control_url,
            io_root=io_root,
            managed_env=managed,
            retry_budget_s=_seconds(env, RETRY_BUDGET_VAR, DEFAULT_RETRY_BUDGET_S, warnings,
                                    zero_ok=True),
            parent_pid=int(parent) if parent.isdigit() else None,
            host=host,
            socket_path=Path(socket_value) if socket_value else None,
            drain_s=_seconds(env, DRAIN_VAR, 0.0, warnings, zero_ok=True),
            loop=_loop_kind(env, warnings),
            warnings=tuple(warnings),
        )


def _loop_kind(env: Mapping[str, str], warnings: list[str]) -> str:
    raw = env.get(LOOP_VAR, "").strip().lower() or "auto"
    if raw not in LOOP_KINDS:
        warnings.append(f"{LOOP_VAR}={raw!r} ignored: expected one of {', '.join(LOOP_KINDS)}.")
        return "auto"
    return raw


def _integer(env: Mapping[str, str], name: str, default: int | None, low: int, high: int
             ) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        if default is None:
            raise ConfigError(f"Set {name}.")
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ConfigError(f"{name} must be a whole number from {low} to {high}, got {raw!r}.")
    return value


# -- HTTP, just enough -------------------------------------------------------------------------


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    keep_alive: bool


def _parse_head(head: bytes) -> _Request:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _HttpError(400, "Malformed request line")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise _HttpError(400, "Malformed header line")
        headers[name.strip().lower()] = value.strip()
    connection = headers.get("connection", "").lower()
    keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
    return _Request(method, target.split("?", 1)[0], headers, keep_alive)


def _content_length(headers: Mapping[str, str]) -> int:
    if "transfer-encoding" in headers:
        raise _HttpError(501, "Chunked bodies are not supported: send Content-Length")
    raw = headers.get("content-length", "0")
    if not raw.isdigit():
        raise _HttpError(400, "Malformed Content-Length")
    length = int(raw)
    if length > MAX_BODY:
        raise _HttpError(413, f"The body is larger than {MAX_BODY} bytes")
    return length


def _response(status: int, payload: Any, *, keep_alive: bool) -> bytes:
    # "replace": a lone surrogate in a log line must not make the whole answer unsendable
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8", "replace")
    head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            + ("" if keep_alive else "Connection: close\r\n") + "\r\n")
    return head.encode("latin-1") + body


def _secret_matches(headers: Mapping[str, str], secret: bytes) -> bool:
    return hmac.compare_digest(headers.get(SECRET_HEADER, "").encode("latin-1"), secret)


class _Warmup:
    """Answers 503 while the step module imports in the main thread, so that the launcher
    can tell "importing" from "not listening". Plain blocking sockets in a thread: the
    event loop cannot run while the main thread imports."""

    def __init__(self, sock: socket.socket, secret: bytes) -> None:
        self._sock = sock
        self._secret = secret
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gristmill-warmup", daemon=True)

    def start(self) -> None:
        self._sock.settimeout(0.05)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()
        self._sock.settimeout(None)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                try:
                    conn.settimeout(1.0)
                    data = b""
                    while b"\r\n\r\n" not in data and len(data) < MAX_HEAD:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    head = data.split(b"\r\n\r\n", 1)[0]
                    try:
                        authorised = _secret_matches(_parse_head(head).headers, self._secret)
                    except _HttpError:
                        authorised = False
                    if authorised:
                        answer = _response(503, {"status": "importing"}, keep_alive=False)
                    else:
                        answer = _response(401, {"message": "Missing or wrong worker secret"},
                                           keep_alive=False)
                    conn.sendall(answer)
                except OSError:
                    pass


# -- the worker ------------------------------------------------------------------------------


class _ExecutionThreads:
    """Threads for `def` executions, at most one per slot, started as needed.

    Lighter than ThreadPoolExecutor with run_in_executor: one queue put and one
    call_soon_threadsafe per execution, no concurrent.futures.Future to chain (about 45 us
    less per call, measured on the 2-CPU machine of docs/performance-log.md)."""

    def __init__(self, limit: int) -> None:
        self._queue: queue.SimpleQueue[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any],
                                             Callable[[], Any]]] = queue.SimpleQueue()
        self._limit = limit
        self._lock = threading.Lock()
        self._started = 0
        self._idle = 0  # threads waiting with no call promised to them

    def run(self, call: Callable[[], Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            if self._idle:
                self._idle -= 1  # this call is that thread's
            elif self._started < self._limit:
                self._started += 1
                threading.Thread(target=self._work, name="gristmill-execution",
                                 daemon=True).start()
        self._queue.put((loop, future, call))
        return future

    def _work(self) -> None:
        while True:
            loop, future, call = self._queue.get()
            try:
                result = call()
            except BaseException as error:  # the step's, handed back to the execution
                loop.call_soon_threadsafe(_settle, future, None, error)
            else:
                loop.call_soon_threadsafe(_settle, future, result, None)
            with self._lock:
                self._idle += 1


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Worker:
    def __init__(self, config: ServeConfig, function: Callable[..., Any]) -> None:
        self.config = config
        self.function = function
        self.where = f"{config.function_name}() in {config.function_path}"
        self.is_async = inspect.iscoroutinefunction(function)
        self.slots = asyncio.Semaphore(config.max_parallel)
        # One thread per slot: a `def` execution never waits for a thread once admitted.
        self._fitting: set[frozenset[str]] = set()  # input names checked against the function
        self.threads = _ExecutionThreads(config.max_parallel)
        self.running = 0
        self.waiting = 0
        self._env_keys: set[str] = set(config.managed_env)
        self._io_root = str(config.io_root)
        self._secret = config.secret.encode("utf-8")
        self.draining = False
        self.connections = 0
        self._no_connections = asyncio.Event()
        self._no_connections.set()

    # -- connections --

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._no_connections.clear()
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return  # the client closed the connection between requests
                except asyncio.LimitOverrunError:
                    writer.write(_response(431, {"message": "Request head too large"},
                                           keep_alive=False))
                    return
                try:
                    request = _parse_head(head)
                    length = _content_length(request.headers)
                except _HttpError as error:
                    writer.write(_response(error.status, {"message": error.message},
                                           keep_alive=False))
                    return
                body = await reader.readexactly(length) if length else b""
                status, payload = await self._route(request, body)
                keep_alive = request.keep_alive and status != 401
                writer.write(_response(status, payload, keep_alive=keep_alive))
                if not keep_alive:
                    return
                if writer.transport.get_write_buffer_size() > MAX_HEAD:
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()
            self.connections -= 1
            if not self.connections:
                self._no_connections.set()

    async def _route(self, request: _Request, body: bytes) -> tuple[int, Any]:
        if not _secret_matches(request.headers, self._secret):
            return 401, {"message": "Missing or wrong worker secret"}
        if request.path == "/healthz":
            if request.method not in ("GET", "HEAD"):
                return 405, {"message": "Use GET"}
            if self.draining:  # not ready: no new executions should come here
                return 503, {"status": "draining", "running": self.running}
            return 200, {"status": "ready", "running": self.running, "waiting": self.waiting,
                         "max_parallel_executions": self.config.max_parallel}
        if request.path == "/executions":
            if request.method != "POST":
                return 405, {"message": "Use POST"}
            try:
                payload = json.loads(body)
            except ValueError as error:
                return 400, {"message": f"The body is not JSON: {error}"}
            if not isinstance(payload, dict) or not isinstance(payload.get("execution_id"), str) \
                    or not payload["execution_id"]:
                return 400, {"message": "Expected a JSON object with an execution_id"}
            return 200, await self.run_execution(payload)
        return 404, {"message": f"No route {request.method} {request.path}"}

    # -- executions --

    async def run_execution(self, body: dict[str, Any]) -> dict[str, Any]:
        self.waiting += 1
        try:
            await self.slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            # A task of its own: a fresh copy of the context, so what the execution sets
            # (its logs, its id) never outlives it on the connection's task, which serves
            # the next request of this connection.
            return await asyncio.get_running_loop().create_task(self._execute(body))
        finally:
            self.running -= 1
            self.slots.release()

    async def _execute(self, body: dict[str, Any]) -> dict[str, Any]:
        execution_id: str = body["execution_id"]
        raw_token = body.get("sdk_token")
        token = raw_token if isinstance(raw_token, str) else ""
        redact = _redactor(token)
        logs = ExecutionLogs(redact)
        current_logs.set(logs)
        io_dir: Path | None = None
        client: ControlClient | None = None
        try:
            job = Job.parse(body)
            self._check_job(job)
            env = body.get("env") or {}
            if not isinstance(env, dict):
                raise StepFailure("RuntimeProtocolError", "env must be a JSON object.")
            # a string: a Path costs more than the rest of a warm call's bookkeeping
            io_path = f"{self._io_root}{os.sep}{_safe_component(execution_id, 'execution')}"
            if job.file_inputs or "file" in job.outputs.values():
                # only then: a folder made and removed costs more than a warm call
                io_dir = Path(io_path)
                io_dir.mkdir(parents=True, exist_ok=True)
            self._apply_env(env, execution_id, token, io_path)
            set_execution_context_vars(execution_id)
            kwargs = dict(job.inputs)
            if job.file_inputs:
                client = self._client(execution_id, token, Path(io_path), "InputError")
                try:
                    kwargs.update(await asyncio.to_thread(download_file_inputs, client, job,
                                                          Path(io_path)))
                except ControlError as error:
                    raise StepFailure("InputError", "File inputs could not be downloaded: "
                                      f"{error}.") from None
            names = frozenset(kwargs)
            if names not in self._fitting:  # whether they fit depends on the names only
                check_arguments(self.function, kwargs, self.where)
                if len(self._fitting) < 256:
                    self._fitting.add(names)
            try:
                result = await self._call(kwargs)
            except asyncio.CancelledError:
                raise
            except BaseException as error:
                raise failure_from(error) from None
            values, files = collect_outputs(result, job, self.where)
            if files:
                client = client or self._client(execution_id, token, Path(io_path),
                                                "OutputError")
                try:
                    await asyncio.to_thread(upload_file_outputs, client, files)
                except ControlError as error:
                    raise StepFailure("OutputError", "File outputs could not be uploaded: "
                                      f"{error}.") from None
            outcome = Outcome(outputs=values)
        except StepFailure as failure:
            outcome = _failed(failure, logs, redact)
        except Exception as error:
            # A runner bug, or step values that break while being read: still an answer.
            outcome = _failed(failure_from(error, "The runner failed: "), logs, redact)
        finally:
            if io_dir is not None:
                await _remove(io_dir)
        report = outcome.payload()
        report["logs"] = logs.close()
        return report

    async def _call(self, kwargs: dict[str, Any]) -> Any:
        if self.is_async:
            result = await self.function(**kwargs)
        else:
            # copy_context: the thread sees this execution's logs and id
            context = contextvars.copy_context()
            result = await self.threads.run(
                functools.partial(context.run, self.function, **kwargs))
        if inspect.isawaitable(result):  # a `def` that returns a coroutine
            result = await result
        return result

    def _check_job(self, job: Job) -> None:
        # The module was imported for one function: another one means the step changed
        # under a running worker.
        if (job.function_path, job.function_name) != (self.config.function_path,
                                                      self.config.function_name):
            raise StepFailure(
                "RuntimeProtocolError",
                f"This worker runs {self.where}, not {job.function_name}() in "
                f"{job.function_path}: update the deployment to reload it.",
            )

    def _apply_env(self, env: Mapping[str, Any], execution_id: str, token: str,
                   io_dir: str) -> None:
        """os.environ for the execution that starts (process-wide: executions running at
        the same time see the latest values, as documented)."""
        environ = os.environ
        wanted = {k: v for k, v in env.items() if isinstance(k, str) and isinstance(v, str)}
        for key in self._env_keys.difference(wanted):
            environ.pop(key, None)
        for key, value in wanted.items():
            if environ.get(key) != value:
                with contextlib.suppress(ValueError):  # a name os.environ refuses
                    environ[key] = value
        self._env_keys = set(wanted)
        environ["GRISTMILL_EXECUTION_ID"] = environ["CRAFT_AI_EXECUTION_ID"] = execution_id
        environ["GRISTMILL_IO_DIR"] = io_dir
        if token:
            environ["GRISTMILL_SDK_TOKEN"] = environ["CRAFT_AI_SDK_TOKEN"] = token

    def _client(self, execution_id: str, token: str, io_dir: Path, kind: str) -> ControlClient:
        if not self.config.environment_url or not token:
            raise StepFailure(kind, "This worker was started without GRISTMILL_ENVIRONMENT_URL "
                              "or the execution came without its token: files cannot be "
                              "transferred.")
        return ControlClient(RunnerConfig(
            environment_url=self.config.environment_url,
            control_url=self.config.control_url or self.config.environment_url,
            sdk_token=token, execution_id=execution_id, step_dir=self.config.step_dir,
            io_dir=io_dir, retry_budget_s=self.config.retry_budget_s,
        ))

    # -- process --

    def run_forever(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        server = loop.run_until_complete(
            asyncio.start_server(self.handle, sock=sock, limit=MAX_HEAD))

        def stop() -> None:
            if self.draining or self.config.drain_s <= 0:
                loop.stop()
                return
            self.draining = True
            server.close()  # no new connections; the open ones are still served
            _say(f"stopping: serving the {self.connections} open connection(s) for up to "
                 f"{self.config.drain_s:g} s")
            loop.create_task(self._stop_when_idle(loop))

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop)
        address = sock.getsockname()
        where = (f"{address[0]}:{address[1]}" if isinstance(address, tuple)
                 else str(address))
        print(f"{PREFIX} worker ready on {where}: {self.where}, "
              f"{self.config.max_parallel} execution(s) at a time", flush=True)
        try:
            loop.run_forever()
        finally:
            server.close()
            _say("worker stopping")

    async def _stop_when_idle(self, loop: asyncio.AbstractEventLoop) -> None:
        # Connections, not executions: the pool may still send on a connection it opened
        # before it saw this worker stopping, and would lose that execution if we left.
        with contextlib.suppress(asyncio.TimeoutError):  # not TimeoutError on 3.10
            await asyncio.wait_for(self._no_connections.wait(), self.config.drain_s)
        loop.stop()


def _failed(failure: StepFailure, logs: ExecutionLogs, redact: Callable[[str], str]) -> Outcome:
    failure.message = redact(failure.message)
    failure.traceback_text = redact(failure.traceback_text)
    # Into the execution's logs, as `run` does through its captured stderr.
    if failure.traceback_text:
        text = failure.traceback_text
        logs.feed("stderr", text if text.endswith("\n") else text + "\n")
    else:
        logs.feed("stderr", f"{PREFIX} {failure.type_name}: {failure.message}\n")
    return Outcome(failure=failure)


def _redactor(token: str) -> Callable[[str], str]:
    if len(token) < 8:
        return lambda text: text
    return lambda text: text.replace(token, "***") if token in text else text


async def _remove(folder: Path) -> None:
    try:
        folder.rmdir()  # the usual case, no files: no thread needed
    except FileNotFoundError:
        pass
    except OSError:
        await asyncio.to_thread(shutil.rmtree, folder, True)


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    """uvloop when the step's environment has it (the runtime images and the embedded
    environment's runtime folder bring it): it takes about a fifth off a warm call's time
    in the worker (bench/worker_loop.py). The standard loop otherwise, or when asked for."""
    if kind == "uvloop" or kind == "auto":
        try:
            import uvloop  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            if kind == "uvloop":
                _say(f"{LOOP_VAR}=uvloop but uvloop is not installed: the standard loop runs")
        else:
            return uvloop.new_event_loop()  # type: ignore[no-any-return,unused-ignore]
    return asyncio.new_event_loop()


def _listen(host: str, port: int, path: Path | None = None) -> socket.socket:
    if path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # its folder is the launcher's (mode 700): only the same user may connect
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            sock.bind(str(path))
            sock.listen(socket.SOMAXCONN)
        except BaseException:
            sock.close()
            raise
        return sock
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
    except BaseException:
        sock.close()
        raise
    return sock


def _watch_parent(pid: int) -> None:
    """Exit when the launcher is gone (killed without stopping us): an orphaned worker
    would hold its port and memory forever."""
    while True:
        if os.getppid() != pid:
            # our stderr may be a pipe to the launcher that is gone (a killed shadow
            # runner): saying so raises then, and must not end this thread before the exit
            with contextlib.suppress(Exception):
                _say(f"the control service (pid {pid}) is gone; exiting")
            os._exit(EXIT_STOPPED)
        time.sleep(PARENT_CHECK_S)


def _route_output() -> None:
    # Before the import: loggers configured by the module (logging.basicConfig) keep a
    # reference to sys.stderr, which must already be the routing one.
    sys.stdout.flush()
    sys.stderr.flush()
    sys.stdout = RoutingStream("stdout", sys.stdout)
    sys.stderr = RoutingStream("stderr", sys.stderr)


def serve(environ: Mapping[str, str] | None = None) -> int:
    """Import the step, then serve until SIGTERM. Returns only on a start-up failure: a
    stopping worker leaves with os._exit, so that threads a step left behind cannot keep
    it alive."""
    try:
        config = ServeConfig.from_env(os.environ if environ is None else environ)
    except ConfigError as error:
        _say(str(error))
        return EXIT_CONFIG
    for warning in config.warnings:
        _say(warning)
    # The step's code has no use for it, and could print or pass it on.
    os.environ.pop(SECRET_VAR, None)
    if config.parent_pid is not None:
        threading.Thread(target=_watch_parent, args=(config.parent_pid,),
                         name="gristmill-parent", daemon=True).start()
    try:
        sock = _listen(config.host, config.port, config.socket_path)
    except OSError as error:
        _say(f"cannot listen on {config.host}:{config.port}: {error.strerror or error}")
        return EXIT_PORT_IN_USE if error.errno == errno.EADDRINUSE else EXIT_CONFIG
    warmup = _Warmup(sock, config.secret.encode("utf-8"))
    warmup.start()
    # The loop exists before the import: module-level code that calls
    # asyncio.get_event_loop() gets the loop that will run the async executions.
    loop = new_event_loop(config.loop)
    asyncio.set_event_loop(loop)
    # A crash dump must reach the real stderr directly.
    faulthandler.enable(file=sys.__stderr__ or sys.stderr, all_threads=True)
    _route_output()
    try:
        craft_context_module()  # importable by name from the module's first line on
        prepare_step_folder(config.step_dir)
        module, _ = import_step_module(config.step_dir, config.function_path)
        function = find_function(module, config.function_path, config.function_name)
    except StepFailure as failure:
        warmup.stop()
        sock.close()
        # The traceback's last line ("ModuleNotFoundError: No module named 'x'") is what
        # the control service shows as the deployment's status reason.
        text = failure.traceback_text or f"{failure.type_name}: {failure.message}"
        sys.stderr.write(text if text.endswith("\n") else text + "\n")
        sys.stderr.flush()
        return EXIT_IMPORT_FAILED
    warmup.stop()
    # What the import made lives as long as the worker: out of the collector's sight, the
    # collections that run between executions no longer scan it (a model's weights can
    # be millions of objects).
    gc.collect()
    gc.freeze()
    worker = Worker(config, function)
    try:
        worker.run_forever(loop, sock)
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(EXIT_STOPPED)
