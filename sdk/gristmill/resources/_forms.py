"""The creation form of steps and hidden-step pipelines (contract §2.1, §3.1b/c).

craft-ai-sdk sends the creation payload as a bracket-flattened form
(``container_config[included_folders][0]=src``), url-encoded for git steps and multipart
when a code archive is attached. The platform rebuilds the structure from the keys, so
the exact flattening is part of the wire contract.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any

from gristmill.io import CREATION_PARAMETER_VALUE, Input, Output


def flatten_form(data: Mapping[str, Any], parent: str | None = None) -> list[tuple[str, str]]:
    """``{"a": {"b": [1, True]}}`` -> ``[("a[b][0]", "1"), ("a[b][1]", "True")]``.

    Leaves become ``str(value)`` (so ``True``/``False`` keep Python's capitals) and
    ``None`` an empty string; empty lists and dicts disappear, as with craft-ai-sdk.
    """
    fields: list[tuple[str, str]] = []
    for key, value in data.items():
        name = str(key) if parent is None else f"{parent}[{key}]"
        fields.extend(_flatten_value(value, name))
    return fields


def _flatten_value(value: Any, name: str) -> list[tuple[str, str]]:
    if isinstance(value, Mapping):
        return flatten_form(value, name)
    if isinstance(value, list | tuple):
        fields: list[tuple[str, str]] = []
        for index, item in enumerate(value):
            fields.extend(_flatten_value(item, f"{name}[{index}]"))
        return fields
    if value is None:
        return [(name, "")]
    if isinstance(value, enum.Enum):
        return [(name, str(value.value))]
    return [(name, str(value))]


def wire_container_config(container_config: Mapping[str, Any]) -> dict[str, Any]:
    """``container_config`` as sent: ``local_folder`` stays on this machine;
    ``FALLBACK_PROJECT`` and ``None`` are left out (use the environment's default) and
    ``NULL`` is sent as an empty value (explicitly nothing)."""
    wire: dict[str, Any] = {}
    for key, value in container_config.items():
        if key == "local_folder":
            continue
        if value is CREATION_PARAMETER_VALUE.NULL:
            wire[key] = None
        elif value is not CREATION_PARAMETER_VALUE.FALLBACK_PROJECT and value is not None:
            wire[key] = value
    return wire


def check_creation_arguments(
    inputs: Sequence[Input] | None, outputs: Sequence[Output] | None, timeout_s: float
) -> None:
    if timeout_s < 120:
        raise ValueError("The timeout must be at least 2 minutes (timeout_s=120).")
    if inputs is not None and not all(isinstance(i, Input) for i in inputs):
        raise ValueError(
            "'inputs' must be a list of gristmill.io.Input, e.g. [Input('x', 'number')]."
        )
    if outputs is not None and not all(isinstance(o, Output) for o in outputs):
        raise ValueError(
            "'outputs' must be a list of gristmill.io.Output, e.g. [Output('y', 'json')]."
        )


def creation_payload(
    name_field: str,
    name: str,
    *,
    function_path: str | None,
    function_name: str | None,
    description: str | None,
    container_config: Mapping[str, Any],
    inputs: Sequence[Input] | None,
    outputs: Sequence[Output] | None,
) -> dict[str, Any]:
    """The logical payload, in the field order craft-ai-sdk sends."""
    payload: dict[str, Any] = {name_field: name}
    for key, value in (
        ("function_path", function_path),
        ("function_name", function_name),
        ("description", description),
    ):
        if value is not None:
            payload[key] = value
    payload["container_config"] = wire_container_config(container_config)
    if inputs is not None:
        payload["inputs"] = [i.to_dict() for i in inputs]
    if outputs is not None:
        payload["outputs"] = [o.to_dict() for o in outputs]
    return payload
