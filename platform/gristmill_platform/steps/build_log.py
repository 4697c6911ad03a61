"""A step's build log: the platform's own lines, plus a log it follows from elsewhere.

On Kubernetes the image builder (BuildKit) writes most of the log, and it is read whole on
each poll; it replaces its previous copy where it first appeared, between what the
platform said before the build started and what it says once it is over.
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_LOG_LINES = 5000


class BuildLog:
    def __init__(self, limit: int = MAX_LOG_LINES) -> None:
        self.limit = limit
        self._notes: list[str] = []
        self._attached: list[str] = []
        self._attached_at: int | None = None

    def note(self, line: str) -> None:
        if len(self._notes) < self.limit:
            self._notes.append(line)

    def attach(self, lines: Sequence[str]) -> None:
        """Show ``lines`` (the whole followed log so far) in place of their last copy."""
        if self._attached_at is None:
            self._attached_at = len(self._notes)
        if len(lines) > self.limit:
            # the end of a build log says why it failed: keep the end
            omitted = len(lines) - self.limit
            lines = [f"... {omitted} earlier lines omitted ...", *lines[-self.limit:]]
        self._attached = list(lines)

    @property
    def lines(self) -> list[str]:
        if self._attached_at is None:
            return list(self._notes)
        at = self._attached_at
        return [*self._notes[:at], *self._attached, *self._notes[at:]]

    def text(self) -> str:
        return "\n".join(self.lines)
