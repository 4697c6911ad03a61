"""Where resource metrics come from: one interface, two adapters (sampled.py on one
machine, prometheus.py in a cluster), chosen by ``resource_metrics_backend``."""

from __future__ import annotations

from typing import Protocol

from gristmill_platform.resources.shape import ResourceMetrics
from gristmill_platform.resources.window import Window


class ResourceMetricsSource(Protocol):
    @property
    def min_step_s(self) -> float:
        """The finest step this source can answer (sample or scrape interval)."""

    async def query(self, window: Window) -> ResourceMetrics:
        """Every worker's series plus "All cumulate" over the window, and the totals."""
