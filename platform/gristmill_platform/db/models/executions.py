from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    false,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from gristmill_platform.db.base import Base
from gristmill_platform.db.types import UTCDateTime, utcnow


class Execution(Base):
    """One run of a pipeline: what went in (with its source), what came out (with its
    destination), where it ran, how it ended."""

    __tablename__ = "executions"
    # the console's execution tracking (executions/listing.py): each filter or sort, then
    # newest first with the id as tie-break, read from one index
    __table_args__ = (
        Index("ix_executions_created_id", "created_at", "id"),
        Index("ix_executions_pipeline_created_id", "pipeline_name", "created_at", "id"),
        Index("ix_executions_deployment_created_id", "deployment_name", "created_at", "id"),
        Index("ix_executions_status_created_id", "status", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(160), primary_key=True)
    pipeline_id: Mapped[str | None] = mapped_column(
        ForeignKey("pipelines.id", ondelete="SET NULL"), nullable=True, index=True)
    pipeline_name: Mapped[str] = mapped_column(String(100), index=True)
    step_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    step_name: Mapped[str] = mapped_column(String(110))  # as steps.name
    deployment_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    deployment_name: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)
    execution_rule: Mapped[str] = mapped_column(String(32), default="run")
    status: Mapped[str] = mapped_column(String(32), default="pending", index=True)
    status_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    inputs: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    outputs: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    handle: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    resource_usage: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    timeout_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # a node of a multi-step pipeline's execution: the execution of the whole graph, and
    # the node's name in it (executions/graph_scheduler.py)
    parent_id: Mapped[str | None] = mapped_column(String(160), nullable=True, index=True)
    node_name: Mapped[str | None] = mapped_column(String(100), nullable=True)
    # a cached node's key (pipelines/cache_keys.py): a later node with the same key reuses
    # this one's outputs once it succeeded
    cache_key: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    # failed warning checks and metric bounds of a graph execution (it still succeeds)
    warnings: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    # a copy of an endpoint call run by a shadow pipeline (docs/rollout.md): its answer
    # went to no one
    shadow: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # the names of the deployment's validations its inputs and outputs violated
    validation_failures: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)


def top_level() -> ColumnElement[bool]:
    """Executions that are not a node of a multi-step pipeline's execution.

    Written through coalesce() on purpose: a bare ``parent_id IS NULL`` lets SQLite pick
    the parent_id index (an equality on NULL), read every top-level execution and sort
    them, 50 ms and more at 100,000 executions, instead of walking the index of the
    query's order or filter and stopping after a page."""
    return func.coalesce(Execution.parent_id, "") == ""


class ExecutionLog(Base):
    __tablename__ = "execution_logs"
    __table_args__ = (Index("ix_execution_logs_execution_seq", "execution_id", "seq"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)
    execution_id: Mapped[str] = mapped_column(ForeignKey("executions.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime)
    stream: Mapped[str] = mapped_column(String(16))  # stdout | stderr | system
    message: Mapped[str] = mapped_column(Text)


class MetricValue(Base):
    """A single-value metric: one value per (execution, name); recording again overwrites."""

    __tablename__ = "metric_values"
    __table_args__ = (Index("uq_metric_values_execution_name", "execution_id", "name",
                            unique=True),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)
    execution_id: Mapped[str] = mapped_column(ForeignKey("executions.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255), index=True)
    value: Mapped[float] = mapped_column(Float)
    pipeline_name: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)
    deployment_name: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ListMetricValue(Base):
    """One value of a list metric; values of a (execution, name) keep their order."""

    __tablename__ = "list_metric_values"
    __table_args__ = (Index("ix_list_metric_values_execution_name_pos", "execution_id", "name",
                            "position"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)
    execution_id: Mapped[str] = mapped_column(ForeignKey("executions.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255), index=True)
    position: Mapped[int] = mapped_column(Integer)
    value: Mapped[float] = mapped_column(Float)
    pipeline_name: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)
    deployment_name: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
