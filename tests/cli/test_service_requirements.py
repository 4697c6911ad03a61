"""The commands that run or administer an environment say plainly what they lack (a Python
the control service runs on, or the service's package) and create nothing; importing the
service on an older Python says why; scripts/setup.sh picks a Python that fits."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gristmill.cli import platform_cmds
from gristmill.cli.app import app
from gristmill.service_requirements import service_python_problem
from tests.platform.test_step_pythons import find_python

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_the_service_needs_python_3_11() -> None:
    problem = service_python_problem((3, 10, 13), "/opt/py/bin/python3.10")
    assert problem is not None
    assert "needs Python 3.11 or newer" in problem
    assert "this is Python 3.10.13 (/opt/py/bin/python3.10)" in problem
    assert "PYTHON=python3.12 scripts/setup.sh" in problem
    for fits in ((3, 11, 0), (3, 12, 1), (3, 13, 0), (4, 0, 0)):
        assert service_python_problem(fits) is None
    assert service_python_problem() is None  # the Python running these tests


def _commands(tmp_path: Path) -> list[list[str]]:
    data = str(tmp_path / "env")
    return [["up", "--data-dir", data], ["serve", "--data-dir", data],
            ["db", "upgrade", "--data-dir", data], ["users", "list", "--data-dir", data],
            ["token", "list", "--data-dir", data],
            ["backup", "--to", str(tmp_path / "b.tar"), "--data-dir", data],
            ["restore", str(tmp_path / "b.tar"), "--data-dir", data]]


def test_on_an_older_python_every_service_command_says_so_and_creates_nothing(
        tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(platform_cmds, "service_python_problem",
                        lambda: service_python_problem((3, 10, 13), "/opt/python3.10"))
    for command in _commands(tmp_path):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, (command, result.output)
        assert "needs Python 3.11 or newer" in result.output, command
        assert "Traceback" not in result.output
        assert not (tmp_path / "env").exists() and not (tmp_path / "b.tar").exists()


def test_without_the_service_package_every_service_command_says_how_to_install_it(
        tmp_path, monkeypatch) -> None:
    # None in sys.modules: importing it fails, as when the platform extra is missing
    monkeypatch.setitem(sys.modules, "gristmill_platform.settings", None)
    for command in _commands(tmp_path):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, (command, result.output)
        output = " ".join(result.output.split())
        assert "The Gristmill control service is not installed" in output, command
        # printed as it is to be typed: the brackets are not taken for markup
        assert "pip install '.[platform]'" in output
        assert not (tmp_path / "env").exists()


def test_importing_the_service_on_python_3_10_says_why() -> None:
    python = find_python("3.10")
    if python is None:
        pytest.skip("Python 3.10 is not installed on this machine (looked on PATH, in "
                    "~/.pyenv/versions and /usr/bin)")
    result = subprocess.run(
        [python, "-c", "import gristmill_platform"], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": f"{ROOT / 'platform'}{os.pathsep}{ROOT / 'sdk'}"},
        timeout=60, check=False)
    assert result.returncode == 1
    assert "ImportError: Gristmill's control service needs Python 3.11 or newer; this is " \
           "Python 3.10" in result.stderr


def _fake_path(tmp_path: Path, pythons: dict[str, str]) -> str:
    """A PATH whose python3.X are the given interpreters, with what setup.sh calls
    besides (no other Python on it)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name, target in pythons.items():
        (folder / name).symlink_to(target)
    for tool in ("bash", "dirname", "id", "cat"):
        found = shutil.which(tool)
        if found:
            (folder / tool).symlink_to(found)
    return str(folder)


def test_setup_refuses_a_python_older_than_the_service_needs(tmp_path) -> None:
    python = find_python("3.10")
    if python is None:
        pytest.skip("Python 3.10 is not installed on this machine")
    venv = tmp_path / "venv"
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup.sh")], capture_output=True, text=True,
        env={"PATH": _fake_path(tmp_path, {"python3": python}), "HOME": str(tmp_path),
             "GRISTMILL_VENV": str(venv), "GRISTMILL_EXTRAS": "platform"},
        timeout=120, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Gristmill needs Python 3.11 or newer for gristmill[platform]" in result.stderr
    assert "python3 is Python 3.10" in result.stderr
    assert not venv.exists()


def test_setup_takes_a_newer_python3_x_when_python3_is_too_old(tmp_path) -> None:
    old, new = find_python("3.10"), find_python(
        f"{sys.version_info.major}.{sys.version_info.minor}")
    if old is None or new is None:
        pytest.skip("needs Python 3.10 and this Python's python3.X on this machine")
    name = f"python{sys.version_info.major}.{sys.version_info.minor}"
    venv = tmp_path / "venv"
    # the venv exists already (with no Gristmill): setup.sh checks it, then pip runs
    # offline against nothing, which fails; what is checked is the choice it announced
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup.sh")], capture_output=True, text=True,
        env={"PATH": _fake_path(tmp_path, {"python3": old, name: new}),
             "HOME": str(tmp_path), "GRISTMILL_VENV": str(venv),
             "GRISTMILL_EXTRAS": "platform", "PIP_NO_INDEX": "1"},
        timeout=300, check=False)
    assert f"==> using {name} (Python {sys.version_info.major}." in result.stdout, \
        result.stdout + result.stderr
    assert "python3 is older than 3.11" in result.stdout
    made = subprocess.run([str(venv / "bin" / "python"), "-c",
                           "import sys; print(sys.version_info[:2])"],
                          capture_output=True, text=True, check=True)
    assert made.stdout.strip() == str(tuple(sys.version_info[:2]))
