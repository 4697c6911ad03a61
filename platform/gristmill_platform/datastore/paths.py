"""Validation of data store object paths (pure)."""

from __future__ import annotations

import unicodedata

from gristmill_platform.errors import BadRequest

# Step archives and execution files live in the data store too, under this prefix; users
# neither see nor touch it.
INTERNAL_PREFIX = ".gristmill"


def is_internal(path: str) -> bool:
    return path == INTERNAL_PREFIX or path.startswith(INTERNAL_PREFIX + "/")


class InvalidPath(BadRequest):
    name = "InvalidPath"


def validate_object_path(path: str, *, max_length: int | None = 1024) -> str:
    """Return the path if it is a safe object key, else raise InvalidPath (400).

    Keys are '/'-separated like S3's, but since the local backend keeps an index rather
    than mirroring keys onto the filesystem, the rules exist for users (and for S3
    compatibility), not to fence a directory: no '..' or '.' segments, no leading '/',
    no empty segments, no control characters or backslashes, bounded length.
    """
    if not isinstance(path, str) or path == "":
        raise InvalidPath("The object path is empty")
    if max_length is not None and len(path.encode()) > max_length:
        raise InvalidPath(
            f"The object path is too long ({len(path.encode())} bytes, at most {max_length})"
        )
    if path.startswith("/"):
        raise InvalidPath(f"Invalid object path {path!r}: it must be relative (no leading '/')")
    if "\\" in path:
        raise InvalidPath(f"Invalid object path {path!r}: use '/' as separator, not '\\'")
    if any(unicodedata.category(ch) == "Cc" for ch in path):
        raise InvalidPath(f"Invalid object path {path!r}: control characters are not allowed")
    segments = path.split("/")
    if any(segment == "" for segment in segments):
        raise InvalidPath(
            f"Invalid object path {path!r}: empty segment ('//' or a trailing '/')"
        )
    if any(segment in (".", "..") for segment in segments):
        raise InvalidPath(f"Invalid object path {path!r}: '.' and '..' segments are not allowed")
    return path


def validate_user_path(path: str, *, max_length: int | None = 1024) -> str:
    """A path a user names (the data store API, a run's or a deployment's mapping, an
    export): a safe object key outside the platform's own prefix. max_length None leaves
    the length to the backend that writes it (it knows the configured limit)."""
    validate_object_path(path, max_length=max_length)
    if is_internal(path):
        raise InvalidPath(f"Invalid object path {path!r}: '{INTERNAL_PREFIX}' is reserved "
                          "for the platform's own files")
    return path
