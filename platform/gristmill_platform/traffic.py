"""Warm endpoint calls in flight in this process, so that background work on the event loop
(the journal's batches, cache reloads) starts in a moment with none.

Such work takes a few milliseconds of the loop in pieces; started while a call is in
flight, its pieces run between the call's own steps and the call waits for all of them.
Started once the calls have been answered, it is mostly done before the next one comes
(measured: the calls slower than the 98th percentile were nearly all those that
overlapped a batch, docs/performance-log.md#latency). Under a load with no quiet moment,
waiting is capped, so that the work still gets done."""

from __future__ import annotations

import asyncio
import contextlib
import time

from gristmill_platform.timeouts import within


class Traffic:
    def __init__(self) -> None:
        self.in_flight = 0
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._last_left = time.monotonic()

    def enter(self) -> None:
        self.in_flight += 1
        self._quiet.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight <= 0:
            self.in_flight = 0
            self._last_left = time.monotonic()
            self._quiet.set()

    def quiet_for(self) -> float:
        """Seconds since the last call in flight was answered; 0 while one is."""
        return 0.0 if self.in_flight else time.monotonic() - self._last_left

    async def paused(self, quiet_s: float, max_wait_s: float) -> None:
        """Return once no call has been in flight for quiet_s (a pause of the callers,
        not only a moment between two of a sequential caller's calls), or after
        max_wait_s."""
        deadline = time.monotonic() + max_wait_s
        while (left := deadline - time.monotonic()) > 0:
            if self.in_flight:
                with contextlib.suppress(TimeoutError):
                    await within(self._quiet.wait(), left)
                continue
            short = quiet_s - self.quiet_for()
            if short <= 0:
                return
            await asyncio.sleep(min(short, left))

    async def quiet(self, max_wait_s: float) -> None:
        """Return when no call is in flight, or after max_wait_s."""
        if self.in_flight:
            with contextlib.suppress(TimeoutError):
                await within(self._quiet.wait(), max_wait_s)
