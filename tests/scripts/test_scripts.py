"""scripts/up.sh and scripts/test.sh as a newcomer runs them, with the tools they call
replaced by recording stubs on PATH (apt-get, dpkg, id) and in a stub virtualenv, so
what each script would install or start is observable without root or a network."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEST_ONLY = ("openssh-server", "prometheus", "prometheus-node-exporter")


def _stub(path: Path, body: str) -> None:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _sandbox(tmp_path: Path) -> tuple[dict[str, str], Path]:
    calls = tmp_path / "calls.log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stub(bin_dir / "id", 'echo 0')                        # as if root
    _stub(bin_dir / "dpkg", 'exit 1')                      # nothing installed
    _stub(bin_dir / "apt-get", f'echo "apt-get $*" >> {calls}')
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    for tool in ("python", "ruff", "mypy", "gristmill"):
        _stub(venv_bin / tool, f'echo "{tool} $*" >> {calls}')
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "GRISTMILL_VENV": str(tmp_path / "venv"), "GRISTMILL_EXAMPLE": "0",
           "GRISTMILL_DATA_DIR": str(tmp_path / "data")}
    env.pop("GRISTMILL_SYSTEM_PACKAGES", None)
    calls.touch()
    return env, calls


def test_up_installs_no_test_only_system_package(tmp_path) -> None:
    env, calls = _sandbox(tmp_path)
    subprocess.run(["bash", "scripts/up.sh", "--port", "9999"], cwd=ROOT, env=env,
                   check=True, timeout=60, capture_output=True)
    log = calls.read_text()
    assert "gristmill up --data-dir" in log and "--port 9999" in log
    assert "apt-get" not in log


def test_the_test_command_installs_the_test_only_system_packages(tmp_path) -> None:
    env, calls = _sandbox(tmp_path)
    subprocess.run(["bash", "scripts/test.sh", "tests/scripts"], cwd=ROOT, env=env,
                   check=True, timeout=60, capture_output=True)
    installs = [line for line in calls.read_text().splitlines()
                if line.startswith("apt-get") and " install " in line]
    assert installs, calls.read_text()
    for package in TEST_ONLY:
        assert package in installs[0]


def test_up_help_on_an_existing_data_dir_prints_help_and_starts_nothing(tmp_path) -> None:
    env, calls = _sandbox(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    (data / "credentials.env").write_text("export GRISTMILL_SDK_TOKEN=x\n")
    env["GRISTMILL_EXAMPLE"] = "1"
    done = subprocess.run(["bash", "scripts/up.sh", "--help"], cwd=ROOT, env=env,
                          timeout=30, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert calls.read_text().splitlines() == ["gristmill up --help"]
    assert "Traceback" not in done.stderr


def test_up_help_before_any_setup_prints_the_script_usage(tmp_path) -> None:
    env, _ = _sandbox(tmp_path)
    env["GRISTMILL_VENV"] = str(tmp_path / "no-venv-yet")
    done = subprocess.run(["bash", "scripts/up.sh", "-h"], cwd=ROOT, env=env,
                          timeout=30, capture_output=True, text=True)
    assert done.returncode == 0
    assert "gristmill up" in done.stdout and "GRISTMILL_DATA_DIR" in done.stdout
    assert not (tmp_path / "no-venv-yet").exists()
