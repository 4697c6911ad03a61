"""What the app holds for its lifetime, built by create_app from settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from gristmill_platform.datastore.backend import DataStoreBackend
from gristmill_platform.datastore.signing import UrlSigner
from gristmill_platform.settings import Settings
from gristmill_platform.traffic import Traffic

if TYPE_CHECKING:
    from gristmill_platform.deployments.directory import EndpointDirectory
    from gristmill_platform.executions.runtime import ExecutionRuntime
    from gristmill_platform.steps.builds import StepBuilds


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    signer: UrlSigner
    # Built per request: the local backend keeps its index in the request's transaction.
    datastore: Callable[[AsyncSession], DataStoreBackend]
    # background machinery, attached by create_app once the state exists
    components: dict[str, Any] = field(default_factory=dict)
    traffic: Traffic = field(default_factory=Traffic)

    @property
    def builds(self) -> StepBuilds:
        builds: StepBuilds = self.components["builds"]
        return builds

    @property
    def executions(self) -> ExecutionRuntime:
        runtime: ExecutionRuntime = self.components["executions"]
        return runtime

    @property
    def endpoints(self) -> EndpointDirectory:
        directory: EndpointDirectory = self.components["endpoints"]
        return directory
