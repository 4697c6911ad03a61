"""Environment variables and Settings (current user, SDK tokens, users, step defaults)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from gristmill_platform.auth import policy
from gristmill_platform.auth.tokens import MAX_SDK_TOKEN_DAYS
from gristmill_platform.console import services
from gristmill_platform.console.web import ConsoleRoute, ViewerDep, render
from gristmill_platform.deps import AppStateDep, SessionDep
from gristmill_platform.errors import BadRequest, Forbidden, NotFound
from gristmill_platform.steps.schemas import shown_repository_url

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)


def _see_other(location: str) -> Response:
    return Response(status_code=303, headers={"Location": location})


# -- environment variables ------------------------------------------------------------------

@router.get("/environment-variables")
async def env_vars_page(request: Request, viewer: ViewerDep, session: SessionDep,
                        saved: str = "") -> HTMLResponse:
    variables = await services.env_vars(session).list()
    return render(request, "env_vars.html", variables=variables, saved=saved,
                  manages=policy.env_var_values_visible(viewer.principal))


@router.get("/environment-variables/{name}/value")
async def env_var_value(name: str, request: Request, viewer: ViewerDep, session: SessionDep
                        ) -> HTMLResponse:
    # as the API, which answers viewers with null values: they are often secrets
    if not policy.env_var_values_visible(viewer.principal):
        raise Forbidden("Environment variable values are shown to admins and members only",
                        name="ForbiddenForRole")
    found = next((v for v in await services.env_vars(session).list() if v.name == name), None)
    if found is None:
        raise NotFound(f"Environment variable {name!r} not found")
    return render(request, "_env_value.html", variable=found)


@router.post("/environment-variables", response_model=None)
async def save_env_var(request: Request, viewer: ViewerDep, session: SessionDep) -> Response:
    viewer.principal.require_user_scope("Changing environment variables")
    form = await request.form()
    name, value = str(form.get("name") or "").strip(), str(form.get("value") or "")
    await services.env_vars(session).upsert_many({name: value})
    return _see_other(f"/console/environment-variables?saved={name}")


@router.post("/environment-variables/{name}/delete", response_model=None)
async def delete_env_var(name: str, viewer: ViewerDep, session: SessionDep) -> Response:
    viewer.principal.require_user_scope("Deleting environment variables")
    await services.env_vars(session).delete(name)
    return _see_other("/console/environment-variables")


# -- settings -------------------------------------------------------------------------------

async def _settings(request: Request, viewer: ViewerDep, state: AppStateDep,
                    session: SessionDep, **extra: Any) -> HTMLResponse:
    auth = services.auth(state, session)
    user = await auth.get_user(viewer.principal.user_id)
    tokens = await auth.list_sdk_tokens(
        None if viewer.principal.is_admin else viewer.principal.user_id)
    users = await auth.list_users() if viewer.principal.is_admin else []
    emails = {u.id: u.email for u in users} or {user.id: user.email}
    defaults = {k.removeprefix("step_default_"): v
                for k, v in state.settings.model_dump().items()
                if k.startswith("step_default_") and "deploy_key" not in k}
    defaults["repository_url"] = shown_repository_url(defaults.get("repository_url"))
    return render(request, "settings.html", user=user, tokens=tokens, users=users,
                  emails=emails, defaults=defaults, max_token_days=MAX_SDK_TOKEN_DAYS,
                  **extra)


@router.get("/settings")
async def settings_page(request: Request, viewer: ViewerDep, state: AppStateDep,
                        session: SessionDep) -> HTMLResponse:
    return await _settings(request, viewer, state, session)


def _token_lifetime(days: str) -> timedelta | None:
    """The form's "expires in (days)": none when empty, else 1 to MAX_SDK_TOKEN_DAYS (as
    `gristmill token create --expires-in` takes it, admin.py)."""
    if not days:
        return None
    # ASCII digits only ('²' is a digit to str.isdigit, not to int), few enough for int()
    # (thousands of digits are refused by it), and a lifetime whose expiry is a date
    if not (days.isascii() and days.isdigit() and len(days) <= 9
            and 1 <= int(days) <= MAX_SDK_TOKEN_DAYS):
        raise BadRequest(f"expires in days must be a whole number from 1 to "
                         f"{MAX_SDK_TOKEN_DAYS} (ten years); leave it empty for a token "
                         "that never expires")
    return timedelta(days=int(days))


@router.post("/settings/tokens")
async def create_token(request: Request, viewer: ViewerDep, state: AppStateDep,
                       session: SessionDep) -> HTMLResponse:
    form = await request.form()
    lifetime = _token_lifetime(str(form.get("expires_in_days") or "").strip())
    created = await services.auth(state, session).create_sdk_token(
        viewer.principal.user_id, name=str(form.get("name") or "").strip(),
        expires_in=lifetime)
    # the only time the secret is shown: only its hash is kept
    return await _settings(request, viewer, state, session, new_token=created.plaintext)


@router.post("/settings/tokens/{token_id}/revoke", response_model=None)
async def revoke_token(token_id: str, viewer: ViewerDep, state: AppStateDep,
                       session: SessionDep) -> Response:
    auth = services.auth(state, session)
    token = await auth.tokens.get(token_id)
    if token is None or (token.user_id != viewer.principal.user_id
                         and not viewer.principal.is_admin):
        raise NotFound(f"SDK token {token_id} not found")
    await auth.revoke_sdk_token(token_id)
    return _see_other("/console/settings")


def _require_admin(viewer: ViewerDep, action: str) -> None:
    if not viewer.principal.is_admin:
        raise Forbidden(f"{action} needs an admin", name="AdminOnly")


@router.post("/settings/users", response_model=None)
async def create_user(request: Request, viewer: ViewerDep, state: AppStateDep,
                      session: SessionDep) -> Response:
    _require_admin(viewer, "Creating a user")
    form = await request.form()
    await services.auth(state, session).create_user(
        name=str(form.get("name") or ""), email=str(form.get("email") or ""),
        is_admin=form.get("is_admin") == "1")
    return _see_other("/console/settings")


@router.post("/settings/users/{user_id}/delete", response_model=None)
async def delete_user(user_id: str, viewer: ViewerDep, state: AppStateDep,
                      session: SessionDep) -> Response:
    _require_admin(viewer, "Deleting a user")
    if user_id == viewer.principal.user_id:
        raise BadRequest("You cannot delete yourself while signed in")
    await services.auth(state, session).delete_user(user_id)
    return _see_other("/console/settings")
