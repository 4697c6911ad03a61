"""Builds an ExecutionService on a transaction's session."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from gristmill_platform.auth.repository import TokenRepository, UserRepository
from gristmill_platform.auth.service import AuthService
from gristmill_platform.datastore.backend import DataStoreFor
from gristmill_platform.executions.repository import ExecutionRepository
from gristmill_platform.executions.service import ExecutionService


class ExecutionServices:
    def __init__(self, datastore: DataStoreFor, *, signing_key: str,
                 access_token_ttl_s: int) -> None:
        self.datastore = datastore
        self.signing_key = signing_key
        self.access_token_ttl_s = access_token_ttl_s

    def __call__(self, session: AsyncSession) -> ExecutionService:
        auth = AuthService(UserRepository(session), TokenRepository(session),
                           signing_key=self.signing_key,
                           access_token_ttl_s=self.access_token_ttl_s)
        return ExecutionService(ExecutionRepository(session), self.datastore(session), auth)
