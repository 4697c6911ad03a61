"""The folder that makes the runner and the SDK importable in every step environment.

Copied once per SDK version from this installation: the ``gristmill`` package and the
pure-Python packages it imports. Step environments reference it with a .pth line."""

from __future__ import annotations

import compileall
import hashlib
import importlib.util
import shutil
from pathlib import Path

import gristmill
from gristmill.runtime.craft_context_module import install_craft_context_module

PACKAGES = ("gristmill", "httpx", "httpcore", "h11", "anyio", "sniffio", "idna", "certifi",
            "typing_extensions", "exceptiongroup", "rich", "markdown_it", "mdurl", "pygments",
            # compiled: it imports only in environments of this interpreter's version
            # (the embedded ones); warm workers elsewhere fall back to the standard loop
            "uvloop")


def _location(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin) if spec.origin else None


def _fingerprint() -> str:
    """Version plus a digest of the SDK's files, so a changed checkout (same version, new
    code) gets a fresh copy instead of a stale one."""
    digest = hashlib.sha256()
    package = Path(gristmill.__file__).parent
    for path in sorted(package.rglob("*.py")):
        stat = path.stat()
        digest.update(f"{path.relative_to(package)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return f"{gristmill.__version__}-{digest.hexdigest()[:12]}"


def ensure_runtime_site(root: Path) -> Path:
    fingerprint = _fingerprint()
    target = root / f"site-{fingerprint}"
    if (target / ".complete").exists():
        return target
    scratch = root / f".site-{fingerprint}.building"
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
    # compiled now, so the first execution does not pay for it
    compileall.compile_dir(scratch, quiet=1, workers=1)
    (scratch / ".complete").write_text("ok\n")
    shutil.rmtree(target, ignore_errors=True)
    scratch.rename(target)
    return target
