"""Routers included as one flat list of routes, as FastAPI did before 0.137.

Since 0.137, `include_router` keeps a tree: a request is matched by walking every included
router in turn (each candidate costing a few scope updates), and once found, each level
of the tree matches it again on the way down. With the control service's ~120 routes in
three levels that was about 0.1 ms of matching per API request measured alone, and
several times that inside a running service (docs/performance-log.md). The service's
routers are fixed when its app is built, so it copies their routes into the app's own
list instead: one scan per request, nothing matched twice.

Only what an inclusion of ours needs is supported: a prefix, no router-level
dependencies, tags, responses or limits added by the inclusion itself (a router's own
are already part of its routes). Anything else is refused when the app is built, not
silently dropped.

A route keeps the class its router gave it, except a plain APIRoute: it takes the
target's route class, as a route added to the target directly would (the service's
route class reads JSON bodies strictly: http/bodies.py StrictJsonRoute).
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import APIRouter
from fastapi.routing import APIRoute


class NotFlattenable(TypeError):
    """A router holds something this module cannot copy faithfully."""


def include_flat(target: APIRouter, routers: Iterable[APIRouter], *, prefix: str = "") -> None:
    """Add every route of `routers`, in order, to `target`, under `prefix`."""
    for router in routers:
        for route in router.routes:
            if not isinstance(route, APIRoute):
                # an included router, a plain Starlette route or a mount: list the
                # router itself (or add the route to the app directly)
                raise NotFlattenable(
                    f"cannot flatten {type(route).__name__} "
                    f"{getattr(route, 'path', '')!r} of a router: include it directly")
            _copy(target, route, prefix)


def _copy(target: APIRouter, route: APIRoute, prefix: str) -> None:
    # Every argument add_api_route takes, read back from the route it made: the route
    # already holds what its router merged in (prefix, tags, dependencies, responses,
    # default response class), and what was inferred (the response model).
    target.add_api_route(
        prefix + route.path,
        route.endpoint,
        response_model=route.response_model,
        status_code=route.status_code,
        tags=route.tags,
        dependencies=route.dependencies,
        summary=route.summary,
        description=route.description,
        response_description=route.response_description,
        responses=route.responses,
        deprecated=route.deprecated,
        methods=route.methods,
        operation_id=route.operation_id,
        response_model_include=route.response_model_include,
        response_model_exclude=route.response_model_exclude,
        response_model_by_alias=route.response_model_by_alias,
        response_model_exclude_unset=route.response_model_exclude_unset,
        response_model_exclude_defaults=route.response_model_exclude_defaults,
        response_model_exclude_none=route.response_model_exclude_none,
        include_in_schema=route.include_in_schema,
        response_class=route.response_class,
        name=route.name,
        route_class_override=(target.route_class if type(route) is APIRoute
                              else type(route)),
        callbacks=route.callbacks,
        openapi_extra=route.openapi_extra,
        generate_unique_id_function=route.generate_unique_id_function,
        strict_content_type=route.strict_content_type,
        max_body_size=route.max_body_size,
        form_limits=route.form_limits or None,
    )
