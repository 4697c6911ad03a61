"""JSON as the API accepts it (pure): Python's parser also takes NaN, Infinity, numbers
that overflow to infinity and nesting deep enough to exhaust the recursion limit; none of
those is valid input, and each is refused here with the reason, before anything stores it."""

from __future__ import annotations

import json
import math
from typing import Any

from gristmill_platform.errors import BadRequest

# Deeper documents are refused: nothing legitimate nests this far, and the serializers
# downstream (pydantic, the worker's JSON) have recursion limits of their own that would
# otherwise fail the execution later with a misleading reason.
MAX_JSON_DEPTH = 100


class JsonRefused(ValueError):
    """Valid JSON by Python's lenient parser, but not a document we accept."""


def _refuse_constant(name: str) -> Any:
    raise JsonRefused(f"{name} is not a JSON number (use null or a finite number)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonRefused(f"the number {text[:40]} is out of range (it would be infinite)")
    return value


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether containers nest deeper than ``limit`` (iterative: no recursion to exhaust)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = (node.values() if isinstance(node, dict)
                    else node if isinstance(node, list) else None)
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, dict | list))
    return False


def strict_loads(raw: str | bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """json.loads, refusing NaN, infinities (including numbers too large for a float) and
    documents nested deeper than ``max_depth``; JsonRefused (a ValueError) says why."""
    try:
        value = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise JsonRefused(f"it nests deeper than {max_depth} levels") from None
    # a document cannot nest deeper than it has brackets: most bodies skip the walk
    opening = (raw.count(b"[") + raw.count(b"{") if isinstance(raw, bytes)
               else raw.count("[") + raw.count("{"))
    if opening > max_depth and _depth_exceeds(value, max_depth):
        raise JsonRefused(f"it nests deeper than {max_depth} levels")
    return value


def parse_json(raw: str | bytes, what: str) -> Any:
    """strict_loads, or the 400 naming ``what``."""
    try:
        return strict_loads(raw)
    except ValueError as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}") from exc


