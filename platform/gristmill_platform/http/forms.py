"""Bracket-notation form fields (``inputs[0][name]=a``) back into nested data (pure).

The craft-ai-sdk client flattens nested payloads PHP-style; every leaf arrives as a
string, empty lists and dicts vanish, and list indices may have gaps (contract §2.1)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from gristmill_platform.errors import BadRequest

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")
MAX_DEPTH = 12


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {k: _listify(v) for k, v in node.items()}
    if converted and all(k.isdigit() for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted


def unflatten(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for key, value in pairs:
        match = _KEY.match(key)
        if not match:
            raise BadRequest(f"Malformed form field name {key!r}")
        path = [match.group(1), *_PART.findall(match.group(2))]
        if len(path) > MAX_DEPTH or any(part == "" for part in path):
            raise BadRequest(f"Malformed form field name {key!r}")
        node: dict[str, Any] = root
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise BadRequest(f"Form field {key!r} conflicts with another field")
            node = child
        if isinstance(node.get(path[-1]), dict):
            raise BadRequest(f"Form field {key!r} conflicts with another field")
        node[path[-1]] = value
    return {k: _listify(v) for k, v in root.items()}


def parse_bool(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "t"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "f", ""):
        return False
    raise BadRequest(f"{field} must be a boolean (True or False), got {value!r}")


def revive_json_leaves(value: Any) -> Any:
    """Best effort for json/array defaults that went through the form: numeric-looking
    and True/False leaves become typed again (an exact round trip is impossible)."""
    if isinstance(value, dict):
        return {k: revive_json_leaves(v) for k, v in value.items()}
    if isinstance(value, list):
        return [revive_json_leaves(v) for v in value]
    if isinstance(value, str):
        if value in ("True", "False"):
            return value == "True"
        try:
            return int(value)
        except ValueError:
            pass
        try:
            return float(value)
        except ValueError:
            return value
    return value
