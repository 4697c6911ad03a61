"""The real craft-ai-sdk 0.74.7 client, unchanged, against a running environment.

That client needs newer libraries than ours (requests, pyjwt, weaviate-client), so it
lives in a virtual environment of its own, `.venv-craft074/` at the top of the checkout
(gitignored): made on first use (a few seconds with pip's cache), reused afterwards. Each
test writes a client script and runs it with that interpreter, in isolated mode, against
the `gristmill_env` fixture (SQLite and PostgreSQL); the script prints its findings as JSON
and the test checks them here."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-craft074"
CLIENT = "craft-ai-sdk==0.74.7"
VERSION = "0.74.7"
MARK = "@@RESULT@@"

PRELUDE = '''
import json, os, sys
from craft_ai_sdk import CraftAiSdk
from craft_ai_sdk.exceptions import SdkException

ARGS = json.loads(os.environ["COMPAT_ARGS"])
sdk = CraftAiSdk(verbose_log=False)


def emit(value):
    print("@@RESULT@@" + json.dumps(value, default=str), flush=True)


def error_of(call, *args, **kwargs):
    """What SdkException a call raises, as a dict (None if it does not raise)."""
    try:
        call(*args, **kwargs)
    except SdkException as exc:
        return {"status_code": exc.status_code, "name": exc.name, "message": exc.message}
    return None
'''


def _client_version(python: Path) -> str | None:
    if not python.exists():
        return None
    found = subprocess.run(
        [str(python), "-I", "-c", "from craft_ai_sdk.sdk import CraftAiSdk; "
                                  "print(CraftAiSdk._version)"],
        capture_output=True, text=True, timeout=60, check=False)
    return found.stdout.strip() if found.returncode == 0 else None


def ensure_client_venv() -> Path:
    """The interpreter of .venv-craft074, made (once, under a lock) if missing or stale."""
    python = VENV / "bin" / "python"
    with open(ROOT / ".venv-craft074.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _client_version(python) == VERSION:
            return python
        # made in place under the lock; an interrupted attempt fails the version check
        # above and is made again
        shutil.rmtree(VENV, ignore_errors=True)
        base = getattr(sys, "_base_executable", sys.executable)
        steps = [[base, "-m", "venv", str(VENV)],
                 [str(python), "-m", "pip", "install", "--quiet",
                  "--disable-pip-version-check", CLIENT]]
        for command in steps:
            done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                                  check=False)
            if done.returncode != 0:
                pytest.skip(f"could not install {CLIENT} in its own virtualenv "
                            f"({' '.join(command[:3])} failed: {done.stderr[-500:]}); "
                            "the craft-ai-sdk 0.74 compatibility suite is skipped")
        return python


@pytest.fixture(scope="session")
def client_python() -> Path:
    return ensure_client_venv()


@pytest.fixture(scope="session")
def client_site(client_python: Path) -> str:
    """The client venv's site-packages: a step borrows the client from there (see
    test_pipelines.py) instead of installing it in each step environment."""
    found = subprocess.run(
        [str(client_python), "-I", "-c", "import craft_ai_sdk, os; "
                                         "print(os.path.dirname(os.path.dirname("
                                         "craft_ai_sdk.__file__)))"],
        capture_output=True, text=True, timeout=60, check=True)
    return found.stdout.strip()


Client = Callable[..., Any]


@pytest.fixture
def client(client_python: Path, gristmill_env: Any, tmp_path: Path) -> Iterator[Client]:
    """client(script, **args): run a client script (PRELUDE + script; `sdk`, `ARGS`,
    `emit`, `error_of` in scope) and return what it emitted."""
    counter = iter(range(1000))

    def run(script: str, **args: Any) -> Any:
        path = tmp_path / f"client_{next(counter)}.py"
        path.write_text(PRELUDE + textwrap.dedent(script))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", str(tmp_path)),
            "CRAFT_AI_SDK_TOKEN": gristmill_env.sdk_token,
            "CRAFT_AI_ENVIRONMENT_URL": gristmill_env.url,
            "CRAFT_AI_CONTROL_URL": gristmill_env.url,
            "SDK_VERBOSE_LOG": "false",
            # read at import: uploads above 3 MB go through the multipart routes
            "CRAFT_AI__MULTIPART_THRESHOLD__B": str(3 * 1024 * 1024),
            "CRAFT_AI__MULTIPART_PART_SIZE__B": str(1024 * 1024),
            "COMPAT_ARGS": json.dumps(args),
        }
        done = subprocess.run([str(client_python), "-I", str(path)], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=600,
                              check=False)
        results = [line[len(MARK):] for line in done.stdout.splitlines()
                   if line.startswith(MARK)]
        if done.returncode != 0 or not results:
            raise AssertionError(f"client script failed ({done.returncode}):\n"
                                 f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
        return json.loads(results[-1])

    yield run
