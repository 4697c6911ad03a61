"""``/`` (Home for browsers, the service's description for API clients), sign-in, sign-out."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse

from gristmill_platform.console import services
from gristmill_platform.console.web import (
    ConsoleRoute,
    ViewerDep,
    clear_session_cookie,
    current_viewer,
    render,
    set_session_cookie,
)
from gristmill_platform.db.types import utcnow
from gristmill_platform.deps import AppStateDep, SessionDep
from gristmill_platform.errors import Unauthorized
from gristmill_platform.executions.listing import ExecutionFilters, ExecutionListing
from gristmill_platform.health import service_info

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
# `/` is also the API's service description (JSON for every client but a browser), so it
# stays in the OpenAPI document, described there by http/openapi.py.
root_router = APIRouter(route_class=ConsoleRoute, tags=["health"])


def wants_html(request: Request) -> bool:
    """Browsers ask for text/html; the SDK, curl and httpx send */* and keep getting JSON."""
    return "text/html" in request.headers.get("accept", "")


@root_router.get("/", response_model=None)
async def root(request: Request, state: AppStateDep, session: SessionDep) -> Response:
    if not wants_html(request):
        return JSONResponse(service_info(state.settings))
    await current_viewer(request, state, session)
    recent = await ExecutionListing(session).page(ExecutionFilters(), limit=8)
    counts = await ExecutionListing(session).counts_by_status()
    pipelines = await services.pipelines(state, session).all()
    deployments = await services.deployments(state, session).all()
    trouble = [d for d in deployments
               if d.status not in ("up",) or not d.is_enabled]
    return render(request, "home.html", recent=recent.rows, counts=counts,
                  pipeline_count=len(pipelines), deployment_count=len(deployments),
                  trouble=trouble, execution_total=sum(counts.values()))


@router.get("/console/sign-in", response_model=None)
async def sign_in_page(request: Request, next: str = "/") -> Response:
    return render(request, "sign_in.html", next=_local_path(next))


def _local_path(target: str) -> str:
    """Only paths of this site: ``next`` must never send a signed-in user elsewhere."""
    return target if target.startswith("/") and not target.startswith(("//", "/\\")) else "/"


@router.post("/console/sign-in", response_model=None)
async def sign_in(request: Request, state: AppStateDep, session: SessionDep) -> Response:
    form = await request.form()
    target = _local_path(str(form.get("next") or "/"))
    origin = request.headers.get("origin")
    if origin and origin.split("://", 1)[-1] != request.headers.get("host"):
        return render(request, "sign_in.html", status_code=403, next=target,
                      error="Sign-in refused: the form came from another site")
    try:
        opened = await services.console_sessions(state, session).open(
            str(form.get("token") or ""))
    except Unauthorized as exc:
        return render(request, "sign_in.html", status_code=401, next=target,
                      error=exc.message)
    response = RedirectResponse(target, status_code=303)
    max_age = int((opened.expires_at - utcnow()).total_seconds())
    set_session_cookie(response, state, opened.session_id, max(1, max_age))
    return response


@router.post("/console/sign-out", response_model=None)
async def sign_out(request: Request, viewer: ViewerDep, state: AppStateDep,
                   session: SessionDep) -> Response:
    await services.console_sessions(state, session).close(viewer.session_id)
    response = RedirectResponse("/console/sign-in", status_code=303)
    clear_session_cookie(response, state)
    return response

