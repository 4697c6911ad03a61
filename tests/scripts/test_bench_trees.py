"""The benches' source-tree options (bench/_env.py): --baseline DIR and --tree DIR2 run
an environment from a source tree; a folder that is not one is refused at once, before
any environment starts (it would otherwise run this installation's code, or time out)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def bench_env() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_env", ROOT / "bench" / "_env.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def test_a_folder_that_is_not_a_source_tree_is_refused(tmp_path: Path) -> None:
    env = bench_env()
    with pytest.raises(SystemExit, match="is not a Gristmill source tree"):
        env.source_tree_env(tmp_path)
    with pytest.raises(SystemExit, match="git worktree add"):
        env.tree_env(tmp_path)


def test_the_side_under_test_runs_this_installation_or_the_tree_given() -> None:
    env = bench_env()
    assert env.tree_env(None) == {}  # this installation's code
    assert env.tree_env(ROOT) == {
        "PYTHONPATH": f"{ROOT / 'platform'}{os.pathsep}{ROOT / 'sdk'}"}
