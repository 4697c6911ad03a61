"""The benches' shared modules (bench/_*.py), loaded from their files: bench/ is not a
package, its scripts import each other by name."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def bench_module(name: str) -> ModuleType:
    """bench/<name>.py as a module named bench<name> (its dataclasses look it up in
    sys.modules)."""
    spec = importlib.util.spec_from_file_location(f"bench{name}", ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run_on_one_cpu(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """bench/<script> with these arguments, confined to a single CPU (for the options
    that need two or more)."""
    one = min(os.sched_getaffinity(0))
    return subprocess.run([sys.executable, str(ROOT / "bench" / script), *args],
                          capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: os.sched_setaffinity(0, {one}))
