"""Console sign-in sessions: opened with an SDK token, kept server-side, id hashed at rest."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from gristmill_platform.auth.principal import Principal
from gristmill_platform.auth.service import AuthService
from gristmill_platform.db.models.console import ConsoleSession
from gristmill_platform.db.types import utcnow
from gristmill_platform.errors import Unauthorized

COOKIE = "gristmill_console"


def hash_session_id(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def csrf_token(secret_key: str, session_id: str) -> str:
    """Derived from the session, so it needs no storage and dies with the session."""
    return hmac.new(secret_key.encode(), b"console-csrf:" + session_id.encode(),
                    hashlib.sha256).hexdigest()


def csrf_matches(secret_key: str, session_id: str, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(csrf_token(secret_key, session_id),
                                                   str(presented))


@dataclass(frozen=True)
class OpenedSession:
    session_id: str
    expires_at: datetime


class ConsoleSessions:
    def __init__(self, session: AsyncSession, auth: AuthService, *, ttl_s: int) -> None:
        self.session = session
        self.auth = auth
        self.ttl_s = ttl_s

    async def open(self, sdk_token: str) -> OpenedSession:
        token = await self.auth.check_user_token(sdk_token.strip())
        now = utcnow()
        # expired sessions are swept here rather than by a background task
        await self.session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))
        session_id = secrets.token_urlsafe(32)
        expires = now + timedelta(seconds=self.ttl_s)
        if token.expires_at is not None:
            expires = min(expires, token.expires_at)
        self.session.add(ConsoleSession(id_hash=hash_session_id(session_id),
                                        user_id=token.user_id, sdk_token_id=token.id,
                                        created_at=now, expires_at=expires))
        await self.session.flush()
        return OpenedSession(session_id, expires)

    async def principal(self, session_id: str) -> Principal:
        row = await self.session.get(ConsoleSession, hash_session_id(session_id))
        if row is None or row.expires_at <= utcnow():
            raise Unauthorized("Your console session has ended: sign in again",
                               name="SessionEnded")
        return await self.auth.principal_of_token(row.sdk_token_id)

    async def close(self, session_id: str) -> None:
        await self.session.execute(delete(ConsoleSession).where(
            ConsoleSession.id_hash == hash_session_id(session_id)))
