"""The route template a request matched ("/api/v1/executions/{execution_id}"), for logs and
metrics: never the filled-in path, which carries names users consider private and would
give a metric one series per object."""

from __future__ import annotations

from typing import Any

from starlette.types import Scope

UNMATCHED = "unmatched"


def template_of(scope: Scope) -> str | None:
    """The matched route's template, None before routing or when nothing matched. The
    app's routes are one flat list (http/flat_routes.py), so a route's own template is
    the whole one, prefix included."""
    route: Any = scope.get("route")
    template = getattr(route, "path_format", None)
    return template if isinstance(template, str) else None
