"""How executions look on the wire (contract §3.6-3.12)."""

from __future__ import annotations

from typing import Any

from gristmill_platform.db.models.executions import Execution, ExecutionLog
from gristmill_platform.db.models.steps import Step
from gristmill_platform.executions.transitions import DISPLAY
from gristmill_platform.http.dates import iso


def execution_summary(execution: Execution) -> dict[str, Any]:
    return {
        "execution_id": execution.id,
        "status": DISPLAY.get(execution.status, execution.status),
        "status_reason": execution.status_reason,
        "created_at": iso(execution.created_at),
        "created_by": execution.created_by,
        "start_date": iso(execution.started_at),
        "end_date": iso(execution.ended_at),
        "pipeline_name": execution.pipeline_name,
        "deployment_name": execution.deployment_name,
        "execution_rule": execution.execution_rule,
    }


def _public_item(item: dict[str, Any], include_value: bool) -> dict[str, Any]:
    public = {k: v for k, v in item.items() if k not in ("file", "value")}
    public["mapping_value"] = item.get("mapping_value") or {}
    if include_value and item.get("data_type") != "file":
        public["value"] = item.get("value")
    if item.get("file"):
        public["file"] = {k: v for k, v in item["file"].items() if k != "object"}
    return public


def step_executions(execution: Execution, step: Step | None) -> list[dict[str, Any]]:
    """The documented ``steps`` of an execution: its step's run, with how that step was
    built (null when the step has since been deleted)."""
    config = (step.container_config or {}) if step is not None else {}
    return [{
        "name": execution.step_name,
        "status": DISPLAY.get(execution.status, execution.status),
        "start_date": iso(execution.started_at),
        "end_date": iso(execution.ended_at),
        "commit_id": step.commit_id if step is not None else None,
        "repository_url": config.get("repository_url"),
        "repository_branch": config.get("repository_branch"),
        "requirements_path": config.get("requirements_path"),
        "origin": step.origin if step is not None else None,
    }]


def execution_list_item(execution: Execution, step: Step | None) -> dict[str, Any]:
    return {**execution_summary(execution), "steps": step_executions(execution, step)}


def execution_read(execution: Execution, *, include_io_values: bool = True,
                   step: Step | None = None) -> dict[str, Any]:
    return {
        **execution_summary(execution),
        "steps": step_executions(execution, step),
        "worker": execution.worker,
        "resource_usage": execution.resource_usage,
        "inputs": [_public_item(i, include_io_values) for i in execution.inputs],
        "outputs": [_public_item(o, include_io_values) for o in execution.outputs],
    }


def log_read(line: ExecutionLog) -> dict[str, Any]:
    return {"timestamp": iso(line.timestamp), "message": line.message, "stream": line.stream}
