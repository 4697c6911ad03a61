"""The executor interface both backends implement."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from gristmill_platform.executors.spec import Handle, LaunchSpec, PollResult


@dataclass(frozen=True)
class LogLine:
    timestamp: datetime
    stream: str  # "stdout" | "stderr"
    message: str


class Executor(Protocol):
    """Launches workers for elastic executions.

    ``submit`` is idempotent per execution id: submitting the same spec twice returns the
    handle of the worker already launched instead of starting a second one.
    """

    async def submit(self, spec: LaunchSpec) -> Handle: ...

    async def poll(self, handle: Handle) -> PollResult: ...

    async def logs(self, handle: Handle) -> Sequence[LogLine]: ...

    async def cancel(self, handle: Handle) -> None: ...

    async def cleanup(self, handle: Handle) -> None: ...
