from __future__ import annotations

from fastapi import APIRouter

from gristmill_platform.auth.schemas import AccessTokenRead, RefreshRequest
from gristmill_platform.deps import AuthServiceDep

router = APIRouter(tags=["auth"])


@router.post("/auth/refresh", response_model=AccessTokenRead)
async def refresh(body: RefreshRequest, auth: AuthServiceDep) -> AccessTokenRead:
    issued = await auth.exchange(body.refresh_token)
    return AccessTokenRead(access_token=issued.access_token, expires_at=issued.expires_at)
