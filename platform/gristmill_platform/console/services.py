"""The console's one door to the domain: each page gets the same service objects the API
routes build, from the same factories (state.factories, state.services), so the console can
do exactly what the API allows for the same principal (there is no second permission
system)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from gristmill_platform.auth.repository import TokenRepository, UserRepository
from gristmill_platform.auth.service import AuthService
from gristmill_platform.console.sessions import ConsoleSessions
from gristmill_platform.datastore.service import DataStoreService
from gristmill_platform.deployments.service import DeploymentService
from gristmill_platform.env_vars.repository import EnvVarRepository
from gristmill_platform.env_vars.service import EnvVarService
from gristmill_platform.executions.service import ExecutionService
from gristmill_platform.metrics.repository import MetricRepository
from gristmill_platform.metrics.service import MetricService
from gristmill_platform.pipelines.service import PipelineService
from gristmill_platform.resources.service import ResourceMetricsService
from gristmill_platform.state import AppState

SESSION_TTL_S = 12 * 3600


def auth(state: AppState, session: AsyncSession) -> AuthService:
    assert state.settings.secret_key
    return AuthService(UserRepository(session), TokenRepository(session),
                       signing_key=state.settings.secret_key,
                       access_token_ttl_s=state.settings.access_token_ttl_s)


def console_sessions(state: AppState, session: AsyncSession) -> ConsoleSessions:
    return ConsoleSessions(session, auth(state, session), ttl_s=SESSION_TTL_S)


def pipelines(state: AppState, session: AsyncSession) -> PipelineService:
    return state.factories.pipelines(session)


def deployments(state: AppState, session: AsyncSession) -> DeploymentService:
    return state.factories.deployments(session)


def executions(state: AppState, session: AsyncSession) -> ExecutionService:
    return state.factories.executions(session)


def env_vars(session: AsyncSession) -> EnvVarService:
    return EnvVarService(EnvVarRepository(session))


def metrics(session: AsyncSession) -> MetricService:
    return MetricService(MetricRepository(session))


def datastore(state: AppState, session: AsyncSession) -> DataStoreService:
    return DataStoreService(state.datastore(session),
                            max_path_length=state.settings.datastore_max_path_length,
                            page_size=state.settings.datastore_list_page_size)


def resources(state: AppState, session: AsyncSession) -> ResourceMetricsService:
    return ResourceMetricsService(state.services.resources.source(session))
