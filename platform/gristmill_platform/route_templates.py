"""The route template a request matched ("/api/v1/executions/{execution_id}"), for logs and
metrics: never the filled-in path, which carries names users consider private and would
give a metric one series per object."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi.routing import iter_route_contexts
from starlette.routing import BaseRoute
from starlette.types import Scope

UNMATCHED = "unmatched"

# Routers are module-level objects included under the same prefixes by every app this
# process builds, so one table keyed by route serves them all.
_templates: dict[int, str] = {}


def learn(routes: Sequence[BaseRoute]) -> None:
    """Record the full template of every route of an app (called once it is built)."""
    for context in iter_route_contexts(routes):
        template = context.path_format
        if template:
            _templates[id(context.original_route)] = template


def template_of(scope: Scope) -> str | None:
    """The matched route's template, None before routing or when nothing matched."""
    route: Any = scope.get("route")
    if route is None:
        return None
    known = _templates.get(id(route))
    if known is not None:
        return known
    template = getattr(route, "path_format", None)
    return template if isinstance(template, str) else None
