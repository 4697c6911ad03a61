from __future__ import annotations

from sqlalchemy import BigInteger, Float, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from gristmill_platform.db.base import Base


class ResourceSample(Base):
    """One reading of one worker by the embedded sampler (resources/sampler.py): the host
    (kind "host", named after its hostname) or a worker process (kind "process", named
    after its execution). Rows older than the retention are deleted by the sampler.

    Absolute quantities are stored (bytes used and available), so percentages averaged
    over a step stay exact; a column a kind of worker has no value for stays NULL."""

    __tablename__ = "resource_samples"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)
    # epoch milliseconds: the read path buckets it by integer division in SQL
    sampled_at_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    worker: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))  # host | process
    # percent of the host's whole CPU capacity (all cores) over the last interval
    cpu_percent: Mapped[float | None] = mapped_column(Float, nullable=True)
    ram_used_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    ram_total_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    disk_used_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    disk_total_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    network_in_bytes_per_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    network_out_bytes_per_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    gpu_percent: Mapped[float | None] = mapped_column(Float, nullable=True)
    vram_used_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    vram_total_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
