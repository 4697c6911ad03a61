"""``python -m gristmill.runtime run``: one execution, from ``start`` to ``finish``.

The sequence and the exit codes are the contract in docs/internals/runtime-protocol.md:
0 when the execution succeeded (or was already started elsewhere), 1 when it failed,
3 when the control service could not be reached.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any, NoReturn

from gristmill.runtime import _craft_context, context
from gristmill.runtime._channel import RUNTIME_FD_VAR
from gristmill.runtime._control import (
    ACCESS_TOKEN_VAR,
    AlreadyStarted,
    ConfigError,
    ControlClient,
    ControlError,
    LocalWriteError,
    RunnerConfig,
    StatusError,
)
from gristmill.runtime._loader import (
    StepFailure,
    failure_from,
    find_function,
    import_step_module,
    prepare_step_folder,
)
from gristmill.runtime._logs import LogBuffer, LogShipper, OutputCapture
from gristmill.runtime.craft_context_module import MODULE_NAME as CRAFT_CONTEXT_MODULE

EXIT_SUCCEEDED = 0
EXIT_FAILED = 1
EXIT_UNREACHABLE = 3
PREFIX = "[gristmill]"


class Terminated(BaseException):
    """The worker got SIGTERM (cancelled, evicted, shut down) while the step ran.

    A BaseException, like KeyboardInterrupt, so that the step's ``except Exception`` does
    not swallow it.
    """


@dataclass(frozen=True)
class Job:
    """What ``POST /start`` answered."""

    function_path: str
    function_name: str
    inputs: dict[str, Any]
    file_inputs: list[tuple[str, str]]
    outputs: dict[str, str]  # name -> data_type
    step_name: str = ""

    @classmethod
    def parse(cls, payload: Any) -> Job:
        if not isinstance(payload, dict):
            raise StepFailure("RuntimeProtocolError", "POST /start answered no JSON object.")
        function_path = payload.get("function_path")
        function_name = payload.get("function_name")
        inputs = payload.get("inputs") or {}
        file_inputs = payload.get("file_inputs") or []
        outputs = payload.get("outputs") or []
        if (
            not isinstance(function_path, str)
            or not isinstance(function_name, str)
            or not isinstance(inputs, dict)
            or not isinstance(file_inputs, list)
            or not isinstance(outputs, list)
        ):
            raise StepFailure(
                "RuntimeProtocolError",
                "POST /start answered an object without function_path, function_name, "
                "inputs, file_inputs and outputs of the expected types.",
            )
        files: list[tuple[str, str]] = []
        for item in file_inputs:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise StepFailure("RuntimeProtocolError", f"Unreadable file input {item!r}.")
            filename = item.get("filename")
            files.append((item["name"], filename if isinstance(filename, str) else ""))
        declared: dict[str, str] = {}
        for item in outputs:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise StepFailure("RuntimeProtocolError", f"Unreadable output {item!r}.")
            declared[item["name"]] = str(item.get("data_type") or "")
        step_name = payload.get("step_name")
        return cls(
            function_path=function_path,
            function_name=function_name,
            inputs=dict(inputs),
            file_inputs=files,
            outputs=declared,
            step_name=step_name if isinstance(step_name, str) else "",
        )


@dataclass
class Outcome:
    outputs: dict[str, Any] = field(default_factory=dict)
    failure: StepFailure | None = None

    def payload(self) -> dict[str, Any]:
        if self.failure is None:
            return {"status": "succeeded", "outputs": self.outputs}
        return {"status": "failed", "error": self.failure.as_error()}


def _say(message: str) -> None:
    print(f"{PREFIX} {message}", file=sys.stderr, flush=True)


def _safe_component(value: str, fallback: str) -> str:
    # Names come from the server, but a file name from a user upload could still carry
    # "../": only the last path component is ever used.
    name = value.replace("\\", "/").rsplit("/", 1)[-1].strip()
    return fallback if name in ("", ".", "..") else name


def _install_execution_context(execution_id: str) -> None:
    """Make the execution id visible to the SDKs inside the step (see the protocol doc)."""
    os.environ["GRISTMILL_EXECUTION_ID"] = execution_id
    os.environ["CRAFT_AI_EXECUTION_ID"] = execution_id
    set_execution_context_vars(execution_id)


def set_execution_context_vars(execution_id: str) -> None:
    """The context variables only: the server mode sets them per execution, in the
    execution's own context, so that executions running at once each see their own id."""
    context.current_execution_id.set(execution_id)
    variable = getattr(craft_context_module(), "current_execution_id", None)
    if variable is not None and hasattr(variable, "set"):
        variable.set(execution_id)


