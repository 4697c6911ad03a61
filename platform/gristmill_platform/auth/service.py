"""Token exchange, authentication, and management of users and SDK tokens."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from gristmill_platform.auth.principal import EXECUTION_SCOPE, USER_SCOPE, Principal
from gristmill_platform.auth.repository import (
    TokenRepository,
    TokenStanding,
    UserRepository,
)
from gristmill_platform.auth.tokens import (
    AccessClaims,
    InvalidToken,
    decode_access_token,
    encode_access_token,
    hash_secret,
    new_sdk_token,
    secret_matches,
    split_sdk_token,
)
from gristmill_platform.db.models.auth import SdkToken, User
from gristmill_platform.db.types import utcnow
from gristmill_platform.errors import BadRequest, Conflict, NotFound, Unauthorized

# Compared against when a token id is unknown, so a miss costs the same as a wrong secret.
_DUMMY_HASH = hash_secret("gristmill-no-such-token")


def verified_claims(access_token: str, signing_key: str) -> AccessClaims:
    """The claims of an access token whose signature and expiry hold."""
    try:
        return decode_access_token(access_token, key=signing_key)
    except InvalidToken as exc:
        raise Unauthorized(str(exc)) from exc


def principal_of(claims: AccessClaims, standing: TokenStanding | None) -> Principal:
    """Who acts through an access token, given its SDK token's standing as read now. No
    cache: the token row is read on every request, so a revocation (on any replica)
    takes effect at once."""
    if standing is None or standing.revoked_at is not None:
        raise Unauthorized(
            "The SDK token behind this access token was revoked", name="TokenRevoked"
        )
    if standing.user_id is None or standing.user_id != claims.user_id:
        raise Unauthorized("The user of this token no longer exists")
    return Principal(
        user_id=standing.user_id,
        token_id=claims.token_id,
        scope=claims.scope,
        execution_id=claims.execution_id,
        is_admin=standing.is_admin,
        is_viewer=standing.is_viewer,
    )


@dataclass(frozen=True)
class IssuedAccessToken:
    access_token: str
    expires_at: int


@dataclass(frozen=True)
class CreatedSdkToken:
    token: SdkToken
    plaintext: str


def _normalise_email(email: str) -> str:
    cleaned = email.strip().lower()
    local, _, domain = cleaned.partition("@")
    if not local or not domain or " " in cleaned or len(cleaned) > 320:
        raise BadRequest(f"Invalid email address: {email!r}")
    return cleaned


class AuthService:
    def __init__(self, users: UserRepository, tokens: TokenRepository, *, signing_key: str,
                 access_token_ttl_s: int) -> None:
        self.users = users
        self.tokens = tokens
        self.signing_key = signing_key
        self.access_token_ttl_s = access_token_ttl_s

    # -- token exchange and authentication -------------------------------------------------

    async def _check_sdk_token(self, plaintext: str) -> SdkToken:
        try:
            token_id, secret = split_sdk_token(plaintext)
        except InvalidToken as exc:
            raise Unauthorized("Invalid refresh token") from exc
        token = await self.tokens.get(token_id)
        if not secret_matches(secret, token.secret_hash if token else _DUMMY_HASH) or not token:
            raise Unauthorized("Invalid refresh token")
        now = utcnow()
        if token.revoked_at is not None:
            raise Unauthorized("This SDK token was revoked: ask for a new one", name="TokenRevoked")
        if token.expires_at is not None and token.expires_at <= now:
            raise Unauthorized("This SDK token has expired: ask for a new one", name="TokenExpired")
        return token

    async def exchange(self, refresh_token: str) -> IssuedAccessToken:
        token = await self._check_sdk_token(refresh_token)
        await self.tokens.touch(token, utcnow())
        return self.access_token_for(token)

    def access_token_for(self, token: SdkToken) -> IssuedAccessToken:
        """An access token for ``token``, as exchanging it would give (no check: for a
        token just created, such as the one an execution's worker is launched with)."""
        ttl = self.access_token_ttl_s
        if token.expires_at is not None:
            # never let an access token outlive the SDK token it came from
            remaining = int((token.expires_at - utcnow()).total_seconds())
            ttl = max(1, min(ttl, remaining))
        access, expires = encode_access_token(
            key=self.signing_key,
            user_id=token.user_id,
            token_id=token.id,
            scope=token.scope,
            execution_id=token.execution_id,
            ttl_s=ttl,
        )
        return IssuedAccessToken(access_token=access, expires_at=expires)

    async def check_user_token(self, plaintext: str) -> SdkToken:
        """A valid SDK token of the user scope (web console sign-in): an execution's token
        only lets a running step report, never open a session."""
        token = await self._check_sdk_token(plaintext)
        if token.scope != USER_SCOPE:
            raise Unauthorized("Sign in with your own SDK token, not an execution's",
                               name="ForbiddenInExecution")
        await self.tokens.touch(token, utcnow())
        return token

    async def principal_of_token(self, token_id: str) -> Principal:
        """Who acts through an SDK token now: refused once it is revoked or expired, or its
        user deleted (what a console session checks on every request)."""
        token, user = await self.tokens.with_user(token_id)
        if token is None or token.revoked_at is not None:
            raise Unauthorized("The SDK token of this session was revoked", name="TokenRevoked")
        if token.expires_at is not None and token.expires_at <= utcnow():
            raise Unauthorized("The SDK token of this session has expired", name="TokenExpired")
        if user is None:
            raise Unauthorized("The user of this token no longer exists")
        return Principal(user_id=user.id, token_id=token.id, scope=token.scope,
                         execution_id=token.execution_id, is_admin=user.is_admin,
                         is_viewer=user.is_viewer)

    async def authenticate(self, access_token: str) -> Principal:
        claims = verified_claims(access_token, self.signing_key)
        return principal_of(claims, await self.tokens.standing(claims.token_id))

    # -- SDK tokens ---------------------------------------------------------------------------

    async def create_sdk_token(
        self,
        user_id: str,
        *,
        name: str = "",
        expires_in: timedelta | None = None,
        scope: str = USER_SCOPE,
        execution_id: str | None = None,
        flush: bool = True,
        owner_checked: bool = False,
        insert_now: bool = False,
    ) -> CreatedSdkToken:
        """flush=False: the token row is written with the session's next flush.
        insert_now: written at once with a Core INSERT, the token not added to the session
        (an execution's, which nothing reads back in its transaction; db/inserts.py).
        owner_checked: the caller knows the user exists (an execution's token, minted for
        its owner): not read again; the row's foreign key still refuses a user deleted
        meanwhile."""
        if scope not in (USER_SCOPE, EXECUTION_SCOPE):
            raise BadRequest(f"Unknown token scope {scope!r}")
        if scope == EXECUTION_SCOPE and not execution_id:
            raise BadRequest("An execution token needs an execution id")
        if not owner_checked and await self.users.get(user_id) is None:
            raise NotFound(f"User {user_id} not found")
        fresh = new_sdk_token()
        token = SdkToken(
            id=fresh.token_id,
            user_id=user_id,
            name=name,
            secret_hash=fresh.secret_hash,
            scope=scope,
            execution_id=execution_id,
            created_at=utcnow(),
            expires_at=utcnow() + expires_in if expires_in else None,
        )
        if insert_now:
            await self.tokens.insert(token)
        else:
            await self.tokens.add(token, flush=flush)
        return CreatedSdkToken(token=token, plaintext=fresh.plaintext)

    async def revoke_sdk_token(self, token_id: str) -> SdkToken:
        token = await self.tokens.get(token_id)
        if token is None:
            raise NotFound(f"SDK token {token_id} not found")
        if token.revoked_at is None:
            token.revoked_at = utcnow()
            await self.tokens.session.flush()
        return token

    async def revoke_execution_tokens(self, execution_id: str) -> None:
        await self.tokens.revoke_for_execution(execution_id, utcnow())

    async def list_sdk_tokens(self, user_id: str | None = None) -> Sequence[SdkToken]:
        return await self.tokens.list(user_id=user_id)

    # -- users --------------------------------------------------------------------------------

    async def create_user(self, *, name: str, email: str, is_admin: bool = False,
                          is_viewer: bool = False) -> User:
        name = name.strip()
        if not name or len(name) > 200:
            raise BadRequest("A user needs a name of 1 to 200 characters")
        email = _normalise_email(email)
        if await self.users.get_by_email(email) is not None:
            raise Conflict(f"A user with email {email} already exists")
        now = utcnow()
        user = User(
            id=str(uuid.uuid4()), name=name, email=email, is_admin=is_admin,
            is_viewer=is_viewer and not is_admin,
            created_at=now, updated_at=now,
        )
        return await self.users.add(user)

    async def get_user(self, user_id: str) -> User:
        user = await self.users.get(user_id)
        if user is None:
            raise NotFound(f"User {user_id} not found")
        return user

    async def find_user(self, id_or_email: str) -> User:
        user = await self.users.get(id_or_email)
        if user is None and "@" in id_or_email:
            user = await self.users.get_by_email(id_or_email.strip().lower())
        if user is None:
            raise NotFound(f"User {id_or_email} not found")
        return user

    async def list_users(self) -> Sequence[User]:
        return await self.users.list()

    async def delete_user(self, id_or_email: str) -> User:
        user = await self.find_user(id_or_email)
        if user.is_admin and sum(1 for u in await self.users.list() if u.is_admin) == 1:
            raise Conflict("Refusing to delete the last admin user")
        await self.users.delete(user)
        return user

    async def bootstrap_admin(self) -> CreatedSdkToken | None:
        """On a fresh environment, create the admin user and its first SDK token."""
        if await self.users.count() > 0:
            return None
        admin = await self.create_user(name="Admin", email="admin@localhost", is_admin=True)
        return await self.create_sdk_token(admin.id, name="created by gristmill up")
