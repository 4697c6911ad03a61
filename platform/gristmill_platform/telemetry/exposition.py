"""Where the metrics are served: ``/metrics`` on the service's port behind a bearer token
(GRISTMILL_METRICS_TOKEN), and/or a separate port (GRISTMILL_METRICS_PORT) meant for the
cluster network only. With neither set, ``/metrics`` answers 404: metrics describe the
environment's traffic and are not public by default."""

from __future__ import annotations

import hmac
import os
import threading
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, start_http_server
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import Request
from starlette.responses import Response

from gristmill_platform.errors import NotFound, Unauthorized
from gristmill_platform.settings import Settings
from gristmill_platform.telemetry.live import LiveGauges
from gristmill_platform.telemetry.metrics import REGISTRY
from gristmill_platform.telemetry.sampler import DatabaseSampler

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class _Everything(Collector):
    """This process's metrics (or every worker process's, in multiprocess mode) and the
    app's live gauges, as one registry."""

    def __init__(self, live: LiveGauges) -> None:
        self.live = live
        self.shared: Collector
        if os.environ.get(MULTIPROC_ENV):
            merged = CollectorRegistry()
            MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            self.shared = merged
        else:
            self.shared = REGISTRY

    def collect(self) -> Iterator[Metric]:
        yield from self.shared.collect()
        yield from self.live.collect()


class MetricsEndpoint:
    def __init__(self, settings: Settings, live: LiveGauges) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Everything(live))
        token = settings.metrics_token
        self._token = token.get_secret_value().encode() if token else None
        self._port = settings.metrics_port
        self._host = settings.metrics_host or settings.host
        self._server: tuple[WSGIServer, threading.Thread] | None = None

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def handle(self, request: Request) -> Response:
        if self._token is None:
            raise NotFound("Not Found: /metrics is served only with GRISTMILL_METRICS_TOKEN "
                           "set, or on GRISTMILL_METRICS_PORT (docs/operations.md#metrics)")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                                 self._token):
            raise Unauthorized("Scraping /metrics needs 'Authorization: Bearer <the "
                               "GRISTMILL_METRICS_TOKEN value>'")
        return Response(self.render(), media_type=CONTENT_TYPE_LATEST)

    def start(self) -> None:
        if self._port is not None and self._server is None:
            self._server = start_http_server(self._port, self._host, registry=self.registry)

    @property
    def port(self) -> int | None:
        return self._server[0].server_port if self._server else None

    def stop(self) -> None:
        if self._server is not None:
            server, thread = self._server
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            self._server = None


class Telemetry:
    """The app's metrics machinery: the scrape-time gauges, the database sampler feeding
    some of them, and where they are served. Built by the composition root, which also
    tells the live gauges where to read (``live.provide``)."""

    def __init__(self, settings: Settings,
                 session_factory: async_sessionmaker[AsyncSession]) -> None:
        self.live = LiveGauges()
        self.endpoint = MetricsEndpoint(settings, self.live)
        self.sampler = DatabaseSampler(session_factory, settings.data_dir)
        self.sampler.install(self.live)

    def start(self) -> None:
        self.sampler.start()
        self.endpoint.start()

    async def shutdown(self) -> None:
        self.endpoint.stop()
        await self.sampler.shutdown()
