"""Kubernetes-safe names and label values, deterministic per input.

Object names double as idempotency keys (the same execution id always gives the same pod
name, so a second submit hits 409 Conflict instead of starting a second worker). Whenever
cleaning a value loses information, a short hash of the original is appended so two
different inputs never share a name.
"""

from __future__ import annotations

import hashlib
import re

MAX_NAME = 63  # DNS-1123 label: pod hostnames and Service names must fit in one
MAX_LABEL_VALUE = 63
_HASH_LEN = 10

_NOT_NAME_CHARS = re.compile(r"[^a-z0-9-]+")
_NOT_LABEL_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_DASHES = re.compile(r"-{2,}")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def short_hash(value: str, length: int = _HASH_LEN) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:length]


def resource_name(prefix: str, raw: str, max_length: int = MAX_NAME) -> str:
    """``prefix`` + a DNS-1035 label form of ``raw`` (lowercase, dashes, <= 63 chars).

    The prefix must start with a letter, so the result is valid for Services too.
    """
    if not _NAME.fullmatch(prefix.rstrip("-")):
        raise ValueError(f"name prefix {prefix!r} must start with a letter and be DNS-safe")
    slug = _DASHES.sub("-", _NOT_NAME_CHARS.sub("-", raw.lower())).strip("-")
    room = max_length - len(prefix)
    if slug == raw and 0 < len(slug) <= room:
        return prefix + slug
    suffix = short_hash(raw)
    kept = slug[: max(room - len(suffix) - 1, 0)].rstrip("-")
    return f"{prefix}{kept}-{suffix}" if kept else f"{prefix}{suffix}"


def label_value(raw: str) -> str:
    """A valid label value (<= 63 chars, alphanumerics at both ends) standing for ``raw``."""
    if _LABEL_VALUE.fullmatch(raw) and len(raw) <= MAX_LABEL_VALUE:
        return raw
    cleaned = _NOT_LABEL_CHARS.sub("-", raw).strip("-._")
    suffix = short_hash(raw)
    kept = cleaned[: MAX_LABEL_VALUE - len(suffix) - 1].rstrip("-._")
    return f"{kept}-{suffix}" if kept else suffix


def is_label_value(value: str) -> bool:
    return len(value) <= MAX_LABEL_VALUE and _LABEL_VALUE.fullmatch(value) is not None


def is_resource_name(value: str) -> bool:
    return len(value) <= MAX_NAME and _NAME.fullmatch(value) is not None
