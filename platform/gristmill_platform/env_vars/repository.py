from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gristmill_platform.db.models.env_vars import EnvironmentVariable

# built once: each elastic launch reads them (see executions/repository.py)
_ALL = select(EnvironmentVariable).order_by(EnvironmentVariable.name)


class EnvVarRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, name: str) -> EnvironmentVariable | None:
        return await self.session.get(EnvironmentVariable, name)

    async def list(self) -> Sequence[EnvironmentVariable]:
        result = await self.session.execute(_ALL)
        return result.scalars().all()

    async def add(self, variable: EnvironmentVariable) -> None:
        self.session.add(variable)
        await self.session.flush()

    async def delete(self, variable: EnvironmentVariable) -> None:
        await self.session.delete(variable)
        await self.session.flush()
