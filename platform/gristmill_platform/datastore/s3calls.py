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


async def call(fn: Callable[..., Any], /, **kwargs: Any) -> Any:
    try:
        return await anyio.to_thread.run_sync(functools.partial(fn, **kwargs))
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or exc.response.get("ResponseMetadata", {}).get(
            "HTTPStatusCode", "Unknown"))
        raise S3CallError(code, str(error.get("Message") or exc)) from exc
    except BotoCoreError as exc:
        raise S3Unavailable(f"Cannot reach the S3 data store: {exc}") from exc
    except Boto3Error as exc:  # a transfer (upload_file) failed; S3's reason is in the text
        raise S3CallError("TransferFailed", str(exc)) from exc
