from __future__ import annotations

from fastapi import APIRouter

from gristmill_platform.deps import AuthServiceDep, PrincipalDep
from gristmill_platform.users.schemas import UserRead

router = APIRouter(prefix="/users", tags=["users"])


@router.get("/me", response_model=UserRead)
async def who_am_i(principal: PrincipalDep, auth: AuthServiceDep) -> UserRead:
    user = await auth.get_user(principal.user_id)
    return UserRead(id=user.id, name=user.name, email=user.email)


@router.get("/{user_id}", response_model=UserRead)
async def get_user(user_id: str, principal: PrincipalDep, auth: AuthServiceDep) -> UserRead:
    user = await auth.get_user(user_id)
    return UserRead(id=user.id, name=user.name, email=user.email)
