"""Queries on the embedded sampler's table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import BigInteger, delete, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from gristmill_platform.db.models.resources import ResourceSample
from gristmill_platform.resources.window import Window

HOST = "host"
PROCESS = "process"


@dataclass(frozen=True)
class Bucket:
    """The mean of one worker's samples over the step ending at ``timestamp_ms``."""

    worker: str
    kind: str
    timestamp_ms: int
    cpu_percent: float | None
    ram_used: float | None
    ram_total: float | None
    disk_used: float | None
    disk_total: float | None
    network_in: float | None
    network_out: float | None
    gpu_percent: float | None
    vram_used: float | None
    vram_total: float | None


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


class ResourceSampleRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_all(self, rows: Sequence[ResourceSample]) -> None:
        self.session.add_all(rows)
        await self.session.flush()

    async def delete_before(self, cutoff_ms: int) -> int:
        result = await self.session.execute(
            delete(ResourceSample).where(ResourceSample.sampled_at_ms < cutoff_ms))
        return int(getattr(result, "rowcount", 0) or 0)

    async def buckets(self, window: Window) -> list[Bucket]:
        """Samples grouped per worker and per point of the window: the point at
        ``start + k*step`` holds the samples taken in ``(t - step, t]``."""
        step = int(window.step_ms)
        # ts in (start - step, last]  =>  ts - offset >= 0, and k = (ts - offset) // step
        offset = int(window.start_ms) - step + 1
        # integers inlined (not bound): PostgreSQL would not see the selected and the
        # grouped expressions as one if each had its own parameters
        k = ((ResourceSample.sampled_at_ms - literal_column(str(offset), BigInteger))
             // literal_column(str(step), BigInteger))  # integer division on both
        r = ResourceSample
        query = (
            select(r.worker, r.kind, k.label("k"),
                   func.avg(r.cpu_percent), func.avg(r.ram_used_bytes),
                   func.avg(r.ram_total_bytes), func.avg(r.disk_used_bytes),
                   func.avg(r.disk_total_bytes), func.avg(r.network_in_bytes_per_s),
                   func.avg(r.network_out_bytes_per_s), func.avg(r.gpu_percent),
                   func.avg(r.vram_used_bytes), func.avg(r.vram_total_bytes))
            .where(r.sampled_at_ms >= offset, r.sampled_at_ms <= window.last_ms)
            .group_by(r.worker, r.kind, k)
        )
        buckets = []
        for row in (await self.session.execute(query)).all():
            buckets.append(Bucket(
                worker=row[0], kind=row[1],
                timestamp_ms=window.start_ms + int(row[2]) * step,
                cpu_percent=_float(row[3]), ram_used=_float(row[4]), ram_total=_float(row[5]),
                disk_used=_float(row[6]), disk_total=_float(row[7]),
                network_in=_float(row[8]), network_out=_float(row[9]),
                gpu_percent=_float(row[10]), vram_used=_float(row[11]),
                vram_total=_float(row[12]),
            ))
        return buckets

    async def latest_hosts(self, window: Window) -> list[ResourceSample]:
        """Each host's last sample within the window (for the totals)."""
        r = ResourceSample
        latest = (select(r.worker, func.max(r.sampled_at_ms).label("at"))
                  .where(r.kind == HOST, r.sampled_at_ms >= window.start_ms,
                         r.sampled_at_ms <= window.end_ms)
                  .group_by(r.worker).subquery())
        query = select(r).join(latest, (r.worker == latest.c.worker)
                               & (r.sampled_at_ms == latest.c.at)).where(r.kind == HOST)
        rows = (await self.session.execute(query)).scalars().all()
        # one per host even if two samples share a millisecond
        return list({row.worker: row for row in rows}.values())
