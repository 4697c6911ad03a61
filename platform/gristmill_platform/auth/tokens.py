"""Pure token functions: SDK token generation and hashing, access-token (JWT) encoding.

An SDK token looks like ``gm_<id>_<secret>``. The id finds the row; only a SHA-256 of the
secret is stored, and it is compared in constant time. The secret has 256 bits of entropy,
so a fast hash is enough (a slow KDF protects low-entropy passwords, not random keys).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import jwt

TOKEN_PREFIX = "gm"  # noqa: S105
# The longest lifetime an SDK token may be given (without one it never expires): ten
# years, beyond any rotation policy and far inside the dates Python can hold (a lifetime
# of millions of days overflowed them). docs/authentication.md#sdk-token-lifetime
MAX_SDK_TOKEN_DAYS = 3650
ACCESS_TOKEN_ALGORITHM = "HS256"  # noqa: S105
ACCESS_TOKEN_AUDIENCE = "gristmill"  # noqa: S105


@dataclass(frozen=True)
class NewSdkToken:
    token_id: str
    secret_hash: str
    plaintext: str


@dataclass(frozen=True)
class AccessClaims:
    user_id: str
    token_id: str
    scope: str
    execution_id: str | None
    expires_at: int


class InvalidToken(Exception):
    """The token is malformed, forged or expired; the message is safe to show."""


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_sdk_token() -> NewSdkToken:
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return NewSdkToken(
        token_id=token_id,
        secret_hash=hash_secret(secret),
        plaintext=f"{TOKEN_PREFIX}_{token_id}_{secret}",
    )


def sdk_token_lifetime_allowed(lifetime: timedelta) -> bool:
    """Whether an SDK token may be given this lifetime: more than none, at most
    MAX_SDK_TOKEN_DAYS."""
    return timedelta(0) < lifetime <= timedelta(days=MAX_SDK_TOKEN_DAYS)


def split_sdk_token(token: str) -> tuple[str, str]:
    """Return (token id, secret) or raise InvalidToken."""
    parts = token.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or not parts[1] or not parts[2]:
        raise InvalidToken("Invalid SDK token: not a Gristmill SDK token")
    return parts[1], parts[2]


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def encode_access_token(
    *,
    key: str,
    user_id: str,
    token_id: str,
    scope: str,
    execution_id: str | None,
    ttl_s: int,
    now: float | None = None,
) -> tuple[str, int]:
    issued = int(now if now is not None else time.time())
    expires = issued + ttl_s
    claims: dict[str, Any] = {
        "sub": user_id,
        "tid": token_id,
        "scope": scope,
        "iat": issued,
        "exp": expires,
        "aud": ACCESS_TOKEN_AUDIENCE,
        "jti": uuid.uuid4().hex,
    }
    if execution_id is not None:
        claims["execution_id"] = execution_id
    return jwt.encode(claims, key, algorithm=ACCESS_TOKEN_ALGORITHM), expires


# Verifying an access token (PyJWT: split, base64, JSON, HMAC, the claim checks) cost
# about 0.3 ms, an eighth of an authenticated API request's CPU on this machine, and a
# client sends the same access token for its whole hour. What a signature proves does not
# change, so the claims of a token once verified under a key are kept, found by a digest
# of (key, token): no secret is compared outside hmac. Expiry is still checked on every
# use, and revocation by the caller's read of the SDK token's standing on every request.
# Only verified tokens are kept (garbage never fills it), at most VERIFIED_CACHE_SIZE,
# the oldest first out.
VERIFIED_CACHE_SIZE = 4096
EXPIRED = "Access token expired: refresh it with your SDK token"
_verified: dict[bytes, AccessClaims] = {}
_verified_lock = threading.Lock()


def _fingerprint(token: str, key: str) -> bytes:
    return hashlib.sha256(b"%d:%s%s" % (len(key), key.encode(), token.encode())).digest()


def decode_access_token(token: str, *, key: str, now: float | None = None) -> AccessClaims:
    fingerprint = _fingerprint(token, key)
    access = _verified.get(fingerprint)
    if access is None:
        access = _verify(token, key)
        with _verified_lock:
            while len(_verified) >= VERIFIED_CACHE_SIZE:
                del _verified[next(iter(_verified))]
            _verified[fingerprint] = access
    if access.expires_at <= (now if now is not None else time.time()):
        raise InvalidToken(EXPIRED)
    return access


def _verify(token: str, key: str) -> AccessClaims:
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[ACCESS_TOKEN_ALGORITHM],
            audience=ACCESS_TOKEN_AUDIENCE,
            # expiry is checked by the caller against `now`, so tests can pin the clock
            options={"require": ["exp", "iat", "sub", "tid"], "verify_exp": False},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken("Invalid access token") from exc
    if not isinstance(claims["exp"], int):  # never issued so: as good as expired
        raise InvalidToken(EXPIRED)
    return AccessClaims(
        user_id=str(claims["sub"]),
        token_id=str(claims["tid"]),
        scope=str(claims.get("scope", "user")),
        execution_id=claims.get("execution_id"),
        expires_at=int(claims["exp"]),
    )
