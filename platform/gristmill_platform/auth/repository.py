"""Queries for users and SDK tokens."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from gristmill_platform.db.inserts import insert_row
from gristmill_platform.db.loop_reads import Read
from gristmill_platform.db.models.auth import SdkToken, User

# one statement object, compiled once (SQLAlchemy caches by statement, a new one per call
# still costs its cache-key computation)
_STANDING = (select(SdkToken.revoked_at, User.id, User.is_admin, User.is_viewer)
             .outerjoin(User, User.id == SdkToken.user_id)
             .where(SdkToken.id == bindparam("token_id")))
_TOKENS = cast(Table, SdkToken.__table__)  # typed as any FromClause
_REVOKE = (update(_TOKENS)
           .where(_TOKENS.c.execution_id == bindparam("revoked_execution_id"),
                  _TOKENS.c.revoked_at.is_(None))
           .values(revoked_at=bindparam("when")))


def _standing(row: Any) -> TokenStanding | None:
    return None if row is None else TokenStanding(row[0], row[1], bool(row[2]), bool(row[3]))


# TokenRepository.standing without a session: four plain columns need none of the ORM's
# work (session, autoflush, entity setup), which cost more than the query. Each request's
# check (deps.current_principal) runs it through Transactions.read: on the event loop on
# SQLite (db/loop_reads.py).
STANDING: Read[TokenStanding | None] = Read(_STANDING, _standing, key="token_id")


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, user_id: str) -> User | None:
        return await self.session.get(User, user_id)

    async def get_by_email(self, email: str) -> User | None:
        result = await self.session.execute(select(User).where(User.email == email))
        return result.scalar_one_or_none()

    async def list(self) -> Sequence[User]:
        result = await self.session.execute(select(User).order_by(User.created_at, User.email))
        return result.scalars().all()

    async def count(self) -> int:
        result = await self.session.execute(select(func.count()).select_from(User))
        return int(result.scalar_one())

    async def add(self, user: User) -> User:
        self.session.add(user)
        await self.session.flush()
        return user

    async def delete(self, user: User) -> None:
        await self.session.delete(user)
        await self.session.flush()


class TokenStanding(NamedTuple):
    revoked_at: datetime | None
    user_id: str | None  # None: the user is gone
    is_admin: bool
    is_viewer: bool


class TokenRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, token_id: str) -> SdkToken | None:
        return await self.session.get(SdkToken, token_id)

    async def with_user(self, token_id: str) -> tuple[SdkToken | None, User | None]:
        """The token and its user in one round trip (every authenticated request asks).
        (None, None) when there is no such token; (token, None) when its user is gone."""
        result = await self.session.execute(
            select(SdkToken, User).outerjoin(User, User.id == SdkToken.user_id)
            .where(SdkToken.id == token_id))
        row = result.first()
        return (None, None) if row is None else (row[0], row[1])

    async def standing(self, token_id: str) -> TokenStanding | None:
        """What authenticating a request reads of a token and its user: the columns only,
        in one round trip (every authenticated request asks; loading both as ORM objects
        cost more than the query). None when there is no such token."""
        connection = await self.session.connection()
        return _standing((await connection.execute(_STANDING, {"token_id": token_id})).first())

    async def add(self, token: SdkToken, *, flush: bool = True) -> SdkToken:
        self.session.add(token)
        if flush:
            await self.session.flush()
        return token

    async def insert(self, token: SdkToken) -> SdkToken:
        """Written now with a Core INSERT, not added to the session (db/inserts.py)."""
        await insert_row(self.session, token)
        return token

    async def list(
        self, *, user_id: str | None = None, include_execution_tokens: bool = False
    ) -> Sequence[SdkToken]:
        query = select(SdkToken).order_by(SdkToken.created_at)
        if user_id is not None:
            query = query.where(SdkToken.user_id == user_id)
        if not include_execution_tokens:
            query = query.where(SdkToken.scope == "user")
        result = await self.session.execute(query)
        return result.scalars().all()

    async def revoke_for_execution(self, execution_id: str, when: datetime) -> None:
        """Revoke the execution's tokens not yet revoked, in one UPDATE (no read first).
        A Core UPDATE on the session's connection, as ExecutionRepository.set_columns: the
        ORM's bulk path with its synchronization cost more than the statement, once per
        execution. What the session holds unflushed is flushed first, and the tokens it
        has loaded get the new value, as the ORM path would."""
        if self.session.new or self.session.dirty or self.session.deleted:
            await self.session.flush()
        connection = await self.session.connection()
        await connection.execute(_REVOKE, {"revoked_execution_id": execution_id, "when": when})
        for loaded in list(self.session.identity_map.values()):
            if (isinstance(loaded, SdkToken) and loaded.execution_id == execution_id
                    and loaded.revoked_at is None):
                set_committed_value(loaded, "revoked_at", when)

    async def touch(self, token: SdkToken, when: datetime) -> None:
        token.last_used_at = when
        await self.session.flush()
