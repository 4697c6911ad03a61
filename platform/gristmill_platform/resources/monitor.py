"""What the control service runs for resource metrics, chosen by settings:

* always, when workers are local processes: the usage tracker (per-execution CPU time and
  peak memory), attached to the local executor as its WorkerObserver;
* ``resource_metrics_backend="local"``: the sampler, and the sampled source;
* ``resource_metrics_backend="prometheus"``: the Prometheus source (no sampler).

create_app starts it in its lifespan (``state.services.resources``)."""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

import psutil
from sqlalchemy.ext.asyncio import AsyncSession

from gristmill_platform.resources.probes import GpuProbe, HostProbe
from gristmill_platform.resources.prometheus import PrometheusSource
from gristmill_platform.resources.repository import ResourceSampleRepository
from gristmill_platform.resources.sampled import SampledSource
from gristmill_platform.resources.sampler import ResourceSampler
from gristmill_platform.resources.shape import Totals
from gristmill_platform.resources.source import ResourceMetricsSource
from gristmill_platform.resources.usage import UsageTracker, UsageWrites

if TYPE_CHECKING:
    from gristmill_platform.db.transactions import Transactions
    from gristmill_platform.executors.local import LocalExecutor
    from gristmill_platform.settings import Settings


class ResourceMonitor:
    def __init__(self, settings: Settings, transactions: Transactions) -> None:
        self.settings = settings
        self.transactions = transactions
        self.backend = settings.resource_metrics_backend
        if self.backend == "prometheus" and not settings.prometheus_url:
            raise ValueError("resource_metrics_backend is 'prometheus' but prometheus_url is "
                             "not set (GRISTMILL_PROMETHEUS_URL)")
        self.host_name = socket.gethostname() or "localhost"
        self.gpu: GpuProbe | None = None
        self.tracker: UsageTracker | None = None
        self.usage_writes: UsageWrites | None = None
        self.sampler: ResourceSampler | None = None
        self.prometheus = (PrometheusSource(str(settings.prometheus_url),
                                            scrape_interval_s=settings.prometheus_scrape_interval_s,
                                            timeout_s=settings.prometheus_timeout_s)
                           if self.backend == "prometheus" else None)

    async def start(self, executor: LocalExecutor | None) -> None:
        settings = self.settings
        self.gpu = await asyncio.to_thread(GpuProbe.load)
        if executor is not None:
            self.usage_writes = UsageWrites(self.transactions)
            self.tracker = UsageTracker(self.usage_writes.record,
                                        gpu_enabled=self.gpu is not None)
            executor.observer = self.tracker
            self.tracker.start()
        if self.backend == "local":
            self.sampler = ResourceSampler(
                session_scope=self.transactions.unfenced,
                host_name=self.host_name,
                probe=HostProbe(settings.data_dir, self.gpu),
                tracker=self.tracker,
                interval_s=settings.resource_sample_interval_s,
                retention_s=settings.resource_retention_h * 3600,
            )
            self.sampler.start()

    async def shutdown(self) -> None:
        if self.sampler is not None:
            await self.sampler.shutdown()
        if self.tracker is not None:
            await self.tracker.shutdown()
        if self.usage_writes is not None:
            await self.usage_writes.close()
        if self.gpu is not None:
            self.gpu.close()

    def live_totals(self) -> Totals:
        memory = psutil.virtual_memory()
        disk = psutil.disk_usage(str(self.settings.data_dir))
        vram = None
        if self.gpu is not None:
            vram = self.gpu.read().vram_total_bytes
        return Totals(ram_bytes=int(memory.total), disk_bytes=int(disk.total), vram_bytes=vram)

    def source(self, session: AsyncSession) -> ResourceMetricsSource:
        if self.prometheus is not None:
            return self.prometheus
        return SampledSource(ResourceSampleRepository(session),
                             interval_s=self.settings.resource_sample_interval_s,
                             live_totals=self.live_totals)
