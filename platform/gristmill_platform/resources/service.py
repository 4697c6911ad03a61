from __future__ import annotations

from dataclasses import dataclass

from gristmill_platform.resources.shape import ResourceMetrics
from gristmill_platform.resources.source import ResourceMetricsSource
from gristmill_platform.resources.window import parse_bool, parse_window


@dataclass(frozen=True)
class ResourceMetricsQuery:
    start: str | None
    end: str | None
    download: str | None


class ResourceMetricsService:
    def __init__(self, source: ResourceMetricsSource) -> None:
        self.source = source

    async def get(self, query: ResourceMetricsQuery) -> tuple[ResourceMetrics, bool]:
        """The metrics over the period asked for, and whether CSV was asked for.
        Everything is validated before the source is asked."""
        as_csv = parse_bool("download", query.download)
        window = parse_window(query.start, query.end, self.source.min_step_s)
        return await self.source.query(window), as_csv
