"""The runner's command line, its import weight, and the craft-ai-sdk context module."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import gristmill.runtime
from gristmill.runtime import _craft_context
from gristmill.runtime.craft_context_module import (
    MODULE_NAME,
    SOURCE,
    install_craft_context_module,
)

SDK_DIR = Path(gristmill.runtime.__file__).resolve().parents[2]
HEAVY = ("httpx", "rich", "typer", "gristmill.client")


def test_help_lists_the_run_command() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gristmill.runtime", "--help"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0
    assert "run" in proc.stdout and "run one execution" in proc.stdout


def test_no_command_prints_usage_and_exits_2() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gristmill.runtime"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "usage:" in proc.stdout


def test_run_help_documents_the_environment() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gristmill.runtime", "run", "--help"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0
    assert "GRISTMILL_EXECUTION_ID" in proc.stdout and "Exit codes" in proc.stdout


def test_the_runner_itself_imports_nothing_heavy() -> None:
    # gristmill/__init__.py is bypassed (an empty package object stands in), so this checks
    # what the runtime package pulls in by itself.
    code = f"""
import sys, types
package = types.ModuleType("gristmill")
package.__path__ = [{str(SDK_DIR / "gristmill")!r}]
sys.modules["gristmill"] = package
import gristmill.runtime.cli, gristmill.runtime.runner, gristmill.runtime.context
heavy = [name for name in {HEAVY!r} if name in sys.modules]
print(heavy)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_python_m_gristmill_runtime_imports_nothing_heavy() -> None:
    code = (
        "import runpy, sys; sys.argv = ['x', '--help']\n"
        "try:\n    runpy.run_module('gristmill.runtime', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        f"print([n for n in {HEAVY!r} if n in sys.modules], file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.stderr.strip().splitlines()[-1] == "[]"


def test_context_module_source_matches_the_packaged_copy() -> None:
    assert Path(_craft_context.__file__).read_text(encoding="utf-8") == SOURCE


def test_install_craft_context_module(tmp_path: Path) -> None:
    target = install_craft_context_module(tmp_path / "site")
    assert target == tmp_path / "site" / f"{MODULE_NAME}.py"
    assert target.read_text(encoding="utf-8") == SOURCE
    assert install_craft_context_module(tmp_path / "site") == target  # idempotent
    assert [p.name for p in target.parent.iterdir()] == [target.name]
    spec = importlib.util.spec_from_file_location(MODULE_NAME, target)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.current_execution_id.set("e1")
    assert module.current_execution_id.get() == "e1"
    assert module.current_execution_id.name == "current_execution_id"


def test_installed_context_module_is_used_by_the_runner(tmp_path: Path) -> None:
    # The copy in the runtime site folder and the one craft-ai-sdk imports are one module.
    site = tmp_path / "site"
    install_craft_context_module(site)
    step = tmp_path / "step"
    step.mkdir()
    code = f"""
import sys
sys.path.insert(0, {str(site)!r})
from gristmill.runtime.runner import _install_execution_context
_install_execution_context("e-42")
import __craft_internal_execution_context as module
print(module.__file__, module.current_execution_id.get())
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=step)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(site / f"{MODULE_NAME}.py"), "e-42"]
