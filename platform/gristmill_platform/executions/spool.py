"""The ended low-latency executions the journal has not written yet, on disk before their
answer leaves (executions/journal.py writes the database behind the answers).

One line of JSON per ended execution, appended with a single write() to a file of this
process: tens of microseconds, no fsync. A kill -9 of the control service loses nothing
the kernel has (the page cache outlives the process); a power cut may lose the last
moment, as the database's own synchronous=NORMAL does. The journal rotates the file when
it takes a batch and removes the old one once the batch is written; at start-up the
files of processes no longer running are replayed into the database (replay_spools)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger("gristmill.journal")


def _default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot spool a {type(value).__name__}")


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._owner = f"{os.getpid()}-{int(_started_at(os.getpid()) or 0)}"
        self._generation = 0
        self._fd: int | None = None
        self._done: list[Path] = []  # rotated out, removed once their batch is written

    def _path(self, generation: int) -> Path:
        return self.root / f"spool-{self._owner}-{generation}.jsonl"

    def append(self, row: Mapping[str, Any]) -> None:
        line = (json.dumps(row, default=_default, separators=(",", ":")) + "\n").encode()
        if self._fd is None:
            self.root.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self._path(self._generation),
                               os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.write(self._fd, line)

    def rotate(self) -> list[Path]:
        """Start a new file; returns the previous ones (the batch now taken holds all
        they hold), to be removed with ``written`` once that batch is in the database."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._done.append(self._path(self._generation))
            self._generation += 1
        done, self._done = self._done, []
        return done

    def written(self, files: list[Path]) -> None:
        for path in files:
            path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _started_at(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.Error, OSError):
        return None


def _alive(owner: str) -> bool:
    """Whether the process that wrote a spool (pid and start time) is still running."""
    pid_text, _, started = owner.partition("-")
    if not pid_text.isdigit():
        return False
    created = _started_at(int(pid_text))
    return created is not None and str(int(created)) == started


def orphaned_spools(root: Path) -> list[Path]:
    """Spool files left by control service processes that are gone."""
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.glob("spool-*.jsonl")):
        owner = path.stem.removeprefix("spool-").rsplit("-", 1)[0]
        if not _alive(owner):
            found.append(path)
    return found


def read_spool(path: Path, datetime_columns: frozenset[str]) -> Iterator[dict[str, Any]]:
    """The rows of a spool file (a torn last line, from a kill mid-write, is skipped)."""
    with path.open("rb") as handle:
        for raw in handle:
            try:
                row: dict[str, Any] = json.loads(raw)
            except ValueError:
                log.warning("skipped a torn line in %s", path)
                continue
            for column in datetime_columns:
                if isinstance(row.get(column), str):
                    row[column] = datetime.fromisoformat(row[column])
            yield row
