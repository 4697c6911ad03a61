"""The environment variables, kept in memory for the paths that read them on every call
(a warm worker gets them with each execution). Reloaded as deployments/directory.py
reloads its entries: after a change through this process, or after TTL_S."""

from __future__ import annotations

import time
from types import MappingProxyType
from typing import TYPE_CHECKING

from sqlalchemy import select

from gristmill_platform.db import changes
from gristmill_platform.db.models.env_vars import EnvironmentVariable

if TYPE_CHECKING:
    from collections.abc import Mapping

    from gristmill_platform.state import AppState

TTL_S = 1.0
changes.watch(EnvironmentVariable)


class EnvironmentSnapshot:
    def __init__(self, state: AppState) -> None:
        self.state = state
        self._values: Mapping[str, str] = MappingProxyType({})
        self._loaded_at = -TTL_S - 1.0
        self._version = -1

    async def current(self) -> Mapping[str, str]:
        now = time.monotonic()
        if (self._version != changes.version(EnvironmentVariable)
                or now - self._loaded_at > TTL_S):
            await self._load(now)
        return self._values

    async def _load(self, now: float) -> None:
        from gristmill_platform.deps import transaction

        version = changes.version(EnvironmentVariable)
        async with transaction(self.state) as session:
            rows = await session.execute(select(EnvironmentVariable.name,
                                                EnvironmentVariable.value))
            values = {name: value for name, value in rows}
        self._values, self._loaded_at, self._version = MappingProxyType(values), now, version
