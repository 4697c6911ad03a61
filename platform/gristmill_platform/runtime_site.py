"""The folder that makes the runner and the SDK importable in every step environment.

Copied once per SDK version from this installation: the ``gristmill`` package and the
pure-Python packages it imports. Step environments reference it with a .pth line."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import gristmill
from gristmill.runtime.craft_context_module import install_craft_context_module

PACKAGES = ("gristmill", "httpx", "httpcore", "h11", "anyio", "sniffio", "idna", "certifi",
            "typing_extensions", "exceptiongroup", "rich", "markdown_it", "mdurl", "pygments")


def _location(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin) if spec.origin else None


def ensure_runtime_site(root: Path) -> Path:
    target = root / f"site-{gristmill.__version__}"
    if (target / ".complete").exists():
        return target
    scratch = root / f".site-{gristmill.__version__}.building"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    for name in PACKAGES:
        location = _location(name)
        if location is None:
            continue
        if location.is_dir():
            shutil.copytree(location, scratch / location.name, symlinks=False,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(location, scratch / location.name)
    # craft-ai-sdk looks for this module to find the current execution (contract §5.1)
    install_craft_context_module(scratch)
    (scratch / ".complete").write_text("ok\n")
    shutil.rmtree(target, ignore_errors=True)
    scratch.rename(target)
    return target
