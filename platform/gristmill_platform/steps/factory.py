"""Builds a StepService on a transaction's session."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from gristmill_platform.datastore.backend import DataStoreFor
from gristmill_platform.settings import Settings
from gristmill_platform.steps.repository import StepRepository
from gristmill_platform.steps.service import StepService


class StepServices:
    def __init__(self, datastore: DataStoreFor, settings: Settings) -> None:
        self.datastore = datastore
        self.settings = settings

    def __call__(self, session: AsyncSession) -> StepService:
        return StepService(StepRepository(session), self.datastore(session), self.settings)
