"""bench/fork_faults.py: the cost of a copy-on-write fault is derived from the faults that
writing to the parent's pages added over the floor, and refused when it added none; its
options are checked before anything forks; a short real run counts the faults it caused,
and the real fork server's own per fork; a baseline that is not a source tree is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.scripts._bench_modules import ROOT, bench_module


def fork_faults() -> ModuleType:
    return bench_module("fork_faults")


def test_the_cost_of_a_fault_is_the_kernel_time_writing_added_over_the_faults_it_added() -> None:
    module = fork_faults()
    floor = {"user_ms": 1.0, "kernel_ms": 1.2, "minor_faults": 240.0, "parent_kernel_ms": 1.0}
    written = {**floor, "kernel_ms": 6.7, "minor_faults": 1240.0}
    assert module.fault_cost(floor, written) == {"faults_added": 1000,
                                                 "kernel_us_per_fault": 5.5}
    with pytest.raises(ValueError, match="no more faults"):
        module.fault_cost(floor, {**floor, "kernel_ms": 2.0})


def test_rounds_are_averaged() -> None:
    module = fork_faults()
    assert module.merged([{"kernel_ms": 1.0, "minor_faults": 200.0},
                          {"kernel_ms": 2.0, "minor_faults": 300.0}]) == {
        "kernel_ms": 1.5, "minor_faults": 250.0}


@pytest.mark.parametrize("option", ["--children", "--rounds", "--pages"])
def test_counts_below_one_are_refused(option: str) -> None:
    refused = subprocess.run([sys.executable, str(ROOT / "bench" / "fork_faults.py"),
                              option, "0"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert f"{option} must be at least 1" in refused.stderr


def test_a_short_run_counts_a_fault_for_each_page_written(tmp_path: Path) -> None:
    # in a process of its own: the bench freezes its process's heap and forks it
    results_file = tmp_path / "fork_faults.json"
    bench_file = str(ROOT / "bench" / "fork_faults.py")
    script = (
        "import importlib.util, pathlib, sys\n"
        f"spec = importlib.util.spec_from_file_location('ff', {bench_file!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        f"module.RESULTS = pathlib.Path({str(results_file)!r})\n"
        "sys.argv = ['fork_faults.py', '--children', '4', '--rounds', '2', '--pages', '300']\n"
        "module.main()\n")
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, cwd=ROOT / "bench")  # it imports _env by name
    assert ran.returncode == 0, ran.stderr
    assert "one copy-on-write fault:" in ran.stdout
    results = json.loads(results_file.read_text())
    per_child = results["per_child"]
    assert set(per_child) == {"fork_and_exit", "write_pages", "warm_path_cold_parent",
                              "warm_path_warm_parent"}
    # each written page is one copy-on-write fault (a few more: the loop's own pages)
    added = per_child["write_pages"]["minor_faults"] - per_child["fork_and_exit"]["minor_faults"]
    assert 290 <= added <= 400
    assert results["copy_on_write"]["faults_added"] == round(added)
    assert results["copy_on_write"]["kernel_us_per_fault"] > 0
    # the real fork server's loop: more pages written per fork than the bare loop's
    (loop,) = results["fork_server_loop_per_fork"].values()
    assert loop["minor_faults"] > per_child["fork_and_exit"]["parent_minor_faults"] > 0


def test_a_baseline_that_is_not_a_source_tree_is_refused(tmp_path: Path) -> None:
    refused = subprocess.run([sys.executable, str(ROOT / "bench" / "fork_faults.py"),
                              "--children", "1", "--rounds", "1", "--pages", "10",
                              "--baseline", str(tmp_path)],
                             capture_output=True, text=True, timeout=120,
                             cwd=ROOT / "bench")
    assert refused.returncode == 1
    assert "is not a Gristmill source tree" in refused.stderr
