"""FastAPI dependencies: the per-request transaction, the caller, the services."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from gristmill_platform.auth import policy
from gristmill_platform.auth.principal import Principal
from gristmill_platform.auth.repository import STANDING, TokenRepository, UserRepository
from gristmill_platform.auth.service import AuthService, principal_of, verified_claims
from gristmill_platform.db.transactions import transaction
from gristmill_platform.errors import Unauthorized
from gristmill_platform.logs import bind_caller
from gristmill_platform.state import AppState


async def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.gristmill
    return state


AppStateDep = Annotated[AppState, Depends(app_state)]


async def db_session(state: AppStateDep) -> AsyncIterator[AsyncSession]:
    """One transaction per request. Services flush; only this commits."""
    async with state.transactions() as session:
        yield session


# scope="function": the transaction commits when the handler returns, before the response
# is sent. With the default request scope FastAPI would send the 200 first and commit
# afterwards, so a client's next call could miss what it was just told was saved.
SessionDep = Annotated[AsyncSession, Depends(db_session, scope="function")]


def auth_for(state: AppState, session: AsyncSession) -> AuthService:
    signing_key = state.settings.secret_key
    assert signing_key is not None
    return AuthService(
        UserRepository(session),
        TokenRepository(session),
        signing_key=signing_key,
        access_token_ttl_s=state.settings.access_token_ttl_s,
    )


async def auth_service(state: AppStateDep, session: SessionDep) -> AuthService:
    return auth_for(state, session)


AuthServiceDep = Annotated[AuthService, Depends(auth_service)]


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized(
            "Missing Authorization header: send 'Authorization: Bearer <access token>' "
            "(get one from POST /api/v1/auth/refresh with your SDK token)"
        )
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("Malformed Authorization header: expected 'Bearer <access token>'")
    return value.strip()


async def current_principal(request: Request, state: AppStateDep) -> Principal:
    token = bearer_token(request)
    signing_key = state.settings.secret_key
    assert signing_key is not None
    # The signature and expiry first: a forged or expired token is refused without
    # taking a database connection.
    claims = verified_claims(token, signing_key)
    # A connection of its own, over before the handler runs: a long-poll holding the
    # request's session for 20 s would hold a pooled connection with it. The token's row
    # is read on every request (no cache): a revocation takes effect at once.
    standing = await state.transactions.read(STANDING, claims.token_id,
                                             token_id=claims.token_id)
    principal = principal_of(claims, standing)
    route = request.scope.get("route")
    path: str = request.scope["path"]
    root: str = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    policy.check_route(principal, request.method, path, getattr(route, "path_format", None),
                       request.path_params)
    request.state.principal = principal
    bind_caller(principal.user_id, principal.execution_id)
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def new_request_id() -> str:
    return uuid.uuid4().hex


__all__ = ["transaction"]  # for routes: db.transactions is where it lives