def craft_context_module() -> ModuleType:
    """``__craft_internal_execution_context``, registered under that name if needed. The
    server mode calls it before importing the step, whose module-level code may import it."""
    module = sys.modules.get(CRAFT_CONTEXT_MODULE)
    if module is None:
        try:
            module = __import__(CRAFT_CONTEXT_MODULE)
        except ImportError:
            # Not shipped next to the SDK (an image with gristmill pip-installed): the
            # package's copy stands in under the top-level name.
            module = sys.modules[CRAFT_CONTEXT_MODULE] = _craft_context
    return module


def _jsonable(value: Any) -> Any:
    # numpy scalars and arrays (an accuracy as np.float32) are the usual surprise; they all
    # have tolist(), which gives plain Python values. Anything else is an error.
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def collect_outputs(
    result: Any, job: Job, where: str
) -> tuple[dict[str, Any], list[tuple[str, Path]]]:
    """Check the function's return value; split it into JSON outputs and files to upload.

    Declared outputs that are missing are left for the control service to report: it is
    the one that validates outputs, and one place keeps the messages consistent.
    """
    if result is None:
        return {}, []
    if not isinstance(result, Mapping):
        raise StepFailure(
            "OutputError",
            f"{where} must return a dict of outputs (or None), got {type(result).__name__}.",
        )
    not_text = [repr(key) for key in result if not isinstance(key, str)]
    if not_text:
        raise StepFailure("OutputError", f"{where} returned output names that are not "
                          f"strings: {', '.join(not_text)}.")
    unknown = [name for name in result if name not in job.outputs]
    if unknown:
        declared = ", ".join(job.outputs) or "none"
        raise StepFailure(
            "OutputError",
            f"{where} returned outputs the step does not declare: {', '.join(unknown)} "
            f"(declared: {declared}).",
        )
    values: dict[str, Any] = {}
    files: list[tuple[str, Path]] = []
    for name, value in result.items():
        if job.outputs[name] == "file":
            if value is None:
                continue
            files.append((name, _output_file(name, value)))
            continue
        try:
            values[name] = json.loads(json.dumps(value, default=_jsonable, allow_nan=False))
        except (TypeError, ValueError) as error:
            raise StepFailure(
                "OutputError", f"Output {name!r} cannot be sent as JSON: {error}."
            ) from None
    return values, files


def _output_file(name: str, value: Any) -> Path:
    raw = value.get("path") if isinstance(value, Mapping) else None
    if not isinstance(raw, str | os.PathLike):
        raise StepFailure(
            "OutputError",
            f"Output {name!r} is a file output: return {{'path': '<file>'}}, "
            f"got {type(value).__name__}.",
        )
    path = Path(os.fspath(raw))
    if not path.is_absolute():
        path = Path.cwd() / path
    if not path.exists():
        raise StepFailure("OutputError", f"Output {name!r}: the file {path} does not exist.")
    if not path.is_file():
        raise StepFailure("OutputError", f"Output {name!r}: {path} is not a regular file.")
    return path


def download_file_inputs(client: ControlClient, job: Job, io_dir: Path) -> dict[str, Any]:
    """Fetch the file inputs into ``io_dir/inputs/<name>/<filename>``; the step gets
    ``{"path": ...}`` for each. ``ControlError`` (control service unreachable) propagates."""
    kwargs: dict[str, Any] = {}
    for name, filename in job.file_inputs:
        folder = io_dir / "inputs" / _safe_component(name, "input")
        target = folder / _safe_component(filename, name)
        try:
            client.download_input(name, target)
        except StatusError as error:
            raise StepFailure(
                "InputError", f"File input {name!r} could not be downloaded: {error}."
            ) from None
        except LocalWriteError as error:
            raise StepFailure(
                "InputError", f"File input {name!r} could not be saved: {error}."
            ) from None
        kwargs[name] = {"path": str(target)}
    return kwargs


