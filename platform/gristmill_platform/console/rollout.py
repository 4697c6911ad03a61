"""A deployment's traffic rule, validations and per-variant comparison as the deployment
page shows them (docs/rollout.md): read through the API's service (the summary the
deployment read returns, deployments/traffic_service.TrafficService.summary), then turned
into rows ready to render (traffic_view, pure)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from gristmill_platform.auth.repository import UserRepository
from gristmill_platform.db.models.deployments import Deployment
from gristmill_platform.deployments.traffic_service import TrafficService

CHANGES_SHOWN = 5


async def traffic_section(traffic: TrafficService, users: UserRepository,
                          deployment: Deployment) -> dict[str, Any]:
    """The Traffic section of a deployment's page: its summary and its latest changes, each
    with the email of who made it."""
    recent = (await traffic.changes(deployment))[:CHANGES_SHOWN]
    who: dict[str | None, str] = {None: "—"}
    for user_id in {c.changed_by for c in recent} - {None}:
        user = await users.get(str(user_id))
        who[user_id] = user.email if user is not None else str(user_id)  # deleted: its id
    changes = [(who[c.changed_by], c.changed_at, c.what, c.value) for c in recent]
    return traffic_view(deployment.name, deployment.pipeline_name,
                        deployment.execution_rule == "endpoint",
                        await traffic.summary(deployment), changes)


def _args(document: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={json.dumps(value)}" for key, value in document.items())


def sdk_call(deployment: str, document: Mapping[str, Any]) -> str:
    """The SDK call that sets this rule (or removes it: no argument)."""
    args = _args(document)
    return f"sdk.set_deployment_traffic({json.dumps(deployment)}{', ' + args if args else ''})"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:g} ms"


def traffic_view(deployment_name: str, own_pipeline: str, is_endpoint: bool,
                 summary: Mapping[str, Any],
                 changes: Sequence[tuple[str, datetime, str, Any]] = ()) -> dict[str, Any]:
    """What the page's Traffic section shows. ``changes``: (who, when, what, value), the
    newest first."""
    rule: Mapping[str, Any] = summary.get("rule") or {}
    kind = next((k for k in ("split", "key", "shadow") if k in rule), None)
    view: dict[str, Any] = {"kind": kind, "own": own_pipeline, "is_endpoint": is_endpoint,
                            "call": sdk_call(deployment_name, rule)}
    if kind == "split":
        total = sum(rule["split"].values()) or 1
        view["split"] = [{"pipeline": name, "weight": weight,
                          "share": f"{weight * 100 / total:.0f} %"}
                         for name, weight in rule["split"].items()]
    elif kind == "key":
        view["key"] = rule["key"]
        view["routes"] = sorted(rule["routes"].items())
        view["default"] = rule["default"]
    elif kind == "shadow":
        view["shadow"] = list(rule["shadow"])
    validations: Mapping[str, str] = summary.get("validations") or {}
    counts: Mapping[str, int] = summary.get("validation_counts") or {}
    view["validations"] = [{"name": name, "expression": expression,
                            "failures": counts.get(name, 0)}
                           for name, expression in sorted(validations.items())]
    # a validation removed since still has failures on the executions compared
    view["former_validations"] = sorted((n, c) for n, c in counts.items()
                                        if n not in validations)
    view["validations_call"] = (f"sdk.set_deployment_validations({json.dumps(deployment_name)}, "
                                f"{json.dumps(dict(validations) or {'name': 'expression'})})")
    view["comparison"] = [{
        "pipeline": variant["pipeline_name"],
        "role": "shadow copy" if variant["shadow"] else (
            "own pipeline" if variant["pipeline_name"] == own_pipeline else "variant"),
        "shadow": bool(variant["shadow"]),
        "calls": variant["calls"], "ended": variant["ended"],
        "failure_rate": _percent(variant["failure_rate"]),
        "p50": _ms(variant["latency_ms_p50"]), "p95": _ms(variant["latency_ms_p95"]),
        "validation_failures": sorted(variant["validation_failures"].items()),
    } for variant in summary.get("comparison") or []]
    view["window"] = summary.get("comparison_window")
    view["changes"] = [{"by": by, "at": at, "what": what,
                        "value": (_args(value) or "no rule") if what == "traffic"
                        else (json.dumps(value) if value else "none")}
                       for by, at, what, value in list(changes)[:CHANGES_SHOWN]]
    return view
