"""Endpoint tokens: random, verified by hash in constant time, kept encrypted so that
get_deployment can show them to the deployment's users (the contract requires it)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken


@dataclass(frozen=True)
class EndpointToken:
    plaintext: str
    digest: str
    encrypted: str


def _fernet(secret_key: str) -> Fernet:
    key = hashlib.sha256(b"gristmill endpoint tokens\0" + secret_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_endpoint_token(secret_key: str, chosen: str | None = None) -> EndpointToken:
    """A random token, or the caller's (craft-ai-sdk 0.74 lets them choose; checked by
    endpoint_options.chosen_endpoint_token)."""
    plaintext = chosen if chosen is not None else secrets.token_urlsafe(32)
    return EndpointToken(plaintext, digest(plaintext),
                         _fernet(secret_key).encrypt(plaintext.encode()).decode())


def matches(candidate: str, stored_digest: str | None) -> bool:
    return stored_digest is not None and hmac.compare_digest(digest(candidate), stored_digest)


def reveal(encrypted: str | None, secret_key: str) -> str | None:
    if not encrypted:
        return None
    try:
        return _fernet(secret_key).decrypt(encrypted.encode()).decode()
    except InvalidToken:
        return None  # the environment's key changed: generate a new token
