"""What every console page shares: templates, the signed-in viewer, CSRF, security headers,
and errors rendered as pages (with the API's message) instead of JSON."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape

import gristmill_platform
from gristmill_platform.auth import policy
from gristmill_platform.auth.principal import Principal
from gristmill_platform.console import services
from gristmill_platform.console.sessions import COOKIE, csrf_matches, csrf_token
from gristmill_platform.deps import AppStateDep, SessionDep
from gristmill_platform.errors import (
    AppError,
    Forbidden,
    Unauthorized,
    error_body,
    request_id_of,
)
from gristmill_platform.settings import Settings
from gristmill_platform.state import AppState
from gristmill_platform.steps.schemas import shown_repository_url

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
CSRF_HEADER = "x-csrf-token"

# No inline script anywhere: every behaviour lives in static/console.js.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src {connect}; font-src 'self'; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'; form-action 'self'")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def content_security_policy(settings: Settings) -> str:
    """Uploads go from the browser to the signed URLs of the data store: with the S3
    backend, that store's origin is the one other place the page may connect to."""
    connect = ["'self'"]
    if settings.datastore_backend == "s3":
        endpoint = settings.s3_public_endpoint_url or settings.s3_endpoint_url
        if endpoint:
            parts = urlsplit(endpoint)
            connect.append(f"{parts.scheme}://{parts.netloc}")
        else:
            connect.append("https://*.amazonaws.com")
    return CSP.format(connect=" ".join(connect))


def _duration(start: datetime | None, end: datetime | None) -> str:
    if start is None:
        return ""
    seconds = ((end or datetime.now(start.tzinfo)) - start).total_seconds()
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["duration"] = _duration
    env.filters["when"] = _when
    env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, default=str)
    # a value shown as JSON text, escaped by autoescape as any text: Jinja's tojson is for
    # scripts, and shows 'é' and '<' as \u00e9 and \u003c
    env.filters["json_text"] = lambda v: json.dumps(v, ensure_ascii=False, default=str)
    env.filters["urlpart"] = lambda v: quote(str(v), safe="")
    env.filters["repository_url"] = shown_repository_url
    env.globals["version"] = gristmill_platform.__version__
    return env


TEMPLATES = _environment()


class SignedOut(Exception):
    """No valid session: pages redirect to sign-in, htmx and form posts answer 401."""


@dataclass(frozen=True)
class Viewer:
    principal: Principal
    session_id: str
    csrf: str
    name: str
    email: str

    @property
    def read_only(self) -> bool:
        """A viewer: the pages leave out the forms check_console_request would refuse."""
        return policy.kind_of(self.principal) == "viewer"


def render(request: Request, template: str, status_code: int = 200,
           headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
    state: AppState = request.app.state.gristmill
    body = TEMPLATES.get_template(template).render(
        request=request, environment_url=state.settings.environment_url,
        viewer=getattr(request.state, "viewer", None), path=request.url.path, **context)
    return HTMLResponse(body, status_code=status_code, headers=headers)


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def _same_origin(request: Request) -> bool:
    """Browsers send Origin on POST: a sign-in posted from another site is refused."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def current_viewer(request: Request, state: AppStateDep, session: SessionDep) -> Viewer:
    session_id = request.cookies.get(COOKIE)
    if not session_id:
        raise SignedOut()
    try:
        principal = await services.console_sessions(state, session).principal(session_id)
    except Unauthorized as exc:
        raise SignedOut() from exc
    key = state.settings.secret_key
    assert key is not None
    if request.method not in policy.READ_METHODS:
        presented = request.headers.get(CSRF_HEADER)
        if presented is None and request.headers.get("content-type", "").startswith(
                ("application/x-www-form-urlencoded", "multipart/form-data")):
            presented = str((await request.form()).get("csrf_token") or "")
        if not csrf_matches(key, session_id, presented) or not _same_origin(request):
            raise Forbidden("This form is out of date or came from another site (CSRF check "
                            "failed): reload the page and try again", name="CsrfRejected")
    route = request.scope.get("route")
    policy.check_console_request(principal, request.method, getattr(route, "path_format", None))
    user = await services.auth(state, session).get_user(principal.user_id)
    viewer = Viewer(principal, session_id, csrf_token(key, session_id), user.name, user.email)
    request.state.viewer = viewer
    return viewer


ViewerDep = Annotated[Viewer, Depends(current_viewer)]


def _error_response(request: Request, status: int, message: str, name: str) -> Response:
    if request.headers.get("content-type", "").startswith("application/json"):
        # the upload script's calls: it shows the API's message
        return JSONResponse(error_body(request, message, name), status_code=status)
    if is_htmx(request):
        return render(request, "_error.html", status_code=status, message=message, name=name,
                      request_id=request_id_of(request))
    return render(request, "error.html", status_code=status, message=message, name=name,
                  request_id=request_id_of(request))


def _signed_out(request: Request) -> Response:
    target = "/console/sign-in"
    if request.method == "GET" and not is_htmx(request):
        next_path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{target}?next={quote(next_path, safe='')}", status_code=303)
    response = _error_response(request, 401, "You are signed out: sign in again", "SignedOut")
    response.headers["HX-Redirect"] = target
    return response


class ConsoleRoute(APIRoute):
    """Runs a console handler: errors from the services become an error page or fragment
    with the API's message and status; every response gets the console's security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            started = time.perf_counter()
            try:
                response = await handler(request)
            except SignedOut:
                response = _signed_out(request)
            except AppError as exc:
                response = _error_response(request, exc.status_code, exc.message, exc.name)
            except RequestValidationError as exc:
                message = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}"
                                    for e in exc.errors())
                response = _error_response(request, 400, f"Invalid request: {message}",
                                           "ValidationError")
            state: AppState = request.app.state.gristmill
            response.headers.setdefault("Content-Security-Policy",
                                        content_security_policy(state.settings))
            for header, value in SECURITY_HEADERS.items():
                response.headers.setdefault(header, value)
            # the handler's time, transaction included (bench/console.py reads it)
            elapsed_ms = (time.perf_counter() - started) * 1000
            response.headers["Server-Timing"] = f"app;dur={elapsed_ms:.2f}"
            return response

        return route


def set_session_cookie(response: Response, state: AppState, session_id: str,
                       max_age: int) -> None:
    response.set_cookie(COOKIE, session_id, max_age=max_age, path="/", httponly=True,
                        samesite="lax",
                        secure=state.settings.environment_url.startswith("https://"))


def clear_session_cookie(response: Response, state: AppState) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax",
                           secure=state.settings.environment_url.startswith("https://"))
