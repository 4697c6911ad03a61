"""Exceptions raised by the SDK, one class per HTTP status family.

Catch ``GristmillError`` for "anything the SDK raised", ``APIError`` for "the server said
no", or a precise subclass (``NotFoundError``...) to react to one case. Every ``APIError``
keeps the server's ``message``, ``name``, ``request_id`` and ``additional_data`` so a
notebook user can read what went wrong and quote the request id to an operator.
"""

from __future__ import annotations

import json
from typing import Any

_NO_REQUEST_ID = "NO_REQUEST_ID"
_MAX_DETAIL_CHARS = 500
# Lines of a failed build's log shown in the exception (the platform keeps all of it).
_BUILD_LOG_LINES = 30


def _short(text: str, limit: int = _MAX_DETAIL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class GristmillError(Exception):
    """Base class of every exception the SDK raises on purpose."""


class APIError(GristmillError):
    """The platform answered with an HTTP error status."""

    hint: str | None = None

    def __init__(
        self,
        status_code: int,
        message: str,
        name: str | None = None,
        request_id: str | None = None,
        additional_data: Any = None,
        *,
        method: str | None = None,
        url: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status_code = status_code
        self.message = message
        self.name = name
        self.request_id = None if request_id == _NO_REQUEST_ID else request_id
        self.additional_data = additional_data
        self.method = method
        self.url = url
        # Seconds the server asked us to wait (429/503), when it said so.
        self.retry_after = retry_after
        super().__init__(message)

    def __str__(self) -> str:
        label = f"{self.status_code} {self.name}" if self.name else str(self.status_code)
        text = f"[{label}] {self.message}"
        if self.request_id:
            text += f" (request id: {self.request_id})"
        if self.additional_data not in (None, {}, [], ""):
            try:
                detail = json.dumps(self.additional_data, default=str)
            except (TypeError, ValueError):
                detail = repr(self.additional_data)
            text += f"\nDetails: {_short(detail)}"
        if self.hint:
            text += f"\nHint: {self.hint}"
        return text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status_code={self.status_code!r}, message={self.message!r}, "
            f"name={self.name!r}, request_id={self.request_id!r})"
        )


class BadRequestError(APIError):
    """400: the request is malformed (for instance an invalid data store path)."""


class AuthenticationError(APIError):
    """401: the SDK token or the access token was refused, or (server error name
    ``InvalidEndpointToken``) the endpoint token given to ``trigger_endpoint`` /
    ``retrieve_endpoint_results``; ``hint`` says which token to check."""

    hint = (
        "check your SDK token (sdk_token=..., GRISTMILL_SDK_TOKEN or CRAFT_AI_SDK_TOKEN) "
        "and that it belongs to this environment."
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.name in _ENDPOINT_TOKEN_ERROR_NAMES:
            self.hint = _ENDPOINT_AUTH_HINT


# A wrong endpoint token: the SDK token is not involved in endpoint calls.
_ENDPOINT_TOKEN_ERROR_NAMES = frozenset({"InvalidEndpointToken", "MissingEndpointToken"})
_ENDPOINT_AUTH_HINT = (
    "check the endpoint token (not the SDK token): it is the deployment's own, from "
    'create_deployment(...)["endpoint_token"], get_deployment(name)["endpoint_token"] or '
    "generate_new_endpoint_token(name), which invalidates the previous one."
)


class PermissionDeniedError(APIError):
    """403: authenticated, but not allowed to do this (e.g. from inside a step)."""


class NotFoundError(APIError):
    """404: the object, user or variable does not exist."""


class ConflictError(APIError):
    """409: the request clashes with the current state (e.g. a name already taken)."""


class PayloadTooLargeError(APIError):
    """413: the request or the object is larger than the platform accepts."""


class UnprocessableEntityError(APIError):
    """422: the request is well formed but its values are invalid."""


class RateLimitError(APIError):
    """429: too many requests; the SDK already retried as the server asked."""


class InternalServerError(APIError):
    """5xx: the platform failed; retrying later may help."""


class ServiceUnavailableError(InternalServerError):
    """503: the platform is temporarily unable to answer (starting, overloaded)."""


class ExecutionFailedError(APIError):
    """An execution's own code failed (the server names the error ``ExecutionFailed``).

    Not an ``InternalServerError``: the platform worked, the user's step did not.
    """


class CreationFailedError(GristmillError):
    """A step or pipeline could not be built (bad requirements, missing function...).

    ``reason`` is the platform's short explanation and ``build_log`` the end of the build
    output, both shown when the error is printed.
    """

    def __init__(
        self, kind: str, name: str, reason: str | None, build_log: list[str] | None = None
    ) -> None:
        self.kind = kind
        self.name = name
        self.reason = reason
        self.build_log = build_log or []
        super().__init__(f"The creation of {kind} {name!r} failed: {reason or 'unknown reason'}")

    def __str__(self) -> str:
        text = str(self.args[0])
        if self.build_log:
            text += "\nEnd of the build log:\n" + "\n".join(
                f"  {line}" for line in self.build_log[-_BUILD_LOG_LINES:]
            )
        return text


class CreationTimeoutError(GristmillError, TimeoutError):
    """A step or pipeline was still being built when ``timeout_s`` ran out. The build
    goes on: check it later with ``get_step``/``get_pipeline``."""


class StepCodeError(GristmillError, ValueError):
    """The code folder of a step cannot be sent: a path is missing or outside the folder,
    or the included files exceed the platform's 5 MB limit."""


class APIConnectionError(GristmillError):
    """The platform could not be reached (DNS, refused connection, TLS, timeout...)."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        self.message = message
        self.url = url
        super().__init__(message)


class APITimeoutError(APIConnectionError):
    """The platform did not answer within the client timeout."""


class InvalidResponseError(GristmillError):
    """The platform answered with a success status but a body the SDK cannot read."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        self.message = message
        self.status_code = status_code
        super().__init__(message)


class DataStoreError(GristmillError):
    """A presigned data store URL (S3, MinIO or the built-in store) refused a transfer.

    ``code`` is the S3-style error code (``NoSuchKey``, ``AccessDenied``,
    ``SignatureDoesNotMatch``...).
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status_code: int | None = None,
        additional_data: dict[str, Any] | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.status_code = status_code
        self.additional_data = additional_data or {}
        super().__init__(message)

    def __str__(self) -> str:
        status = f" {self.status_code}" if self.status_code is not None else ""
        text = f"[data store{status} {self.code}] {self.message}"
        if self.additional_data:
            text += f"\nDetails: {_short(json.dumps(self.additional_data, default=str))}"
        return text


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}

_BY_NAME: dict[str, type[APIError]] = {"ExecutionFailed": ExecutionFailedError}


def error_class_for(status_code: int, name: str | None = None) -> type[APIError]:
    if name is not None and name in _BY_NAME:
        return _BY_NAME[name]
    if status_code in _BY_STATUS:
        return _BY_STATUS[status_code]
    if status_code >= 500:
        return InternalServerError
    return APIError


def api_error_from_body(
    status_code: int,
    body: bytes,
    *,
    method: str | None = None,
    url: str | None = None,
    retry_after: float | None = None,
) -> APIError:
    """Build the exception for an error response from the platform's JSON error body
    ``{message, name, request_id, additional_data}``; tolerate anything else."""
    payload: Any
    try:
        payload = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        payload = None

    if isinstance(payload, dict):
        raw_message = payload.get("message")
        message = raw_message if isinstance(raw_message, str) and raw_message else None
        if message is None and isinstance(payload.get("detail"), str):
            # A stock FastAPI/Starlette body, e.g. from a proxy or an unconfigured app.
            message = payload["detail"]
        name = payload.get("name") if isinstance(payload.get("name"), str) else None
        request_id = payload.get("request_id")
        request_id = str(request_id) if request_id not in (None, "") else None
        additional_data = payload.get("additional_data")
    else:
        message = None
        name = None
        request_id = None
        additional_data = None
        if body:
            text = body.decode("utf-8", "replace").strip()
            if text:
                message = f"The server returned an unexpected error body: {_short(text, 300)}"

    if message is None:
        message = "The server returned an error"
    if status_code in (502, 504):
        message = (
            "The platform could not be reached through its gateway "
            f"(HTTP {status_code}); it may be restarting. Original error: {message}"
        )

    cls = error_class_for(status_code, name)
    return cls(
        status_code,
        message,
        name,
        request_id,
        additional_data,
        method=method,
        url=url,
        retry_after=retry_after,
    )


def data_store_error_from_body(status_code: int, body: bytes) -> DataStoreError:
    """Parse an S3-style ``<Error><Code/><Message/>...</Error>`` body."""
    # Parsing attacker-controlled XML: the stdlib parser does not fetch external entities,
    # and error bodies are small, so ElementTree is adequate here.
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(body)  # noqa: S314
    except ET.ParseError:
        text = body.decode("utf-8", "replace").strip()
        return DataStoreError(
            "InvalidResponse",
            "Unable to decode the data store's answer"
            + (f": {_short(text, 300)}" if text else f" (empty body, HTTP {status_code})"),
            status_code=status_code,
        )
    fields: dict[str, Any] = {}
    for child in root:
        # Tolerate namespaced tags ({ns}Code), which some S3 clones send.
        tag = child.tag.rsplit("}", 1)[-1]
        fields[tag] = (child.text or "").strip()
    code = fields.pop("Code", "") or f"HTTP{status_code}"
    message = fields.pop("Message", "") or "The data store refused the request"
    return DataStoreError(code, message, status_code=status_code, additional_data=fields)
