"""How deployments look on the wire (contract §4)."""

from __future__ import annotations

from typing import Any

from gristmill_platform.db.models.deployments import Deployment, DeploymentLog
from gristmill_platform.deployments.schedule import human_readable
from gristmill_platform.http.dates import iso


def _with_types(items: list[dict[str, Any]], declared: list[dict[str, Any]], key: str
                ) -> list[dict[str, Any]]:
    types = {d["name"]: d for d in declared}
    return [{**item, "data_type": types.get(item[key], {}).get("data_type"),
             "description": types.get(item[key], {}).get("description")} for item in items]


def deployment_read(deployment: Deployment, step_inputs: list[dict[str, Any]],
                    step_outputs: list[dict[str, Any]], *, token: str | None = None,
                    pods: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": deployment.name,
        "mode": deployment.mode,
        "execution_rule": deployment.execution_rule,
        "status": deployment.status,
        "status_reason": deployment.status_reason,
        "is_enabled": deployment.is_enabled,
        "description": deployment.description,
        "pipeline": {"name": deployment.pipeline_name},
        "inputs_mapping": _with_types(deployment.inputs_mapping, step_inputs,
                                      "pipeline_input_name"),
        "outputs_mapping": _with_types(deployment.outputs_mapping, step_outputs,
                                       "pipeline_output_name"),
        "created_at": iso(deployment.created_at), "created_by": deployment.created_by,
        "updated_at": iso(deployment.updated_at), "updated_by": deployment.updated_by,
        "version": deployment.generation,
        "execution_timeout_s": deployment.execution_timeout_s,
    }
    if deployment.execution_rule == "endpoint":
        # only the hash is stored: the token itself is shown once, when it is created
        body["endpoint_token"] = token
        body["endpoint_url_path"] = deployment.endpoint_url_path or deployment.name
    if deployment.execution_rule == "periodic" and deployment.schedule:
        body["schedule"] = deployment.schedule
        body["human_readable_schedule"] = human_readable(deployment.schedule)
        body["next_execution_at"] = iso(deployment.next_fire_at)
    if deployment.mode == "low_latency":
        body["enable_parallel_executions"] = deployment.enable_parallel_executions
        if deployment.enable_parallel_executions:
            body["max_parallel_executions_per_pod"] = deployment.max_parallel_executions_per_pod
        body["ram_request"] = deployment.ram_request
        body["gpu_request"] = deployment.gpu_request
        body["pods"] = pods or []
        body["deployment_health"] = "Ready" if any(
            p.get("status") == "running" for p in (pods or [])) else "Unavailable"
    return body


def deployment_list_item(deployment: Deployment) -> dict[str, Any]:
    return {"name": deployment.name, "pipeline_name": deployment.pipeline_name,
            "execution_rule": deployment.execution_rule, "mode": deployment.mode,
            "status": deployment.status, "is_enabled": deployment.is_enabled,
            "created_at": iso(deployment.created_at)}


def deployment_log_read(line: DeploymentLog) -> dict[str, Any]:
    return {"timestamp": iso(line.timestamp), "message": line.message, "pod_id": line.pod_id,
            "type": line.type}
