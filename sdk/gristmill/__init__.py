"""Gristmill SDK: ``from gristmill import Gristmill``.

Code written for craft-ai-sdk runs after ``from gristmill import CraftAiSdk``.
"""

from gristmill.client import CraftAiSdk, Gristmill
from gristmill.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
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
    UnprocessableEntityError,
)

__version__ = "0.1.0"

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "CraftAiSdk",
    "DataStoreError",
    "ExecutionFailedError",
    "Gristmill",
    "GristmillError",
    "InternalServerError",
    "InvalidResponseError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServiceUnavailableError",
    "UnprocessableEntityError",
    "__version__",
]
