"""Inputs, outputs and their mappings, as craft-ai-sdk 0.50.1 defines them (contract §7).

``Input``/``Output`` declare what a step or pipeline takes and returns (``create_step``,
``create_pipeline``); ``InputSource``/``OutputDestination`` say where a run or a
deployment takes each input from and sends each output to (``run_pipeline``,
``create_deployment``). ``to_dict()`` gives the wire form: keys in a fixed order, ``None``
values left out, falsy values such as ``0``, ``False`` or ``""`` kept.
"""

from __future__ import annotations

import enum
import warnings
from typing import Any


class INPUT_OUTPUT_TYPES(str, enum.Enum):  # craft-ai-sdk's public name
    """Data types of inputs and outputs; members compare equal to their string value."""

    STRING = "string"
    NUMBER = "number"
    BOOLEAN = "boolean"
    JSON = "json"
    ARRAY = "array"
    FILE = "file"

    def __str__(self) -> str:
        # Sent as form fields with str(): "string", never "INPUT_OUTPUT_TYPES.STRING".
        return self.value


class CREATION_PARAMETER_VALUE(enum.Enum):  # craft-ai-sdk's public name
    """Special ``container_config`` values of ``create_step``/``create_pipeline``.

    ``FALLBACK_PROJECT`` (the same as leaving the key out, or ``None``): use the
    environment's default. ``NULL``: explicitly no value (e.g. no requirements file even if
    the environment has a default one).
    """

    FALLBACK_PROJECT = "FALLBACK_PROJECT"
    NULL = "NULL"


# craft-ai-sdk's documentation also calls it STEP_PARAMETER.
STEP_PARAMETER = CREATION_PARAMETER_VALUE


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def _plain(value: Any) -> Any:
    # An enum member (e.g. INPUT_OUTPUT_TYPES.FILE) travels as its value.
    return value.value if isinstance(value, enum.Enum) else value


class Input:
    """An input of a step or pipeline: a parameter of its function.

    Args:
        name: Name of the function parameter.
        data_type: ``"string"``, ``"number"``, ``"boolean"``, ``"json"``, ``"array"`` or
            ``"file"`` (or an ``INPUT_OUTPUT_TYPES`` member).
        description: Free text.
        is_required: Whether a value must be given at execution time.
        default_value: Value used when none is given; of the type ``data_type`` says.
    """

    def __init__(
        self,
        name: str,
        data_type: str,
        description: str | None = None,
        is_required: bool | None = None,
        default_value: Any = None,
    ) -> None:
        self.name = name
        self.data_type = data_type
        self.description = description
        self.is_required = is_required
        self.default_value = default_value

    def to_dict(self) -> dict[str, Any]:
        return _without_none(
            {
                "name": self.name,
                "data_type": _plain(self.data_type),
                "description": self.description,
                "is_required": self.is_required,
                "default_value": self.default_value,
            }
        )

    def __repr__(self) -> str:
        return f"Input({self.to_dict()!r})"


class Output:
    """An output of a step or pipeline: a key of the dict its function returns.

    Args:
        name: Key in the returned dict.
        data_type: As for ``Input``.
        description: Free text.
    """

    def __init__(self, name: str, data_type: str, description: str | None = None) -> None:
        self.name = name
        self.data_type = data_type
        self.description = description

    def to_dict(self) -> dict[str, Any]:
        return _without_none(
            {
                "name": self.name,
                "data_type": _plain(self.data_type),
                "description": self.description,
            }
        )

    def __repr__(self) -> str:
        return f"Output({self.to_dict()!r})"