def upload_file_outputs(client: ControlClient, files: list[tuple[str, Path]]) -> None:
    """Send the file outputs (``PUT /outputs/<name>``); ``ControlError`` propagates."""
    for name, path in files:
        try:
            client.upload_output(name, path)
        except StatusError as error:
            raise StepFailure(
                "OutputError", f"Output {name!r} could not be uploaded: {error}."
            ) from None


def _on_sigterm(signum: int, frame: FrameType | None) -> NoReturn:
    raise Terminated("The worker received SIGTERM (cancelled, evicted or shut down).")


def check_arguments(function: Callable[..., Any], kwargs: dict[str, Any], where: str) -> None:
    """Fail with a message naming the inputs when they do not fit the signature, rather
    than with a TypeError raised from somewhere inside the call."""
    import inspect  # not at the top: it is only needed once the step runs

    try:
        signature: inspect.Signature | None = inspect.signature(function)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        try:
            signature.bind(**kwargs)
        except TypeError as error:
            given = ", ".join(kwargs) or "none"
            raise StepFailure(
                "TypeError",
                f"{where} cannot be called with the step's inputs ({given}): {error}.",
            ) from None


def call_step_function(function: Callable[..., Any], kwargs: dict[str, Any], where: str) -> Any:
    import inspect

    check_arguments(function, kwargs, where)
    result = function(**kwargs)
    if inspect.isawaitable(result):
        import asyncio

        async def wait(awaitable: Any) -> Any:
            return await awaitable

        # asyncio.run copies the current context: the execution id is visible in the task.
        result = asyncio.run(wait(result))
    return result


