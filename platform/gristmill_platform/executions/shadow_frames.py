"""The frames between a control service and its shadow runner (executions/shadow_runner.py):
a 4-byte big-endian length, then a JSON object. Pure, no I/O.

To the runner, one frame per copy: ``{"e": <endpoint path>, "p": <shadow pipeline>,
"b": <the call's inputs>}``. Back, now and then, what became of them per endpoint path:
``{"done": {path: n}, "dropped": {path: n}}`` (done: run, or skipped and logged there;
dropped: not run, counted)."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

HEADER = struct.Struct(">I")
# a call's inputs are bounded by the request body limit; this bounds a corrupt header
MAX_FRAME = 64 * 1024 * 1024


class BadFrame(ValueError):
    """A frame that is not what the other side sends."""


@dataclass(frozen=True)
class Copy:
    path: str  # the endpoint's, as in /endpoints/<path>
    pipeline: str
    body: Mapping[str, Any]


def frame(document: Mapping[str, Any]) -> bytes:
    payload = json.dumps(document, separators=(",", ":")).encode()
    return HEADER.pack(len(payload)) + payload


def copy_frame(path: str, pipeline: str, body: Mapping[str, Any]) -> bytes:
    return frame({"e": path, "p": pipeline, "b": body})


def length(header: bytes) -> int:
    (size,) = HEADER.unpack(header)
    if size > MAX_FRAME:
        raise BadFrame(f"a frame of {size} bytes is over the {MAX_FRAME} bytes limit")
    return int(size)


def document(payload: bytes) -> dict[str, Any]:
    try:
        found = json.loads(payload)
    except ValueError as exc:
        raise BadFrame(f"not JSON: {exc}") from exc
    if not isinstance(found, dict):
        raise BadFrame("not a JSON object")
    return found


def read_copy(found: Mapping[str, Any]) -> Copy:
    path, pipeline, body = found.get("e"), found.get("p"), found.get("b")
    if not isinstance(path, str) or not isinstance(pipeline, str) \
            or not isinstance(body, dict):
        raise BadFrame("a copy needs an endpoint path, a pipeline name and the inputs")
    return Copy(path, pipeline, body)


def read_counts(found: Mapping[str, Any], what: str) -> dict[str, int]:
    counts = found.get(what) or {}
    if not isinstance(counts, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in counts.items()):
        raise BadFrame(f"{what} must map endpoint paths to counts")
    return counts
