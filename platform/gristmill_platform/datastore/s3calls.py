"""Calling boto3 from the event loop: every call runs in a worker thread (boto3 is
blocking), and botocore's exceptions become AppErrors that say what went wrong."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import anyio
from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError

from gristmill_platform.errors import AppError
from gristmill_platform.telemetry.metrics import DATASTORE_ERRORS


class S3CallError(AppError):
    """S3 refused a call. Callers that expect some refusals (a missing key, an unknown
    upload) look at ``code``; any other one reaches the user as a 502 naming S3's code,
    since it is the store's configuration (bucket, permissions), not the request, that is
    wrong."""

    status_code = 502
    name = "DataStoreError"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"The S3 data store refused the request: {code}: {message}",
                         additional_data={"s3_code": code})
        self.code = code
        self.s3_message = message


class S3Unavailable(AppError):
    status_code = 503
    name = "DataStoreUnavailable"


# refusals a caller's request explains (a missing key, a bad part): not the store's errors
EXPECTED_CODES = frozenset({"NoSuchKey", "404", "NotFound", "NoSuchUpload", "InvalidPart",
                            "InvalidPartOrder", "EntityTooSmall", "EntityTooLarge"})


async def call(fn: Callable[..., Any], /, **kwargs: Any) -> Any:
    operation = getattr(fn, "__name__", "s3")
    try:
        return await anyio.to_thread.run_sync(functools.partial(fn, **kwargs))
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or exc.response.get("ResponseMetadata", {}).get(
            "HTTPStatusCode", "Unknown"))
        if code not in EXPECTED_CODES:
            DATASTORE_ERRORS.labels(operation).inc()
        raise S3CallError(code, str(error.get("Message") or exc)) from exc
    except BotoCoreError as exc:
        DATASTORE_ERRORS.labels(operation).inc()
        raise S3Unavailable(f"Cannot reach the S3 data store: {exc}") from exc
    except Boto3Error as exc:  # a transfer (upload_file) failed; S3's reason is in the text
        DATASTORE_ERRORS.labels(operation).inc()
        raise S3CallError("TransferFailed", str(exc)) from exc
