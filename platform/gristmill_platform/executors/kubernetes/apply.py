"""Declarative updates with JSON merge patches (RFC 7386), computed purely.

A merge patch replaces lists whole and only deletes a key that is set to ``null``. So a
worker that loses its GPU must send ``nodeSelector: null``, which the patch can only know
by comparing with what was applied last time: like ``kubectl apply``, the manifest we
applied is kept in an annotation on the object, and the next patch is the difference
between it and the new manifest. Fields the cluster filled in (status, defaults) are never
in either, so they are left alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

ANNOTATION_APPLIED = "gristmill.io/last-applied"


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch that turns ``old`` into ``new`` (empty when they are equal)."""
    patch: dict[str, Any] = {}
    for key in old:
        if key not in new:
            patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            nested = merge_patch(before, value)
            if nested:
                patch[key] = nested
        elif key not in old or before != value:
            patch[key] = _plain(value)
    return patch


def apply_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386 application, the server's side (used to check ``merge_patch``)."""
    result: dict[str, Any] = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping):
            before = result.get(key)
            result[key] = apply_patch(before if isinstance(before, Mapping) else {}, value)
        else:
            result[key] = value
    return result


def desired_state(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a manifest we own and patch: labels, annotations and spec."""
    metadata = manifest.get("metadata") or {}
    return {
        "metadata": {
            "labels": dict(metadata.get("labels") or {}),
            "annotations": dict(metadata.get("annotations") or {}),
        },
        "spec": manifest.get("spec") or {},
    }


def with_applied_annotation(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest to send, carrying a record of itself for the next update."""
    state = desired_state(manifest)
    record = json.dumps(state, sort_keys=True, separators=(",", ":"))
    result = json.loads(json.dumps(manifest))
    result["metadata"].setdefault("annotations", {})[ANNOTATION_APPLIED] = record
    return result  # type: ignore[no-any-return]


def applied_state(live: Mapping[str, Any]) -> dict[str, Any] | None:
    """What was applied to a live object last time, or None if we never applied it."""
    annotations = (live.get("metadata") or {}).get("annotations") or {}
    record = annotations.get(ANNOTATION_APPLIED)
    if not record:
        return None
    try:
        state = json.loads(record)
    except ValueError:
        return None
    return state if isinstance(state, dict) else None


def update_patch(live: Mapping[str, Any], manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    """The merge patch that brings ``live`` to ``manifest``; empty when it is already there.

    None when ``live`` carries no record of a previous apply: the object was not created
    here, and patching it blindly could null fields someone else (or the cluster) owns.
    """
    previous = applied_state(live)
    if previous is None:
        return None
    previous["metadata"]["annotations"][ANNOTATION_APPLIED] = _applied_record(live)
    return merge_patch(previous, desired_state(with_applied_annotation(manifest)))


def _applied_record(live: Mapping[str, Any]) -> str:
    record: str = ((live.get("metadata") or {}).get("annotations") or {})[ANNOTATION_APPLIED]
    return record


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value
