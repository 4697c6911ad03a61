"""HMAC signatures for the URLs the control service hands out for its own data store.

A signed URL carries an expiry (Unix seconds) and an HMAC-SHA256 over the operation, the
object and every parameter that matters, so neither the target nor the lifetime can be
changed without the signature failing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class SignatureError(Exception):
    """The URL or policy is forged, malformed or expired; the message is safe to show."""

    def __init__(self, message: str, *, code: str = "AccessDenied") -> None:
        super().__init__(message)
        self.code = code


def _canonical(op: str, params: Mapping[str, str]) -> bytes:
    items = "&".join(f"{k}={params[k]}" for k in sorted(params))
    return f"{op}\n{items}".encode()


@dataclass(frozen=True)
class UrlSigner:
    key: bytes

    def signature(self, op: str, params: Mapping[str, str]) -> str:
        return hmac.new(self.key, _canonical(op, params), hashlib.sha256).hexdigest()

    def sign(self, op: str, params: Mapping[str, str], *, ttl_s: int,
             now: float | None = None) -> dict[str, str]:
        expires = str(int((now if now is not None else time.time()) + ttl_s))
        signed = {**params, "expires": expires}
        return {**signed, "signature": self.signature(op, signed)}

    def verify(self, op: str, params: Mapping[str, str], *, now: float | None = None) -> None:
        given = params.get("signature")
        expires = params.get("expires")
        if not given or not expires:
            raise SignatureError("The URL is not signed")
        unsigned = {k: v for k, v in params.items() if k != "signature"}
        if not hmac.compare_digest(given, self.signature(op, unsigned)):
            raise SignatureError("The URL signature does not match", code="SignatureDoesNotMatch")
        try:
            expiry = int(expires)
        except ValueError as exc:
            raise SignatureError("The URL expiry is malformed") from exc
        if expiry < (now if now is not None else time.time()):
            raise SignatureError("The URL has expired")

    # -- S3-style POST policies ------------------------------------------------------------

    def post_policy(self, *, key: str, max_size: int, ttl_s: int,
                    now: float | None = None) -> dict[str, str]:
        document = {
            "expiration": int((now if now is not None else time.time()) + ttl_s),
            "conditions": [{"key": key}, ["content-length-range", 0, max_size]],
        }
        policy = base64.b64encode(json.dumps(document, separators=(",", ":")).encode()).decode()
        return {"key": key, "policy": policy, "x-gristmill-signature": self.signature(
            "post-policy", {"policy": policy})}

    def verify_post_policy(self, fields: Mapping[str, str], *,
                           now: float | None = None) -> tuple[str, int]:
        """Return (key, max_size) from a valid policy, else raise SignatureError."""
        policy = fields.get("policy")
        signature = fields.get("x-gristmill-signature")
        key = fields.get("key")
        if not policy or not signature or key is None:
            raise SignatureError("The upload form lacks its key, policy or signature",
                                 code="InvalidPolicyDocument")
        expected = self.signature("post-policy", {"policy": policy})
        if not hmac.compare_digest(signature, expected):
            raise SignatureError("The policy signature does not match",
                                 code="SignatureDoesNotMatch")
        try:
            document: dict[str, Any] = json.loads(base64.b64decode(policy, validate=True))
            expiration = int(document["expiration"])
            conditions = document["conditions"]
            allowed_key = next(c["key"] for c in conditions if isinstance(c, dict))
            max_size = next(
                int(c[2]) for c in conditions
                if isinstance(c, list) and c[0] == "content-length-range"
            )
        except (ValueError, KeyError, IndexError, TypeError, StopIteration) as exc:
            raise SignatureError("The policy document is malformed",
                                 code="InvalidPolicyDocument") from exc
        if expiration < (now if now is not None else time.time()):
            raise SignatureError("The upload policy has expired")
        if key != allowed_key:
            raise SignatureError("The form's key does not match the policy")
        return key, max_size
