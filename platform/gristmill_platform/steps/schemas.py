"""How steps look on the wire (contract §2)."""

from __future__ import annotations

from typing import Any

from gristmill_platform.db.models.steps import Step
from gristmill_platform.http.dates import iso
from gristmill_platform.steps.git import redact


def creation_info(step: Step) -> dict[str, Any]:
    info: dict[str, Any] = {
        "created_at": iso(step.created_at),
        "updated_at": iso(step.updated_at),
        "created_by": step.created_by,
        "updated_by": step.updated_by,
        "commit_id": step.commit_id,
        "status": step.status,
        "origin": step.origin,
    }
    if step.status_reason:
        info["status_reason"] = step.status_reason
    warnings = step.container_config.get("warnings") if step.container_config else None
    if warnings:
        info["warnings"] = warnings
    return info


def shown_repository_url(url: str | None) -> str | None:
    """A repository URL as answers show it: credentials a user put in it
    (https://user:token@host/...) are for the clone only, not for every reader of the
    step (docs/steps-and-pipelines.md)."""
    return redact(url) if url else url


def public_container_config(step: Step) -> dict[str, Any]:
    config = {k: v for k, v in (step.container_config or {}).items() if k != "warnings"}
    if config.get("repository_url"):
        config["repository_url"] = shown_repository_url(config["repository_url"])
    return config


def step_read(step: Step) -> dict[str, Any]:
    return {
        "parameters": {
            "step_name": step.name,
            "function_path": step.function_path,
            "function_name": step.function_name,
            "description": step.description,
            "inputs": step.inputs,
            "outputs": step.outputs,
            "container_config": public_container_config(step),
        },
        "creation_info": creation_info(step),
    }


def step_list_item(step: Step) -> dict[str, Any]:
    config = step.container_config or {}
    return {
        "step_name": step.name,
        "status": step.status,
        "created_at": iso(step.created_at),
        "updated_at": iso(step.updated_at),
        "repository_branch": config.get("repository_branch"),
        "repository_url": shown_repository_url(config.get("repository_url")),
        "commit_id": step.commit_id,
        "origin": step.origin,
    }
