"""Refresh-ahead for the in-memory caches of the endpoint hot path (deployments/directory.py,
env_vars/snapshot.py).

An entry older than its time to live is reloaded before it is used, as before. An entry in
the last part of its life is still used, and reloaded in the background meanwhile: under
steady traffic no caller waits for a reload, while a caller after a quiet spell never gets
an entry older than the time to live. A reload on the request path cost a query (and the
slowest call of the second, docs/performance-log.md#latency)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from enum import Enum

from gristmill_platform.traffic import Traffic

log = logging.getLogger("gristmill.cache")

# Past this share of its time to live, an entry is reloaded in the background.
AHEAD_SHARE = 0.5
# Well under what is left of an entry's life once it is reloaded ahead.
QUIET_WAIT_S = 0.1


class Freshness(Enum):
    FRESH = "fresh"
    AHEAD = "ahead"  # use it, reload it in the background
    STALE = "stale"  # reload it before use


def freshness(age_s: float, ttl_s: float) -> Freshness:
    if age_s > ttl_s:
        return Freshness.STALE
    if age_s > ttl_s * AHEAD_SHARE:
        return Freshness.AHEAD
    return Freshness.FRESH


class BackgroundReloads:
    """At most one background reload per key at a time, each started in a moment with
    no warm call in flight (traffic.py)."""

    def __init__(self, traffic: Traffic) -> None:
        self._traffic = traffic
        self._running: dict[Hashable, asyncio.Task[None]] = {}

    def start(self, key: Hashable, reload: Callable[[], Awaitable[object]]) -> None:
        if key in self._running:
            return

        async def run() -> None:
            try:
                await self._traffic.quiet(QUIET_WAIT_S)
                await reload()
            except Exception:
                # the entry is reloaded on the request path once stale: nothing is lost
                log.exception("background reload of %r failed", key)

        task = asyncio.get_running_loop().create_task(run())
        self._running[key] = task
        task.add_done_callback(lambda _: self._running.pop(key, None))
