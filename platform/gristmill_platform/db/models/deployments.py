from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gristmill_platform.db.base import Base
from gristmill_platform.db.types import UTCDateTime, utcnow


class Deployment(Base):
    """A pipeline exposed as an endpoint or run on a schedule."""

    __tablename__ = "deployments"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    pipeline_id: Mapped[str] = mapped_column(ForeignKey("pipelines.id"), index=True)
    pipeline_name: Mapped[str] = mapped_column(String(100))
    execution_rule: Mapped[str] = mapped_column(String(16))  # endpoint | periodic
    mode: Mapped[str] = mapped_column(String(16))  # elastic | low_latency
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    is_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(32), default="creation_pending")
    status_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    inputs_mapping: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    outputs_mapping: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    schedule: Mapped[str | None] = mapped_column(String(120), nullable=True)
    # the scheduler's state lives here so it survives restarts and is shared by replicas
    next_fire_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True,
                                                          index=True)
    last_fire_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    enable_parallel_executions: Mapped[bool] = mapped_column(Boolean, default=False)
    max_parallel_executions_per_pod: Mapped[int] = mapped_column(Integer, default=1)
    ram_request: Mapped[str | None] = mapped_column(String(32), nullable=True)
    gpu_request: Mapped[int | None] = mapped_column(Integer, nullable=True)
    timeout_s: Mapped[int] = mapped_column(Integer, default=180)
    # the longest an execution of this deployment may run (craft-ai-sdk 0.74's
    # execution_timeout_s); None: no limit
    execution_timeout_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # where an endpoint answers, /endpoints/<path>; None (rows from before it existed):
    # the deployment's name
    endpoint_url_path: Mapped[str | None] = mapped_column(String(100), nullable=True,
                                                          unique=True)
    # endpoint token: checked against its SHA-256 in constant time; also kept encrypted
    # with the environment's key, because get_deployment must show it (contract §4.2)
    token_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    token_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    generation: Mapped[int] = mapped_column(Integer, default=1)
    created_by: Mapped[str | None] = mapped_column(String(36), nullable=True)
    updated_by: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class DeploymentLog(Base):
    """Lines a low-latency worker prints outside executions (module import, crashes)."""

    __tablename__ = "deployment_logs"
    __table_args__ = (Index("ix_deployment_logs_deployment_time", "deployment_id",
                            "timestamp"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id",
                                                          ondelete="CASCADE"))
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime)
    # a local worker's id: up to ~230 characters (migration 0011)
    pod_id: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(32), default="deployment")
    message: Mapped[str] = mapped_column(Text)
