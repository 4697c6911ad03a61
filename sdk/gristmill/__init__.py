"""Gristmill SDK: ``from gristmill import Gristmill``.

Code written for craft-ai-sdk runs after ``from gristmill import CraftAiSdk``.

Names are imported on first use: the step runner (``python -m gristmill.runtime``) imports
this package too, and must not pay for httpx and rich on every execution's start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gristmill._version import __version__

_EXPORTS = {
    "Gristmill": "gristmill.client",
    "CraftAiSdk": "gristmill.client",
    "APIConnectionError": "gristmill.errors",
    "APIError": "gristmill.errors",
    "APITimeoutError": "gristmill.errors",
    "AuthenticationError": "gristmill.errors",
    "BadRequestError": "gristmill.errors",
    "ConflictError": "gristmill.errors",
    "CreationFailedError": "gristmill.errors",
    "CreationTimeoutError": "gristmill.errors",
    "DataStoreError": "gristmill.errors",
    "ExecutionFailedError": "gristmill.errors",
    "GristmillError": "gristmill.errors",
    "InternalServerError": "gristmill.errors",
    "InvalidResponseError": "gristmill.errors",
    "NotFoundError": "gristmill.errors",
    "PayloadTooLargeError": "gristmill.errors",
    "PermissionDeniedError": "gristmill.errors",
    "RateLimitError": "gristmill.errors",
    "ServiceUnavailableError": "gristmill.errors",
    "StepCodeError": "gristmill.errors",
    "UnprocessableEntityError": "gristmill.errors",
    "step": "gristmill.authoring",
    "pipeline": "gristmill.authoring",
    "check": "gristmill.authoring",
    "Input": "gristmill.io",
    "Output": "gristmill.io",
    "InputSource": "gristmill.io",
    "OutputDestination": "gristmill.io",
    "INPUT_OUTPUT_TYPES": "gristmill.io",
    "CREATION_PARAMETER_VALUE": "gristmill.io",
    "STEP_PARAMETER": "gristmill.io",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gristmill' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from gristmill.authoring import check, pipeline, step
    from gristmill.client import CraftAiSdk, Gristmill
    from gristmill.errors import (
        APIConnectionError,
        APIError,
        APITimeoutError,
        AuthenticationError,
        BadRequestError,
        ConflictError,
        CreationFailedError,
        CreationTimeoutError,
        DataStoreError,
        ExecutionFailedError,
        GristmillError,
        InternalServerError,
        InvalidResponseError,
        NotFoundError,
        PayloadTooLargeError,
        PermissionDeniedError,
        RateLimitError,
        ServiceUnavailableError,
        StepCodeError,
        UnprocessableEntityError,
    )
    from gristmill.io import (
        CREATION_PARAMETER_VALUE,
        INPUT_OUTPUT_TYPES,
        STEP_PARAMETER,
        Input,
        InputSource,
        Output,
        OutputDestination,
    )
