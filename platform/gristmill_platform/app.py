"""The control service application factory. Nothing is built at import time."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import Receive, Scope, Send

import gristmill_platform
from gristmill_platform import errors, health
from gristmill_platform.auth import routes as auth_routes
from gristmill_platform.console.routes import console_routers
from gristmill_platform.datastore import presigned_routes, s3errors
from gristmill_platform.datastore import routes as datastore_routes
from gristmill_platform.datastore.backend import DataStoreBackend
from gristmill_platform.datastore.blobs import BlobStore
from gristmill_platform.datastore.housekeeping import DataStoreHousekeeping
from gristmill_platform.datastore.local import LocalDataStore
from gristmill_platform.datastore.repository import DataStoreRepository
from gristmill_platform.datastore.signing import UrlSigner
from gristmill_platform.db.engine import create_engine, create_session_factory
from gristmill_platform.db.loop_reads import loop_reads
from gristmill_platform.db.transactions import Transactions
from gristmill_platform.db.urls import sqlite_file
from gristmill_platform.db.wal_checkpoints import WalCheckpoints
from gristmill_platform.deployments import gateway, traffic_routes
from gristmill_platform.deployments import routes as deployment_routes
from gristmill_platform.deployments.directory import EndpointDirectory
from gristmill_platform.deployments.factory import DeploymentServices
from gristmill_platform.deployments.fast_path import EndpointFastPath
from gristmill_platform.deployments.scheduler import PeriodicScheduler
from gristmill_platform.deployments.worker_records import DeploymentLogWriter, deployment_records
from gristmill_platform.env_vars import routes as env_var_routes
from gristmill_platform.env_vars.snapshot import EnvironmentSnapshot
from gristmill_platform.executions import low_latency, pool_routes, runtime_routes
from gristmill_platform.executions import routes as execution_routes
from gristmill_platform.executions.factory import ExecutionServices
from gristmill_platform.executions.journal import TrackingJournal, replay_spools, spool_dir
from gristmill_platform.executions.runtime import ExecutionRuntime
from gristmill_platform.executions.shadow_runner import ShadowRunner
from gristmill_platform.executors.following import WorkerFollowing
from gristmill_platform.executors.graph_workers import GraphWorkerPools
from gristmill_platform.executors.local_workers import StepBuildsView
from gristmill_platform.executors.pools import worker_pool
from gristmill_platform.http import openapi
from gristmill_platform.http.bodies import StrictJsonRoute
from gristmill_platform.http.flat_routes import include_flat
from gristmill_platform.logs import redactor
from gristmill_platform.metrics import routes as metric_routes
from gristmill_platform.middleware import BodyLimitMiddleware, RequestIdMiddleware, RequestIds
from gristmill_platform.pipelines import routes as pipeline_routes
from gristmill_platform.pipelines.factory import PipelineServices
from gristmill_platform.project import routes as project_routes
from gristmill_platform.resources import routes as resource_routes
from gristmill_platform.resources.monitor import ResourceMonitor
from gristmill_platform.runtime_site import ensure_runtime_site
from gristmill_platform.settings import Settings, resolve_settings
from gristmill_platform.state import AppState, Factories, Services
from gristmill_platform.steps import routes as step_routes
from gristmill_platform.steps.builds import StepBuilds
from gristmill_platform.steps.environments import EnvironmentBuilder
from gristmill_platform.steps.factory import StepServices
from gristmill_platform.telemetry import live
from gristmill_platform.telemetry.exposition import Telemetry
from gristmill_platform.telemetry.http_metrics import HttpMetricsMiddleware
from gristmill_platform.users import routes as user_routes

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def build_state(settings: Settings) -> AppState:
    settings = resolve_settings(settings)
    assert settings.database_url and settings.secret_key and settings.datastore_root
    redactor.register(settings.secret_key, settings.step_default_repository_deploy_key,
                      *(secret.get_secret_value() for secret in (
                          settings.s3_secret_access_key, settings.metrics_token) if secret))
    engine = create_engine(settings.database_url,
                           automatic_checkpoints=settings.sqlite_automatic_checkpoints)
    session_factory = create_session_factory(engine)
    signer = UrlSigner(key=settings.secret_key.encode())
    datastore = (_s3_datastore(settings) if settings.datastore_backend == "s3"
                 else _local_datastore(settings, signer))
    steps = StepServices(datastore, settings)
    pipelines = PipelineServices(steps)
    executions = ExecutionServices(datastore, signing_key=settings.secret_key,
                                   access_token_ttl_s=settings.access_token_ttl_s)
    deployments = DeploymentServices(pipelines, executions, secret_key=settings.secret_key,
                                     gpu_available=settings.executor == "kubernetes")
    return AppState(
        settings=settings,
        engine=engine,
        session_factory=session_factory,
        transactions=Transactions(session_factory,
                                  loop_reads=loop_reads(settings.database_url)),
        signer=signer,
        datastore=datastore,
        factories=Factories(steps=steps, pipelines=pipelines, executions=executions,
                            deployments=deployments),
    )


def build_services(state: AppState, runtime_site: Path) -> Services:
    """The long-lived machinery, each part given exactly what it uses."""
    settings, transactions = state.settings, state.transactions
    builds = StepBuilds(settings, transactions, state.datastore,
                        EnvironmentBuilder(settings.data_dir / "venvs", runtime_site))
    journal = TrackingJournal(
        state.engine, settings.database_url or "", state.traffic, spool_dir(settings.data_dir),
        automatic_checkpoints=settings.sqlite_automatic_checkpoints)
    executions = ExecutionRuntime(
        settings, transactions, state.factories.executions, builds,
        warm_workers(state, builds), journal,
        EnvironmentSnapshot(state.session_factory, state.traffic))
    # every transaction first writes what the journal holds (see executions/journal.py)
    transactions.barrier = journal.barrier
    transactions.holds_token = journal.holds_token
    scheduler = PeriodicScheduler(transactions, state.factories.deployments, executions.launch,
                                  tick_s=settings.scheduler_tick_s)
    return Services(
        builds=builds, executions=executions, scheduler=scheduler,
        endpoints=EndpointDirectory(state.session_factory, state.traffic),
        resources=ResourceMonitor(settings, transactions),
        checkpoints=wal_checkpoints(state))


def wal_checkpoints(state: AppState) -> WalCheckpoints | None:
    """The service's own WAL checkpoints, when its SQLite connections leave them to it."""
    path = sqlite_file(state.settings.database_url or "")
    if path is None or state.settings.sqlite_automatic_checkpoints:
        return None
    return WalCheckpoints(path, state.traffic)


