"""What the app holds for its lifetime, built by create_app from settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from gristmill_platform.datastore.backend import DataStoreBackend
from gristmill_platform.datastore.signing import UrlSigner
from gristmill_platform.settings import Settings


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    signer: UrlSigner
    # Built per request: the local backend keeps its index in the request's transaction.
    datastore: Callable[[AsyncSession], DataStoreBackend]
