from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gristmill_platform.db.base import Base
from gristmill_platform.db.types import UTCDateTime, utcnow


class Step(Base):
    __tablename__ = "steps"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # 110: a function pipeline's hidden step is "pipeline:<name of up to 100>" (0012)
    name: Mapped[str] = mapped_column(String(110), unique=True)
    function_path: Mapped[str] = mapped_column(String(1024))
    function_name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    inputs: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    outputs: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # resolved container settings (project defaults applied); never the deploy key
    container_config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    origin: Mapped[str] = mapped_column(String(32))  # "local" | "git_repository"
    commit_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(32), default="creation_pending")
    status_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    build_log: Mapped[str] = mapped_column(Text, default="")
    environment_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Kubernetes backend: the step image (<registry>/gristmill-steps:<digest>) once built;
    # None locally, where steps run in the virtual environment of environment_key.
    image: Mapped[str | None] = mapped_column(String(512), nullable=True, index=True)
    timeout_s: Mapped[int] = mapped_column(default=180)
    # a pipeline created from a function owns a step users do not manage themselves
    is_hidden: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str | None] = mapped_column(String(36), nullable=True)
    updated_by: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Pipeline(Base):
    __tablename__ = "pipelines"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    step_id: Mapped[str] = mapped_column(ForeignKey("steps.id"), index=True)
    owns_step: Mapped[bool] = mapped_column(Boolean, default=False)
    # a multi-step pipeline's graph (pipelines/graph.py); None for a one-step pipeline.
    # Its step is then a hidden "graph step" (origin "graph") declaring the pipeline's
    # inputs and outputs, so runs and deployments resolve mappings as for one step.
    graph: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
