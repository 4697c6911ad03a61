"""What the app holds for its lifetime, built by app.py (the composition root) from
settings. Only the edge (routes, the gateway, the fast path, deps) reads it: everything
below is given exactly the collaborators it uses."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from gristmill_platform.datastore.backend import DataStoreFor
from gristmill_platform.datastore.signing import UrlSigner
from gristmill_platform.db.transactions import Transactions
from gristmill_platform.db.wal_checkpoints import WalCheckpoints
from gristmill_platform.deployments.directory import EndpointDirectory
from gristmill_platform.deployments.factory import DeploymentServices
from gristmill_platform.deployments.scheduler import PeriodicScheduler
from gristmill_platform.executions.factory import ExecutionServices
from gristmill_platform.executions.runtime import ExecutionRuntime
from gristmill_platform.pipelines.factory import PipelineServices
from gristmill_platform.resources.monitor import ResourceMonitor
from gristmill_platform.settings import Settings
from gristmill_platform.steps.builds import StepBuilds
from gristmill_platform.steps.factory import StepServices
from gristmill_platform.traffic import Traffic


@dataclass(frozen=True)
class Factories:
    """Per-transaction services: each builds its service on a request's session."""

    steps: StepServices
    pipelines: PipelineServices
    executions: ExecutionServices
    deployments: DeploymentServices


@dataclass(frozen=True)
class Services:
    """The long-lived machinery, built and started by the app's lifespan."""

    builds: StepBuilds
    executions: ExecutionRuntime
    scheduler: PeriodicScheduler
    endpoints: EndpointDirectory
    resources: ResourceMonitor
    # SQLite's WAL checkpoints, when this service runs them (db/wal_checkpoints.py)
    checkpoints: WalCheckpoints | None = None


class NotStarted(RuntimeError):
    pass


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    transactions: Transactions
    signer: UrlSigner
    # Built per request: the local backend keeps its index in the request's transaction.
    datastore: DataStoreFor
    factories: Factories
    traffic: Traffic = field(default_factory=Traffic)
    # set by the lifespan once built (see app.py)
    started: Services | None = None

    @property
    def services(self) -> Services:
        if self.started is None:
            raise NotStarted("the app's services are built when its lifespan starts")
        return self.started

    @property
    def builds(self) -> StepBuilds:
        return self.services.builds

    @property
    def executions(self) -> ExecutionRuntime:
        return self.services.executions

    @property
    def endpoints(self) -> EndpointDirectory:
        return self.services.endpoints
