"""The environment's signing key: from settings, or generated once into the data dir."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def load_or_create_secret_key(data_dir: Path) -> str:
    path = data_dir / "secret.key"
    if path.exists():
        key = path.read_text().strip()
        if len(key) >= 32:
            return key
        raise RuntimeError(f"{path} holds a key too short to sign tokens; delete it to regenerate")
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    # O_EXCL: two processes starting at once must not overwrite each other's key
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key
