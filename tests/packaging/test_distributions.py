"""`python -m build` makes a wheel and an sdist (the wheel built from the sdist, so both are
checked), and the wheel installed in a clean virtual environment runs `gristmill up`.

Bounded: one build, one install (dependencies come from pip's cache when warm), one start.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("build", reason="the `build` package (dev extra) is not installed")
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert "License classifiers are deprecated" not in built.stderr
    assert "project.license` as a TOML table is deprecated" not in built.stderr
    return out


def test_build_makes_a_wheel_and_an_sdist_with_the_migrations(dist: Path) -> None:
    (wheel,) = dist.glob("gristmill-*-py3-none-any.whl")
    (sdist,) = dist.glob("gristmill-*.tar.gz")
    names = zipfile.ZipFile(wheel).namelist()
    for expected in ("gristmill/cli/app.py", "gristmill/py.typed",
                     "gristmill_platform/db/migrations/script.py.mako",
                     "gristmill_platform/py.typed"):
        assert expected in names
    assert any(n.startswith("gristmill_platform/db/migrations/versions/") for n in names)
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    assert "License-Expression: Apache-2.0" in zipfile.ZipFile(wheel).read(metadata).decode()
    with tarfile.open(sdist) as archive:
        members = archive.getnames()
    assert any(m.endswith("/pyproject.toml") for m in members)
    assert any(m.endswith("/README.md") for m in members)


def test_the_wheel_runs_gristmill_up_in_a_clean_virtualenv(dist: Path, tmp_path: Path) -> None:
    (wheel,) = dist.glob("gristmill-*-py3-none-any.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
         "--disable-pip-version-check", f"{wheel}[platform]"],
        capture_output=True, text=True, timeout=900)
    if installed.returncode != 0 and ("NewConnectionError" in installed.stderr
                                      or "No matching distribution" in installed.stderr):
        pytest.skip(f"no package index reachable for the dependencies: "
                    f"{installed.stderr.strip().splitlines()[-1]}")
    assert installed.returncode == 0, installed.stderr[-3000:]

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRISTMILL_")}
    # run from elsewhere so nothing of the clone can be imported by accident
    server = subprocess.Popen(
        [str(venv / "bin" / "gristmill"), "up", "--data-dir", str(tmp_path / "data"),
         "--port", str(port)],
        cwd=tmp_path, env={**env, "COLUMNS": "200"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        ready = False
        while not ready and time.monotonic() < deadline:
            assert server.poll() is None, server.stdout.read() if server.stdout else ""
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                time.sleep(0.2)
        assert ready, "gristmill up from the wheel did not become ready"
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=60)
    assert "export GRISTMILL_SDK_TOKEN=gm_" in output
    assert str(venv) in subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import gristmill_platform; "
         "print(gristmill_platform.__file__)"],
        capture_output=True, text=True, check=True, cwd=tmp_path).stdout
