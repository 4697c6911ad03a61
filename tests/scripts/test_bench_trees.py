"""The benches' source-tree options (bench/_env.py): --baseline DIR and --tree DIR2 run
an environment from a source tree; a folder that is not one is refused at once, before
any environment starts (it would otherwise run this installation's code, or time out)."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

import pytest

from tests.scripts._bench_modules import ROOT, bench_module


def bench_env() -> ModuleType:
    return bench_module("_env")


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