class Runner:
    def __init__(self, config: RunnerConfig, client: ControlClient) -> None:
        self.config = config
        self.client = client
        self.buffer = LogBuffer(redact=client.redact)
        self.capture = OutputCapture(self.buffer)

    def run(self) -> int:
        try:
            answer = self.client.start()
        except AlreadyStarted:
            # Submission is idempotent: another worker has it, or it is over.
            _say(
                f"execution {self.config.execution_id} was already started, cancelled or "
                "finished: nothing to run"
            )
            return EXIT_SUCCEEDED
        except ControlError as error:
            _say(f"could not start the execution: {self.client.redact(str(error))}")
            return EXIT_UNREACHABLE
        shipper = LogShipper(
            self.buffer,
            lambda lines: self.client.send_logs(lines, retry=False),
            self.config.log_flush_interval_s,
            on_gone=self._gone,
            is_gone=_is_gone,
            report=self.capture.report,
        )
        # The capture's thread starts the shipper once it has something to do; without
        # that thread, it starts now.
        if not self.capture.start(tick=shipper.start_when_due):
            shipper.start()
        try:
            outcome = self._execute(answer)
        except ControlError as error:
            self.capture.report(
                f"{PREFIX} lost the control service: {self.client.redact(str(error))}"
            )
            shipper.stop()
            self.capture.stop()
            return EXIT_UNREACHABLE
        shipper.stop()
        self.capture.stop()
        return self._finish(outcome)

    def _execute(self, answer: Any) -> Outcome:
        try:
            job = Job.parse(answer)
            kwargs = self._prepare(job)
            where = f"{job.function_name}() in {job.function_path}"
            previous = signal.signal(signal.SIGTERM, _on_sigterm)
            try:
                module, _ = import_step_module(self.config.step_dir, job.function_path)
                function = find_function(module, job.function_path, job.function_name)
                try:
                    result = call_step_function(function, kwargs, where)
                except StepFailure:
                    raise
                except BaseException as error:
                    raise failure_from(error) from None
            finally:
                signal.signal(signal.SIGTERM, previous)
            values, files = collect_outputs(result, job, where)
            upload_file_outputs(self.client, files)
            return Outcome(outputs=values)
        except ControlError:
            raise
        except StepFailure as failure:
            return self._failed(failure)
        except Exception as error:
            # A runner bug, or step values that break while being read (a mapping whose
            # items() raises): still a result the control service must get.
            return self._failed(failure_from(error, "The runner failed: "))

    def _failed(self, failure: StepFailure) -> Outcome:
        failure.message = self.client.redact(failure.message)
        failure.traceback_text = self.client.redact(failure.traceback_text)
        # Into the step's logs too (the capture is still on), and the pod log.
        if failure.traceback_text:
            sys.stderr.write(failure.traceback_text)
        else:
            _say(f"{failure.type_name}: {failure.message}")
        sys.stderr.flush()
        return Outcome(failure=failure)

    def _prepare(self, job: Job) -> dict[str, Any]:
        """Set the step folder and the execution context up; fetch the file inputs."""
        _install_execution_context(self.config.execution_id)
        prepare_step_folder(self.config.step_dir)
        kwargs = dict(job.inputs)
        if job.file_inputs:
            kwargs.update(download_file_inputs(self.client, job, self._io_dir()))
        return kwargs

    def _io_dir(self) -> Path:
        if self.config.io_dir is not None:
            self.config.io_dir.mkdir(parents=True, exist_ok=True)
            return self.config.io_dir
        import tempfile

        return Path(tempfile.mkdtemp(prefix="gristmill-io-"))

    def _finish(self, outcome: Outcome) -> int:
        payload = outcome.payload()
        try:
            # Whatever the shipper could not send goes first, in order; the last batch
            # rides on finish.
            while True:
                lines = self.buffer.take()
                if not self.buffer.pending():
                    payload["logs"] = lines
                    break
                self.client.send_logs(lines)
            answer = self.client.finish(payload)
        except StatusError as error:
            if error.status == 409:
                _say("the execution was already finished or cancelled; this result was not kept")
                return EXIT_FAILED
            _say(f"the control service refused the result: {error}")
            return EXIT_UNREACHABLE
        except ControlError as error:
            _say(f"could not report the result: {self.client.redact(str(error))}")
            return EXIT_UNREACHABLE
        status = answer.get("status") if isinstance(answer, dict) else None
        if status is None:
            status = payload["status"]
        if status == "succeeded":
            return EXIT_SUCCEEDED
        reason = answer.get("reason") if isinstance(answer, dict) else None
        if reason and outcome.failure is None:
            _say(f"execution failed: {reason}")
        return EXIT_FAILED

    def _gone(self, error: BaseException) -> None:
        # The control service has closed the execution (cancelled, timed out, failed by
        # the reconciler): nothing the step does now will be kept, so stop using the
        # machine at once. A thread cannot stop the step's code any other way.
        self.capture.report(
            f"{PREFIX} the control service no longer accepts this execution ({error}); "
            "stopping"
        )
        os._exit(EXIT_FAILED)


def _is_gone(error: BaseException) -> bool:
    return isinstance(error, StatusError) and error.status in (404, 409, 410)


def run(environ: Mapping[str, str] | None = None) -> int:
    try:
        config = RunnerConfig.from_env(os.environ if environ is None else environ)
    except ConfigError as error:
        _say(str(error))
        return EXIT_UNREACHABLE
    if environ is None or environ is os.environ:
        # the runner's own: the step's code (and its SDK) go through the execution token
        os.environ.pop(ACCESS_TOKEN_VAR, None)
        os.environ.pop(RUNTIME_FD_VAR, None)
    for warning in config.warnings:
        _say(warning)
    client = ControlClient(config)
    code = Runner(config, client).run()
    _bound_the_exit(code, config.exit_grace_s)
    return code


def _bound_the_exit(code: int, grace_s: float) -> None:
    """Make sure the worker ends even if the step left non-daemon threads running.

    The interpreter waits for those threads before exiting, and a worker that never exits
    holds its pod (or the executor's slot) after its result is in. They get ``grace_s`` to
    end on their own, then the process exits with ``code`` regardless.
    """
    lingering = [
        thread.name
        for thread in threading.enumerate()
        if thread is not threading.main_thread() and not thread.daemon and thread.is_alive()
    ]
    if not lingering:
        return

    def watchdog() -> None:
        time.sleep(grace_s)
        _say(
            f"threads started by the step are still running after {grace_s:g} s "
            f"({', '.join(lingering)}); exiting anyway"
        )
        os._exit(code)

    threading.Thread(target=watchdog, name="gristmill-exit", daemon=True).start()
