"""What makes two runs of a cached node the same (pure): the step's code, its
environment, its function, and the node's input values (file inputs by content digest)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def code_digest(folder: Path) -> str:
    """A digest of a step's code folder: every file's relative path and bytes."""
    digest = hashlib.sha256()
    if folder.is_dir():
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def cache_key(code: str, environment: str | None, function: str,
              inputs: Mapping[str, Any]) -> str:
    """``inputs``: each input's value, or for a file ``{"file_sha256": ...}``."""
    payload = json.dumps({"code": code, "environment": environment, "function": function,
                          "inputs": inputs}, sort_keys=True, separators=(",", ":"),
                         default=str)
    return hashlib.sha256(payload.encode()).hexdigest()
