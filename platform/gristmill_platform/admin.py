"""Administration of an environment straight on its database (the `gristmill users` and
`gristmill token` commands): works whether or not the service is running."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncEngine

from gristmill_platform.auth.repository import TokenRepository, UserRepository
from gristmill_platform.auth.service import AuthService, CreatedSdkToken
from gristmill_platform.auth.tokens import MAX_SDK_TOKEN_DAYS, sdk_token_lifetime_allowed
from gristmill_platform.bootstrap import recorded_environment_url
from gristmill_platform.db import migrate
from gristmill_platform.db.engine import create_engine, create_session_factory
from gristmill_platform.db.models.auth import SdkToken, User
from gristmill_platform.errors import BadRequest
from gristmill_platform.settings import Settings, resolve_settings
from gristmill_platform.users import service as users
from gristmill_platform.users.ownership import OwnershipRepository
from gristmill_platform.users.service import Deleted


class AdminConsole:
    def __init__(self, settings: Settings) -> None:
        self._explicit_public_url = settings.public_url  # given, not derived from a port
        self.settings = resolve_settings(settings)
        self._engine: AsyncEngine | None = None

    @property
    def environment_url(self) -> str:
        """Where the environment of this data directory serves: as its last `gristmill up`
        recorded, else as these settings derive it."""
        if self._explicit_public_url:
            return self._explicit_public_url
        return recorded_environment_url(self.settings.data_dir) or self.settings.environment_url

    async def __aenter__(self) -> AdminConsole:
        assert self.settings.database_url
        # administering a fresh data dir (before the first `gristmill up`) must work too
        await asyncio.to_thread(migrate.upgrade, self.settings.database_url)
        self._engine = create_engine(self.settings.database_url)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._engine is not None:
            await self._engine.dispose()

    @asynccontextmanager
    async def _auth(self) -> AsyncIterator[AuthService]:
        assert self._engine is not None and self.settings.secret_key
        async with create_session_factory(self._engine)() as session, session.begin():
            yield AuthService(UserRepository(session), TokenRepository(session),
                              signing_key=self.settings.secret_key,
                              access_token_ttl_s=self.settings.access_token_ttl_s)

    async def create_user(self, name: str, email: str, *, is_admin: bool = False,
                          is_viewer: bool = False) -> User:
        async with self._auth() as auth:
            return await auth.create_user(name=name, email=email, is_admin=is_admin,
                                          is_viewer=is_viewer)

    async def list_users(self) -> Sequence[User]:
        async with self._auth() as auth:
            return await auth.list_users()

    async def delete_user(self, id_or_email: str, *, transfer_to: str | None = None
                          ) -> Deleted:
        async with self._auth() as auth:
            return await users.delete_user(auth, OwnershipRepository(auth.users.session),
                                           id_or_email, transfer_to=transfer_to)

    async def create_token(self, user: str, *, name: str = "",
                           expires_in: timedelta | None = None) -> CreatedSdkToken:
        if expires_in is not None and not sdk_token_lifetime_allowed(expires_in):
            # the console's bound too (console/environment.py); beyond it, the expiry
            # date could even overflow (an OverflowError, not an answer)
            raise BadRequest(f"An SDK token lives at most {MAX_SDK_TOKEN_DAYS} days (ten "
                             "years): give a shorter lifetime, or none for a token that "
                             "never expires")
        async with self._auth() as auth:
            owner = await auth.find_user(user)
            return await auth.create_sdk_token(owner.id, name=name, expires_in=expires_in)

    async def list_tokens(self, user: str | None = None) -> list[tuple[SdkToken, User]]:
        async with self._auth() as auth:
            owner_id = (await auth.find_user(user)).id if user else None
            users = {u.id: u for u in await auth.list_users()}
            return [(t, users[t.user_id]) for t in await auth.list_sdk_tokens(owner_id)]

    async def revoke_token(self, token_id: str) -> SdkToken:
        async with self._auth() as auth:
            return await auth.revoke_sdk_token(token_id)
