"""The environment variables, kept in memory for the paths that read them on every call
(a warm worker gets them with each execution). Reloaded as deployments/directory.py
reloads its entries: after a change through this process, or after TTL_S, ahead of it in
the background while in use (db/refresh.py)."""

from __future__ import annotations

import time
from types import MappingProxyType
from typing import TYPE_CHECKING

from sqlalchemy import select

from gristmill_platform.db import changes
from gristmill_platform.db.models.env_vars import EnvironmentVariable
from gristmill_platform.db.refresh import BackgroundReloads, Freshness, freshness

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from gristmill_platform.traffic import Traffic

TTL_S = 1.0
changes.watch(EnvironmentVariable)


class EnvironmentSnapshot:
    def __init__(self, session_factory: async_sessionmaker[AsyncSession], traffic: Traffic
                 ) -> None:
        self.session_factory = session_factory
        self._values: Mapping[str, str] = MappingProxyType({})
        self._loaded_at = -TTL_S - 1.0
        self._version = -1
        self._reloads = BackgroundReloads(traffic)

    async def current(self) -> Mapping[str, str]:
        age = freshness(time.monotonic() - self._loaded_at, TTL_S)
        if self._version != changes.version(EnvironmentVariable) or age is Freshness.STALE:
            await self._load()
        elif age is Freshness.AHEAD:
            self._reloads.start("environment", self._load)
        return self._values

    async def _load(self) -> None:
        version = changes.version(EnvironmentVariable)
        now = time.monotonic()
        # a plain session, not a Transactions: nothing here waits for the journal
        async with self.session_factory() as session:
            rows = await session.execute(select(EnvironmentVariable.name,
                                                EnvironmentVariable.value))
            values = {name: value for name, value in rows}
        self._values, self._loaded_at, self._version = MappingProxyType(values), now, version
