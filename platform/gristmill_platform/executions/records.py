"""An execution's row as the fast path keeps it in memory (executions/low_latency.py) until
the journal writes it: the executions table's columns, without an ORM instance's
bookkeeping, which costs more than the rest of a warm call."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(slots=True)
class ExecutionRecord:
    id: str
    pipeline_id: str | None
    pipeline_name: str
    step_id: str | None
    step_name: str
    deployment_id: str | None
    deployment_name: str | None
    execution_rule: str
    status: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    created_by: str | None
    created_at: datetime
    status_reason: str | None = None
    worker: str | None = None
    handle: dict[str, Any] | None = None
    resource_usage: dict[str, Any] | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    heartbeat_at: datetime | None = None
    timeout_s: int | None = None
    shadow: bool = False
    validation_failures: list[str] | None = None
    # graph executions' columns (executions/graph_scheduler.py): a fast-path execution is
    # never a node, but the journal writes every column of the table
    parent_id: str | None = None
    node_name: str | None = None
    cache_key: str | None = None
    warnings: list[dict[str, Any]] | None = None
