"""Wake long-polls when an execution ends.

Within one control service process an event wakes them at once; between processes
(several replicas on one database) they also re-read the status every second."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from gristmill_platform.executions.repository import ExecutionOutcome
from gristmill_platform.timeouts import within


class ExecutionEvents:
    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._waiters: dict[str, int] = {}
        # what an ending committed, kept while someone waits for that execution
        self._outcomes: dict[str, ExecutionOutcome] = {}

    def notify(self, execution_id: str, outcome: ExecutionOutcome | None = None) -> None:
        """``outcome``: the ending as committed, which the waiters may take instead of
        reading the row again (the outputs long-poll, routes.py)."""
        event = self._events.get(execution_id)
        if event is not None:
            if outcome is not None:
                self._outcomes[execution_id] = outcome
            event.set()

    def ended(self, execution_id: str) -> ExecutionOutcome | None:
        """The ending a notify gave for an execution waited on, if any."""
        return self._outcomes.get(execution_id)

    async def wait(self, execution_id: str, timeout: float,
                   is_done: Callable[[], Awaitable[bool]], poll_s: float = 1.0) -> bool:
        """True once is_done() holds, False if timeout elapses first."""
        event = self._events.setdefault(execution_id, asyncio.Event())
        self._waiters[execution_id] = self._waiters.get(execution_id, 0) + 1
        deadline = time.monotonic() + timeout
        try:
            while True:
                if await is_done():
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                with contextlib.suppress(TimeoutError):
                    await within(event.wait(), min(poll_s, remaining))
                event.clear()
        finally:
            self._waiters[execution_id] -= 1
            if self._waiters[execution_id] == 0:
                self._waiters.pop(execution_id, None)
                self._events.pop(execution_id, None)
                self._outcomes.pop(execution_id, None)