class InputSource:
    """Where a pipeline input takes its value from, in a run or a deployment.

    Give ``pipeline_input_name`` and one source: ``endpoint_input_name`` (endpoint
    deployments; then ``is_required`` and ``default_value`` may be set too),
    ``constant_value``, ``environment_variable_name``, ``datastore_path`` (the file is
    downloaded and the step receives ``{"path": ...}``) or ``is_null=True``.
    ``step_input_name`` is the deprecated name of ``pipeline_input_name``.
    """

    def __init__(
        self,
        pipeline_input_name: str | None = None,
        endpoint_input_name: str | None = None,
        environment_variable_name: str | None = None,
        is_required: bool | None = None,
        default_value: Any = None,
        constant_value: Any = None,
        is_null: bool | None = None,
        datastore_path: str | None = None,
        step_input_name: str | None = None,
    ) -> None:
        if pipeline_input_name is not None and step_input_name is not None:
            raise ValueError("Both pipeline_input_name and step_input_name cannot be specified.")
        if pipeline_input_name is None and step_input_name is None:
            raise ValueError('missing "pipeline_input_name" argument.')
        if step_input_name is not None:
            warnings.warn(
                "step_input_name is deprecated; use pipeline_input_name instead.",
                FutureWarning,
                stacklevel=2,
            )
        self.pipeline_input_name = pipeline_input_name
        self.endpoint_input_name = endpoint_input_name
        self.environment_variable_name = environment_variable_name
        self.is_required = is_required
        self.default_value = default_value
        self.constant_value = constant_value
        self.is_null = is_null
        self.datastore_path = datastore_path
        self.step_input_name = step_input_name

    def to_dict(self) -> dict[str, Any]:
        return _without_none(
            {
                "pipeline_input_name": self.pipeline_input_name,
                "endpoint_input_name": self.endpoint_input_name,
                "environment_variable_name": self.environment_variable_name,
                "is_required": self.is_required,
                "default_value": self.default_value,
                "constant_value": self.constant_value,
                "is_null": self.is_null,
                "datastore_path": self.datastore_path,
                "step_input_name": self.step_input_name,
            }
        )

    def __repr__(self) -> str:
        return f"InputSource({self.to_dict()!r})"


class OutputDestination:
    """Where a pipeline output goes, in a run or a deployment.

    Give ``pipeline_output_name`` and one destination: ``endpoint_output_name``,
    ``datastore_path`` (may hold ``{execution_id}``, ``{date}`` and ``{date_time}``, filled
    in by the platform) or ``is_null=True``. ``step_output_name`` is the deprecated name
    of ``pipeline_output_name``.
    """

    def __init__(
        self,
        pipeline_output_name: str | None = None,
        endpoint_output_name: str | None = None,
        is_null: bool | None = None,
        datastore_path: str | None = None,
        step_output_name: str | None = None,
    ) -> None:
        if pipeline_output_name is not None and step_output_name is not None:
            raise ValueError("Both pipeline_output_name and step_output_name cannot be specified.")
        if pipeline_output_name is None and step_output_name is None:
            raise ValueError('missing "pipeline_output_name" argument.')
        # craft-ai-sdk 0.50.1 warns when the *new* name is used (a bug); warn on the old one.
        if step_output_name is not None:
            warnings.warn(
                "step_output_name is deprecated; use pipeline_output_name instead.",
                FutureWarning,
                stacklevel=2,
            )
        self.pipeline_output_name = pipeline_output_name
        self.endpoint_output_name = endpoint_output_name
        self.is_null = is_null
        self.datastore_path = datastore_path
        self.step_output_name = step_output_name

    def to_dict(self) -> dict[str, Any]:
        return _without_none(
            {
                "pipeline_output_name": self.pipeline_output_name,
                "endpoint_output_name": self.endpoint_output_name,
                "is_null": self.is_null,
                "datastore_path": self.datastore_path,
                "step_output_name": self.step_output_name,
            }
        )

    def __repr__(self) -> str:
        return f"OutputDestination({self.to_dict()!r})"


__all__ = [
    "CREATION_PARAMETER_VALUE",
    "INPUT_OUTPUT_TYPES",
    "STEP_PARAMETER",
    "Input",
    "InputSource",
    "Output",
    "OutputDestination",
]
