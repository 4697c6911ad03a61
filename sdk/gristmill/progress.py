"""Progress bars for byte transfers, on ``rich.progress``.

Bars go to stderr so they never mix with a script's own output. ``enabled=None`` shows
them only on a terminal or in a notebook: logs of CI jobs and step executions stay clean.
Turn them off with ``Gristmill(progress=False)`` or ``GRISTMILL_PROGRESS=0``.
"""

from __future__ import annotations

import threading
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.status import Status


def progress_enabled(setting: bool | None, console: Console | None = None) -> bool:
    if setting is not None:
        return setting
    console = console or Console(stderr=True)
    return console.is_terminal or console.is_jupyter


class TransferProgress:
    """A context manager showing one byte transfer; a no-op when disabled."""

    def __init__(
        self,
        description: str,
        total: int | None,
        *,
        enabled: bool | None = None,
        console: Console | None = None,
    ) -> None:
        self._console = console or Console(stderr=True)
        self.enabled = progress_enabled(enabled, self._console)
        self._description = description
        self._total = total
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        # Parts of a multipart upload report from several threads.
        self._lock = threading.Lock()
        self.completed = 0

    def __enter__(self) -> TransferProgress:
        if self.enabled:
            self._progress = Progress(
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=self._console,
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self._description, total=self._total)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def advance(self, n: int) -> None:
        with self._lock:
            self.completed += n
            if self._progress is not None and self._task is not None:
                self._progress.update(self._task, advance=n)

    def restart(self) -> None:
        """Back to zero, when a transfer is retried from the start."""
        with self._lock:
            self.completed = 0
            if self._progress is not None and self._task is not None:
                self._progress.reset(self._task, total=self._total)

    def set_total(self, total: int | None) -> None:
        self._total = total
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, total=total)


class Spinner:
    """A spinner with a status line for waits of unknown length (builds, runs); a no-op
    when disabled. Shown under the same rule as the progress bars."""

    def __init__(
        self, text: str, *, enabled: bool | None = None, console: Console | None = None
    ) -> None:
        self._console = console or Console(stderr=True)
        self.enabled = progress_enabled(enabled, self._console)
        self.text = text
        self._status: Status | None = None

    def __enter__(self) -> Spinner:
        if self.enabled:
            self._status = self._console.status(self.text)
            self._status.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def update(self, text: str) -> None:
        self.text = text
        if self._status is not None:
            self._status.update(text)
