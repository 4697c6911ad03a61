"""A deployment's traffic rule and validations (docs/rollout.md), and the record of each
change to them (who, when, what)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from gristmill_platform.db.base import Base
from gristmill_platform.db.types import UTCDateTime, utcnow


class DeploymentTraffic(Base):
    """At most one row per deployment; no row: its own pipeline answers every call."""

    __tablename__ = "deployment_traffic"

    deployment_id: Mapped[str] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True)
    # {"split": {...}} | {"key": ..., "routes": {...}, "default": ...} | {"shadow": [...]}
    # | {} (no rule)
    rule: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # {"<name>": "<expression>"}
    validations: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    updated_by: Mapped[str | None] = mapped_column(String(36), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class DeploymentTrafficChange(Base):
    """The audit trail: kept when the rule changes again (not when the deployment goes)."""

    __tablename__ = "deployment_traffic_changes"
    __table_args__ = (Index("ix_deployment_traffic_changes_deployment_time",
                            "deployment_name", "changed_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)
    deployment_id: Mapped[str] = mapped_column(String(36))
    deployment_name: Mapped[str] = mapped_column(String(100))
    changed_by: Mapped[str | None] = mapped_column(String(36), nullable=True)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # "traffic" | "validations"
    what: Mapped[str] = mapped_column(String(32))
    value: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
