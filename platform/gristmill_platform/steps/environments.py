"""Python environments for local workers: one virtual environment per distinct
(interpreter, requirements) pair, built once and shared by every step that needs it."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from gristmill.languages import parse_language
from gristmill_platform.timeouts import within

PIP_TIMEOUT_S = 1800
READY_MARK = ".gristmill-ready"

_FAILED_REQUIREMENT = [
    re.compile(r"No matching distribution found for (\S+)"),
    re.compile(r"Could not find a version that satisfies the requirement (\S+)"),
    re.compile(r"Failed to build (\S+)"),
    re.compile(r"Failed building wheel for (\S+)"),
    re.compile(r"Invalid requirement: '([^']+)'"),
    re.compile(r"ERROR: Cannot install (\S+)"),
]


class EnvironmentBuildError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Interpreter:
    executable: str
    version: str  # "3.11"
    note: str | None  # why this interpreter stands in for the requested one


def interpreter_for(language: str) -> Interpreter:
    """The local interpreter for a step language. The local backend cannot pull a
    container image: it uses python3.X from PATH, or this Python, and says so."""
    wanted = parse_language(language).python_version
    current = f"{sys.version_info.major}.{sys.version_info.minor}"
    if wanted == current:
        return Interpreter(sys.executable, current, None)
    found = shutil.which(f"python{wanted}")
    if found and _reports_version(found, wanted):
        return Interpreter(found, wanted, None)
    return Interpreter(
        sys.executable, current,
        f"Python {wanted} is not installed on this machine: the local backend runs this "
        f"step with Python {current}. Install python{wanted} to match, or use the "
        "Kubernetes backend, which runs the exact image.",
    )


@functools.cache
def _reports_version(executable: str, wanted: str) -> bool:
    """A python3.X on PATH may be a shim (pyenv) that fails when that version is not
    selected: ask it."""
    try:
        result = subprocess.run(
            [executable, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and result.stdout.strip() == wanted


def environment_key(interpreter: Interpreter, requirements: str | None) -> str:
    digest = hashlib.sha256()
    digest.update(interpreter.executable.encode() + b"\0" + interpreter.version.encode())
    digest.update(b"\0" + (requirements or "").strip().encode())
    return digest.hexdigest()[:24]


def failed_requirement(pip_output: str) -> str | None:
    for pattern in _FAILED_REQUIREMENT:
        match = pattern.search(pip_output)
        if match:
            return match.group(1).rstrip(".,")
    return None


def site_packages(venv: Path) -> Path:
    matches = sorted((venv / "lib").glob("python3*/site-packages"))
    if not matches:
        raise EnvironmentBuildError(f"no site-packages in {venv}")
    return matches[0]


def python_of(venv: Path) -> Path:
    return venv / "bin" / "python"


class EnvironmentBuilder:
    def __init__(self, root: Path, runtime_site: Path) -> None:
        self.root = root
        self.runtime_site = runtime_site
        self._locks: dict[str, asyncio.Lock] = {}

    def path_of(self, key: str) -> Path:
        return self.root / key

    def is_ready(self, key: str) -> bool:
        return (self.path_of(key) / READY_MARK).exists()

    async def ensure(
        self,
        key: str,
        interpreter: Interpreter,
        requirements_file: Path | None,
        env: Mapping[str, str],
        log: Callable[[str], None],
    ) -> Path:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            target = self.path_of(key)
            if self.is_ready(key):
                log(f"Reusing the Python environment {key} (same interpreter and requirements)")
                return target
            scratch = self.root / f".{key}.building"
            shutil.rmtree(scratch, ignore_errors=True)
            self.root.mkdir(parents=True, exist_ok=True)
            with_pip = requirements_file is not None
            log(f"Creating a Python {interpreter.version} environment")
            args = [interpreter.executable, "-m", "venv", str(scratch)]
            if not with_pip:
                args.insert(3, "--without-pip")
            await self._run(args, env, log, timeout=300)
            # The runner and the SDK come from the platform, after the step's own packages:
            # a .pth line is appended to sys.path, so a requirement pinning another
            # version of httpx (say) takes precedence.
            (site_packages(scratch) / "gristmill-runtime.pth").write_text(
                f"{self.runtime_site}\n")
            if requirements_file is not None:
                log(f"Installing {requirements_file.name}")
                await self._run(
                    [str(python_of(scratch)), "-m", "pip", "install", "--no-input",
                     "--disable-pip-version-check", "--progress-bar", "off",
                     "-r", str(requirements_file)],
                    env, log, timeout=PIP_TIMEOUT_S, what="pip install",
                )
            (scratch / READY_MARK).write_text("ok\n")
            shutil.rmtree(target, ignore_errors=True)
            scratch.rename(target)
            return target

    async def remove_unused(self, used: set[str]) -> list[str]:
        """Remove the environments no step uses any more (their steps were deleted). The
        caller makes sure no build is between creating an environment and recording its
        key on the step (steps/builds.py prune_environments)."""
        if not self.root.is_dir():
            return []
        removed = []
        for path in sorted(self.root.iterdir()):
            key = path.name
            if key.startswith(".") or key in used or not path.is_dir():
                continue
            async with self._locks.setdefault(key, asyncio.Lock()):
                await asyncio.to_thread(shutil.rmtree, path, True)
            removed.append(key)
        return removed

    async def _run(self, args: list[str], env: Mapping[str, str], log: Callable[[str], None],
                   *, timeout: float, what: str | None = None) -> str:
        process = await asyncio.create_subprocess_exec(
            *args, env=dict(env), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        lines: list[str] = []

        async def pump() -> None:
            assert process.stdout is not None
            async for raw in process.stdout:
                line = raw.decode(errors="replace").rstrip()
                lines.append(line)
                log(line)

        try:
            await within(asyncio.gather(pump(), process.wait()), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise EnvironmentBuildError(
                f"{what or args[0]} took longer than {int(timeout)} s") from None
        output = "\n".join(lines)
        if process.returncode != 0:
            package = failed_requirement(output)
            if package:
                raise EnvironmentBuildError(f"pip could not install {package!r}: check the "
                                            "name and version in your requirements file")
            last = next((line for line in reversed(lines) if line.strip()), "")
            raise EnvironmentBuildError(
                f"{what or 'creating the environment'} failed (exit code "
                f"{process.returncode}): {last}")
        return output