def watch(telemetry: Telemetry, services: Services) -> None:
    """Tell the scrape-time gauges where to read."""
    pool = services.executions.workers
    dispatcher = services.executions.low_latency
    journal = dispatcher.journal

    def warm() -> dict[tuple[str, ...], float]:
        counts: dict[tuple[str, ...], float] = {}
        for name in pool.deployment_names():
            for pod in pool.pods(name):
                key = (name, str(pod["status"]))
                counts[key] = counts.get(key, 0.0) + 1
        return counts

    telemetry.live.provide(live.WARM_WORKERS, warm)
    telemetry.live.provide(live.JOURNAL_BACKLOG, lambda: {(): float(journal.backlog)})
    telemetry.live.provide(live.SHADOW_COPIES_UNENDED,
                           lambda: {(): float(dispatcher.shadows_unended)})


def warm_workers(state: AppState, builds: StepBuildsView) -> GraphWorkerPools:
    """The pool of the low-latency deployments' workers the settings choose."""
    return worker_pool(state.settings, state.transactions, deployment_records,
                       DeploymentLogWriter(state.transactions), builds)


def _s3_datastore(settings: Settings) -> Callable[[AsyncSession], DataStoreBackend]:
    # imported here: an embedded environment never loads boto3
    from gristmill_platform.datastore.s3 import S3DataStore
    from gristmill_platform.datastore.s3setup import S3Options, make_clients

    options = S3Options.from_settings(settings)
    client, presign_client = make_clients(options)
    # one instance for the app's lifetime: S3 is its own index, no per-request session
    store = S3DataStore(
        client=client,
        presign_client=presign_client,
        bucket=options.bucket,
        prefix=options.prefix,
        ttl_s=settings.signed_url_ttl_s,
        max_object_bytes=settings.datastore_max_object_bytes,
        max_path_length=settings.datastore_max_path_length,
    )
    return lambda session: store


def _local_datastore(settings: Settings, signer: UrlSigner
                     ) -> Callable[[AsyncSession], DataStoreBackend]:
    assert settings.datastore_root
    blobs = BlobStore(settings.datastore_root)
    blobs.ensure()

    def datastore(session: AsyncSession) -> DataStoreBackend:
        return LocalDataStore(
            blobs=blobs,
            repository=DataStoreRepository(session),
            signer=signer,
            public_url=settings.environment_url,
            ttl_s=settings.signed_url_ttl_s,
            max_object_bytes=settings.datastore_max_object_bytes,
            max_path_length=settings.datastore_max_path_length,
        )

    return datastore


def api_routers() -> list[APIRouter]:
    """The API's routers, included under /api/v1 in this order."""
    return [
        auth_routes.router,
        user_routes.router,
        env_var_routes.router,
        datastore_routes.router,
        step_routes.router,
        pipeline_routes.router,
        execution_routes.router,
        runtime_routes.router,
        pool_routes.router,
        metric_routes.router,
        deployment_routes.router,
        traffic_routes.router,
        resource_routes.router,
        # craft-ai-sdk 0.74 (docs/compatibility.md)
        project_routes.router,
    ]


