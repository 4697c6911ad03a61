"""How executions look on the wire (contract §3.6-3.12)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gristmill_platform.db.models.executions import Execution, ExecutionLog
from gristmill_platform.db.models.steps import Step
from gristmill_platform.executions.transitions import ACTIVE, DISPLAY
from gristmill_platform.http.dates import iso
from gristmill_platform.pipelines.graph import upstream_of


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
        # docs/rollout.md
        "shadow": bool(execution.shadow),
        "validation_failures": list(execution.validation_failures or []),
    }


def _public_item(item: dict[str, Any], include_value: bool) -> dict[str, Any]:
    public = {k: v for k, v in item.items() if k not in ("file", "value")}
    public["mapping_value"] = item.get("mapping_value") or {}
    if include_value and item.get("data_type") != "file":
        public["value"] = item.get("value")
    if item.get("file"):
        public["file"] = {k: v for k, v in item["file"].items() if k != "object"}
    return public


def node_steps(execution: Execution, graph: Mapping[str, Any],
               nodes: Sequence[Execution]) -> list[dict[str, Any]]:
    """A graph execution's steps: one per node, in the graph's order. A node not started
    is Waiting while the execution runs, Skipped once it ended."""
    started = {n.node_name: n for n in nodes}
    steps = []
    for node in graph["nodes"]:
        run = started.get(node["name"])
        entry: dict[str, Any] = {"name": node["name"], "step_name": node["step_name"],
                                 "execution_id": None, "status": "Waiting",
                                 "status_reason": None, "start_date": None,
                                 "end_date": None, "worker": None,
                                 "upstream": sorted(upstream_of(node)),
                                 "cached": False}
        if "check" in node:
            entry["check"] = {"severity": node["check"]["severity"],
                              "passed": None if run is None or run.status != "succeeded"
                              else any(o.get("value") is True for o in run.outputs)}
        if run is not None:
            entry["cached"] = bool(run.handle and run.handle.get("backend") == "cache")
            entry.update(execution_id=run.id,
                         status=DISPLAY.get(run.status, run.status),
                         status_reason=run.status_reason, start_date=iso(run.started_at),
                         end_date=iso(run.ended_at), worker=run.worker)
        elif execution.status not in ACTIVE:
            entry["status"] = "Skipped"
        steps.append(entry)
    return steps


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
                   step: Step | None = None, graph: Mapping[str, Any] | None = None,
                   nodes: Sequence[Execution] = ()) -> dict[str, Any]:
    """``graph`` and ``nodes``: a multi-step pipeline's execution has one step per node."""
    return {
        **execution_summary(execution),
        "steps": node_steps(execution, graph, nodes) if graph is not None
        else step_executions(execution, step),
        "worker": execution.worker,
        "resource_usage": execution.resource_usage,
        "inputs": [_public_item(i, include_io_values) for i in execution.inputs],
        "outputs": [_public_item(o, include_io_values) for o in execution.outputs],
        # a graph's failed warning checks and metric bounds
        **({"warnings": execution.warnings or []} if graph is not None else {}),
    }


def log_read(line: ExecutionLog) -> dict[str, Any]:
    return {"timestamp": iso(line.timestamp), "message": line.message, "stream": line.stream}
