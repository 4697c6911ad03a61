"""Run the real runner (``python -m gristmill.runtime run``) as a subprocess against the
control-service double, on step folders written in tmp_path."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.runtime._control_double import EXECUTION_ID, SDK_TOKEN, ControlDouble, serve


def write_step(folder: Path, files: Mapping[str, str]) -> Path:
    for relative, text in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def runner_env(url: str, step_dir: Path, io_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("GRISTMILL_", "CRAFT_AI_"))
    }
    env.update(
        GRISTMILL_ENVIRONMENT_URL=url,
        CRAFT_AI_ENVIRONMENT_URL=url,
        CRAFT_AI_CONTROL_URL=url,
        GRISTMILL_SDK_TOKEN=SDK_TOKEN,
        CRAFT_AI_SDK_TOKEN=SDK_TOKEN,
        GRISTMILL_EXECUTION_ID=EXECUTION_ID,
        CRAFT_AI_EXECUTION_ID=EXECUTION_ID,
        GRISTMILL_STEP_DIR=str(step_dir),
        GRISTMILL_IO_DIR=str(io_dir),
        SDK_VERBOSE_LOG="false",
        GRISTMILL_LOG_FLUSH_INTERVAL_S="0.2",
        GRISTMILL_RUNTIME_RETRY_BUDGET_S="0",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


RUNNER = [sys.executable, "-m", "gristmill.runtime", "run"]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    double: ControlDouble
    step_dir: Path
    io_dir: Path

    @property
    def finish(self) -> dict[str, Any]:
        assert self.double.finish is not None, self.stderr
        return self.double.finish

    @property
    def error(self) -> dict[str, str]:
        assert self.finish["status"] == "failed", self.finish
        error: dict[str, str] = self.finish["error"]
        return error


RunStep = Callable[..., Result]


def start_body(
    inputs: dict[str, Any] | None = None,
    outputs: list[dict[str, str]] | None = None,
    *,
    function_path: str = "src/main.py",
    function_name: str = "entry",
    file_inputs: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    return {
        "step_name": "s1",
        "function_path": function_path,
        "function_name": function_name,
        "inputs": inputs or {},
        "file_inputs": file_inputs or [],
        "outputs": outputs or [],
    }


@pytest.fixture
def run_step(tmp_path: Path) -> Iterator[RunStep]:
    """``run_step(files, double=..., **start_body_kwargs)`` runs the runner to its end;
    ``before(tmp_path)`` prepares the folders first."""

    def run(
        files: Mapping[str, str],
        double: ControlDouble | None = None,
        *,
        env: Mapping[str, str] | None = None,
        before: Callable[[Path], None] | None = None,
        **body: Any,
    ) -> Result:
        double = double or ControlDouble()
        if before is not None:
            before(tmp_path)
        if not double.start_body:
            double.start_body = start_body(**body)
        step_dir = write_step(tmp_path / "step", files)
        io_dir = tmp_path / "io"
        io_dir.mkdir(exist_ok=True)
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir(exist_ok=True)
        with serve(double):
            proc = subprocess.run(
                RUNNER,
                cwd=elsewhere,
                env=runner_env(double.url, step_dir, io_dir, **(env or {})),
                capture_output=True,
                text=True,
                timeout=120,
            )
        # The runner never prints the token (a step printing it is echoed as it is).
        if "GRISTMILL_SDK_TOKEN" not in str(files):
            assert SDK_TOKEN not in proc.stdout + proc.stderr
        return Result(proc.returncode, proc.stdout, proc.stderr, double, step_dir, io_dir)

    yield run
