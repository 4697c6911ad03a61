"""The deployments' side of what warm-worker pools need (executors/deployment_logs.py):
their rows through DeploymentRepository, their logs written in one transaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from gristmill_platform.db.models.deployments import DeploymentLog
from gristmill_platform.db.transactions import Transactions
from gristmill_platform.deployments.repository import DeploymentRepository


def deployment_records(session: AsyncSession) -> DeploymentRepository:
    return DeploymentRepository(session)


class DeploymentLogWriter:
    """A DeploymentLogSink on the deployments' table."""

    def __init__(self, transactions: Transactions) -> None:
        self.transactions = transactions

    async def write(self, lines: Mapping[str, Sequence[DeploymentLog]]) -> None:
        async with self.transactions() as session:
            repository = DeploymentRepository(session)
            for deployment_id, rows in lines.items():
                if await repository.get(deployment_id) is not None:  # not deleted
                    await repository.add_logs(rows)
