"""Holding a read while a pipeline's build runs (craft-ai-sdk 0.74's wait_for_completion:
that client asks again at once, without pausing, until the status changes)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

# how often the status is read again when the build is not this process's to wait for
# (another replica runs it)
POLL_S = 1.0


class Builds(Protocol):
    async def wait(self, step_id: str, timeout: float) -> None: ...


async def wait_for_build(builds: Builds, step_id: str, timeout: float,
                         status: Callable[[], Awaitable[str]]) -> None:
    """Return once status() is no longer "creation_pending", or after about `timeout` s."""
    deadline = time.monotonic() + timeout
    await builds.wait(step_id, timeout)
    while await status() == "creation_pending":
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        await asyncio.sleep(min(POLL_S, remaining))
