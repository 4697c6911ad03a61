"""Waiting with a time limit without ever losing a cancellation.

Python 3.11's ``asyncio.wait_for`` returns the inner result, or turns the inner
cancellation into a TimeoutError, when the task awaiting it is cancelled in the same
loop turn as the inner awaitable ends: the cancellation is then lost. A background loop
that waits on an event with a short timeout (``while True: wait_for(event.wait(), 0.02)``)
hits that turn sooner or later, and a service stopping it (cancel, then await) waits
forever (measured: 6 lost cancellations in 3,000 with such a loop, on 3.11.7; it hung a
control service's shutdown in CI). 3.12 rewrote ``wait_for``; the service supports 3.11.

``within`` waits with ``asyncio.wait``, which never swallows the caller's cancellation: a
cancelled caller always gets CancelledError. Every bounded wait of the control service
goes through it (tests/platform/unit/test_timeouts.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


def _retrieve(task: asyncio.Future[Any]) -> None:
    # an inner awaitable that fails after its caller left: its error is nobody's, and must
    # not be logged as "never retrieved"
    if not task.cancelled():
        task.exception()


async def within(awaitable: Awaitable[T], timeout_s: float | None) -> T:
    """``await awaitable``, cancelled and TimeoutError after ``timeout_s`` seconds.

    As ``asyncio.wait_for``, except that the caller's own cancellation always propagates,
    whatever the inner awaitable does in the same turn."""
    inner = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({inner}, timeout=timeout_s)
    except BaseException:  # the caller is cancelled: so is what it waited for
        inner.add_done_callback(_retrieve)
        inner.cancel()
        raise
    if not done:
        inner.cancel()
        # its cleanup runs before we answer, as wait_for does (a cancelled caller here
        # still gets its CancelledError: asyncio.wait passes it on)
        await asyncio.wait({inner})
        if inner.cancelled():
            raise TimeoutError
    return inner.result()


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Whether ``event`` was set within ``timeout_s`` seconds."""
    if event.is_set():
        return True
    try:
        await within(event.wait(), timeout_s)
    except TimeoutError:
        return False
    return True