class ControlApp(FastAPI):
    """The control service's application: warm endpoint calls are answered by the fast
    path (deployments/fast_path.py) before anything else; the rest is FastAPI's."""

    def __init__(self, fast_path: EndpointFastPath, request_ids: RequestIds, **options: Any
                 ) -> None:
        super().__init__(**options)
        self.fast_path = fast_path
        # Outside Starlette's own stack (app.add_middleware would put them inside its
        # ServerErrorMiddleware): an unhandled error's 500 carries the request id too.
        self._outer = RequestIdMiddleware(BodyLimitMiddleware(self._starlette), request_ids)

    async def _starlette(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and await self.fast_path.handle(scope, receive, send):
            return
        await self._outer(scope, receive, send)


# The interpreter's thread switch interval in the service's own process (create_app).
SWITCH_INTERVAL_S = 0.0005


def create_app(settings: Settings | None = None, *, freeze_heap: bool = False) -> FastAPI:
    """freeze_heap: once started, move what start-up allocated out of the garbage
    collector's sight (gc.freeze). The service's own process asks for it; tests, which
    start many apps in one process, do not."""
    state = build_state(settings or Settings())
    telemetry = Telemetry(state.settings, state.session_factory)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime_site = await asyncio.to_thread(
            ensure_runtime_site, state.settings.data_dir / "runtime")
        # answers a killed predecessor gave but had not written (executions/spool.py)
        await replay_spools(state.session_factory, state.settings.data_dir)
        services = build_services(state, runtime_site)
        state.started = services
        builds, executions, scheduler = services.builds, services.executions, services.scheduler
        # resource metrics; its usage tracker watches local workers from the first one
        resources = services.resources
        await resources.start(executions.executor)
        housekeeping = None
        if state.settings.datastore_backend == "local" and state.settings.datastore_root:
            housekeeping = DataStoreHousekeeping(state.transactions,
                                                 BlobStore(state.settings.datastore_root))
            await housekeeping.start()
        await builds.prune_environments()  # steps deleted while no service ran
        await builds.resume()
        executions.start()
        if state.settings.shadow_runner and state.settings.executor == "local":
            executions.low_latency.hand_off = ShadowRunner(
                state.settings, lambda: low_latency.SHADOW_QUEUE_LIMIT, state.traffic)
        await executions.workers.resume()
        following = WorkerFollowing(executions.workers, state.transactions,
                                    deployment_records,
                                    interval_s=state.settings.worker_follow_s,
                                    traffic=state.traffic)
        following.start()
        checkpoints = services.checkpoints
        if checkpoints is not None:
            checkpoints.start()
        scheduler.start()
        watch(telemetry, services)
        telemetry.start()
        if freeze_heap:
            # Hundreds of thousands of long-lived objects (the app, the ORM, pydantic):
            # left in the collected generations, the older collections that scan them
            # paused requests for up to 7 ms (measured, docs/performance-log.md#latency).
            gc.collect()
            gc.freeze()
            # The journal's thread (and the database driver's) share the interpreter lock
            # with the event loop: while one of them works, the loop, back from each of a
            # call's system calls, can wait up to the switch interval for the lock (5 ms
            # by default) before it goes on (docs/performance-log.md#latency).
            sys.setswitchinterval(SWITCH_INTERVAL_S)
        try:
            yield
        finally:
            await telemetry.shutdown()
            await scheduler.shutdown()
            if executions.low_latency.hand_off is not None:
                await executions.low_latency.hand_off.shutdown()
            await following.shutdown()
            await executions.low_latency.shutdown()
            await executions.shutdown()
            await resources.shutdown()
            if housekeeping is not None:
                await housekeeping.shutdown()
            await builds.shutdown()
            if checkpoints is not None:  # after the last write (the journal's)
                await checkpoints.shutdown()
            await state.engine.dispose()
            state.transactions.close()

    return assemble_app(state, lifespan=lifespan, telemetry=telemetry)


def assemble_app(state: AppState, *, lifespan: Lifespan | None = None,
                 telemetry: Telemetry | None = None) -> ControlApp:
    """The control service's routes over `state`. Without a lifespan, whoever built the
    state starts its services (the shadow runner serves its API so, executions/
    shadow_api.py); without telemetry, no /metrics."""
    request_ids = RequestIds()
    app = ControlApp(
        EndpointFastPath(state, request_ids),
        request_ids,
        title="Gristmill",
        version=gristmill_platform.__version__,
        lifespan=lifespan,
        # /docs is the console's: Swagger UI from the package's own files (works offline)
        docs_url=None,
        redoc_url=None,
    )
    app.state.gristmill = state
    # every route added from here on (include_flat's copies too) reads a JSON body it
    # parses into a pydantic model as strictly as the others (docs/limits.md#json)
    app.router.route_class = StrictJsonRoute
    # the request id is given outside this stack, by ControlApp (its 500s carry it too)
    app.add_middleware(HttpMetricsMiddleware)
    errors.install_error_handlers(app)
    s3errors.install(app)
    # the endpoint gateway first: every warm call is matched against the routes in order
    # flat, not app.include_router: one scan of the routes per request (http/flat_routes.py)
    include_flat(app.router, [gateway.router, health.router])
    if telemetry is not None:
        app.add_api_route("/metrics", telemetry.endpoint.handle, methods=["GET"],
                          include_in_schema=False)
    include_flat(app.router, api_routers(), prefix="/api/v1")
    include_flat(app.router, console_routers())
    if state.settings.datastore_backend == "local":
        include_flat(app.router, [presigned_routes.router])
    openapi.install(app)
    return app
