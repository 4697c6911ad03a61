"""HTTP plumbing shared by every resource: one ``httpx.Client``, access tokens, retries and
response decoding (wire contract §0.3-§0.5 and §1).

Two kinds of calls go through here:

* API calls (``request``): JSON in and out, ``Authorization: Bearer <access token>`` and
  the ``gristmill-client`` header; errors are ``APIError`` subclasses.
* presigned data store calls (``presigned``/``stream_presigned``): no auth and no SDK
  headers (the URL carries its own signature, and may point at S3); errors are
  S3-style XML, raised as ``DataStoreError``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from gristmill._execution_context import current_execution_id
from gristmill._version import __version__
from gristmill.config import Settings
from gristmill.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    InvalidResponseError,
    api_error_from_body,
    data_store_error_from_body,
)

log = logging.getLogger("gristmill")

CLIENT_HEADER = "gristmill-client"
# Refresh a little before expiry so a token never dies in flight (same margin as
# craft-ai-sdk).
TOKEN_REFRESH_MARGIN_S = 30.0
INITIAL_RETRY_DELAY_S = 0.5
MAX_RETRY_DELAY_S = 8.0
# Long-polls are held by the platform (20 s on Gristmill, up to 60 s per the contract)
# before a 307; the read timeout must outlast that.
LONG_POLL_HOLD_S = 120.0
# A longer Retry-After means "come back much later": surface it rather than block a
# notebook cell for minutes.
MAX_RETRY_AFTER_S = 60.0

_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

Body = bytes | Callable[[], Iterator[bytes]] | None
# httpx's multipart ``files``: name -> (filename, bytes or binary file); or a callable
# building them, called again for each try.
FileParts = Mapping[str, tuple[str, Any]]
Files = FileParts | Callable[[], FileParts]


def client_version() -> str:
    return __version__


# -- pure helpers -------------------------------------------------------------------------


def jwt_expiry(token: str) -> float:
    """The ``exp`` claim of a JWT, read without checking the signature (the server checks
    it; the client only needs to know when to refresh)."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[1]:
        raise InvalidResponseError("The platform returned an access token that is not a JWT.")
    segment = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(segment.encode("ascii")))
    except (binascii.Error, UnicodeError, ValueError):
        raise InvalidResponseError(
            "The platform returned an access token whose payload is not JSON."
        ) from None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise InvalidResponseError(
            "The platform returned an access token without a numeric 'exp' claim."
        )
    return float(exp)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date.
    ``None`` when absent or unreadable; never negative."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def backoff_delay(attempt: int, *, rand: Callable[[], float] = random.random) -> float:
    """Delay before retry number ``attempt + 1``: 0.5 s, 1 s, 2 s... capped at 8 s, minus up
    to 25 % jitter so that many clients do not retry in lockstep."""
    base = min(INITIAL_RETRY_DELAY_S * (2.0**attempt), MAX_RETRY_DELAY_S)
    return base * (1.0 - 0.25 * rand())


def should_retry_status(status_code: int, *, idempotent: bool) -> bool:
    # 429 and 503 mean "not processed, try again", whatever the method. 502/504 come from
    # a gateway and the request may have reached the service, so only replay safe calls.
    if status_code in (429, 503):
        return True
    return idempotent and status_code in (502, 504)


def should_retry_transport(exc: httpx.TransportError, *, idempotent: bool) -> bool:
    # Connection refused/DNS/connect timeout: the request never left, any call may be
    # replayed. Anything later (read timeout, reset mid-answer) only for safe calls.
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return True
    return idempotent


def decode_response(response: httpx.Response) -> Any:
    """Success body per wire contract §0.3: bytes for octet-stream/csv, ``None`` for 204
    or ``OK``, JSON otherwise."""
    content_type = response.headers.get("content-type", "")
    if "application/octet-stream" in content_type or "text/csv" in content_type:
        return response.content
    if response.status_code == 204:
        return None
    body = response.content
    if body.strip() == b"OK":
        return None
    if not body:
        raise InvalidResponseError(
            f"The platform answered HTTP {response.status_code} with an empty body "
            f"to {response.request.method} {_redact(str(response.request.url))}.",
            status_code=response.status_code,
        )
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        snippet = body[:300].decode("utf-8", "replace")
        raise InvalidResponseError(
            f"The platform answered HTTP {response.status_code} with a body that is not "
            f"JSON: {snippet!r}",
            status_code=response.status_code,
        ) from None


def _redact(url: str) -> str:
    """The URL without its query string, which may carry signatures or tokens."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _connection_error(exc: httpx.TransportError, method: str, url: str) -> APIConnectionError:
    where = _origin(url)
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(
            f"{method} {_redact(url)} timed out ({type(exc).__name__}). The platform at "
            f"{where} is slow or unreachable; raise timeout=... if the call is expected "
            "to take long.",
            url=_redact(url),
        )
    detail = str(exc) or type(exc).__name__
    return APIConnectionError(
        f"Could not reach the platform at {where} ({detail}). Check the environment URL "
        "and that the platform is running.",
        url=_redact(url),
    )


# -- transport ----------------------------------------------------------------------------


class Transport:
    """Sends requests with authentication and retries. Safe to share between threads."""

    def __init__(
        self,
        settings: Settings,
        *,
        http_client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._owns_client = http_client is None
        self._http = http_client or httpx.Client(
            timeout=httpx.Timeout(settings.timeout),
            # Redirects are meaningful in this API (e.g. 307 long-polls); never follow them
            # silently, and never forward a bearer token to another host.
            follow_redirects=False,
        )
        self._sleep = sleep
        self._clock = clock
        self._lock = threading.Lock()
        self._access_token: str | None = None
        self._access_token_exp = 0.0
        version = client_version()
        self._api_headers = {
            CLIENT_HEADER: f"gristmill@{version}",
            "User-Agent": f"gristmill-python/{version} httpx/{httpx.__version__}",
        }

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def max_retries(self) -> int:
        return self._settings.max_retries

    def close(self) -> None:
        if self._owns_client:
            self._http.close()

    # -- access tokens --

    def access_token(self) -> str:
        with self._lock:
            if (
                self._access_token is None
                or self._access_token_exp < self._clock() + TOKEN_REFRESH_MARGIN_S
            ):
                self._refresh_locked()
            assert self._access_token is not None
            return self._access_token

    def forget_access_token(self) -> None:
        with self._lock:
            self._access_token = None
            self._access_token_exp = 0.0

    def _refresh_locked(self) -> None:
        url = f"{self._settings.control_api_url}/auth/refresh"
        response = self._send(
            "POST",
            url,
            json={"refresh_token": self._settings.sdk_token},
            auth=False,
            api=True,
            # Exchanging the same refresh token twice is harmless.
            idempotent=True,
        )
        payload = self._decode_api(response, "POST", url)
        token = payload.get("access_token") if isinstance(payload, dict) else None
        if not isinstance(token, str) or not token:
            raise InvalidResponseError(
                f"POST {url} succeeded but returned no 'access_token'.",
                status_code=response.status_code,
            )
        self._access_token_exp = jwt_expiry(token)
        self._access_token = token
        log.debug("access token refreshed, expires at %s", int(self._access_token_exp))

    # -- sending --

    def _send(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        files: Files | None = None,
        content: Body = None,
        headers: Mapping[str, str] | None = None,
        auth: bool,
        api: bool,
        idempotent: bool | None = None,
        stream: bool = False,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        """Send with retries; return the final response, whatever its status."""
        if idempotent is None:
            idempotent = method.upper() in _IDEMPOTENT_METHODS
        attempt = 0
        reauthenticated = False
        while True:
            request_headers: dict[str, str] = dict(self._api_headers) if api else {}
            if headers:
                request_headers.update(headers)
            if auth:
                request_headers["Authorization"] = f"Bearer {self.access_token()}"
            request = self._http.build_request(
                method,
                url,
                params=params,
                json=json,
                data=data,
                # A callable gives fresh file objects for each try (a retry re-reads them).
                files=files() if callable(files) else files,
                content=content() if callable(content) else content,
                headers=request_headers,
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
            )
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                if attempt < self.max_retries and should_retry_transport(
                    exc, idempotent=idempotent
                ):
                    delay = backoff_delay(attempt)
                    log.info(
                        "%s %s failed (%s); retrying in %.1fs",
                        method,
                        _redact(url),
                        type(exc).__name__,
                        delay,
                    )
                    self._sleep(delay)
                    attempt += 1
                    continue
                raise _connection_error(exc, method, url) from exc

            status = response.status_code
            log.debug("%s %s -> %s", method, _redact(url), status)
            if status == 401 and auth and not reauthenticated:
                # The access token may have been revoked or the server's key rotated: get
                # a fresh one and replay once. A second 401 is a real refusal.
                response.close()
                self.forget_access_token()
                reauthenticated = True
                continue
            if attempt < self.max_retries and should_retry_status(status, idempotent=idempotent):
                retry_after = parse_retry_after(
                    response.headers.get("retry-after"), now=self._clock()
                )
                if retry_after is None or retry_after <= MAX_RETRY_AFTER_S:
                    delay = backoff_delay(attempt) if retry_after is None else retry_after
                    log.info(
                        "%s %s answered %s; retrying in %.1fs", method, _redact(url), status, delay
                    )
                    response.close()
                    self._sleep(delay)
                    attempt += 1
                    continue
            return response

    def _error_of(self, response: httpx.Response, method: str, url: str) -> APIError:
        return api_error_from_body(
            response.status_code,
            response.content,
            method=method,
            url=_redact(url),
            retry_after=parse_retry_after(response.headers.get("retry-after"), now=self._clock()),
        )

    def _decode_api(self, response: httpx.Response, method: str, url: str) -> Any:
        if response.status_code >= 400:
            error = self._error_of(response, method, url)
            if response.status_code == 403 and current_execution_id() is not None:
                # Same advice as craft-ai-sdk: a step's token is narrower than a user's.
                error.hint = (
                    "this code runs inside an execution, whose token may not allow this "
                    "call even though it works from your computer."
                )
            raise error
        return decode_response(response)

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        files: Files | None = None,
        idempotent: bool | None = None,
    ) -> Any:
        """An authenticated API call; returns the decoded body or raises ``APIError``."""
        return self.request_with_status(
            method, url, params=params, json=json, data=data, files=files, idempotent=idempotent
        )[1]

    def request_with_status(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        files: Files | None = None,
        idempotent: bool | None = None,
    ) -> tuple[int, Any]:
        """Like ``request``, with the success status too (206 means "still building")."""
        response = self._send(
            method,
            url,
            params=params,
            json=json,
            data=data,
            files=files,
            auth=True,
            api=True,
            idempotent=idempotent,
        )
        return response.status_code, self._decode_api(response, method, url)

    def long_poll(
        self,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        hold_s: float = LONG_POLL_HOLD_S,
        on_wait: Callable[[], None] | None = None,
    ) -> Any:
        """GET ``url`` until it answers something other than 307 (contract §6.3): the
        platform holds each request a while, then answers 307 "not finished yet".

        The read timeout covers the hold, however short the client's ``timeout`` is.
        """
        timeout = httpx.Timeout(self._settings.timeout, read=max(self._settings.timeout, hold_s))
        while True:
            response = self._send(
                "GET", url, params=params, auth=True, api=True, idempotent=True, timeout=timeout
            )
            if response.status_code != 307:
                return self._decode_api(response, "GET", url)
            response.close()
            if on_wait is not None:
                on_wait()

    def endpoint_call(
        self,
        method: str,
        url: str,
        *,
        authorization: str,
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        files: Files | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        """A call to a deployment's endpoint (contract §4), with the endpoint's own
        ``Authorization`` (its endpoint token), not the SDK's access token.

        Goes through the same ``httpx.Client`` and retry rules as API calls: a POST (an
        execution) is replayed only when it was certainly not processed (no connection,
        429, 503), never after a failure that may have reached the server. Redirects are
        not followed; the response is returned as is, 3xx included, and an error status
        is raised as ``APIError``."""
        response = self._send(
            method,
            url,
            json=json,
            data=data,
            files=files,
            headers={"Authorization": authorization},
            auth=False,
            api=True,
            timeout=timeout,
        )
        if response.status_code >= 400:
            raise self._error_of(response, method, url)
        return response

    def presigned(
        self,
        method: str,
        url: str,
        *,
        content: Body = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """A call to a presigned data store URL; returns the 2xx response or raises
        ``DataStoreError``. Presigned calls are replayable: the URL names one object."""
        response = self._send(
            method, url, content=content, headers=headers, auth=False, api=False, idempotent=True
        )
        if not 200 <= response.status_code < 300:
            raise data_store_error_from_body(response.status_code, response.content)
        return response

    @contextmanager
    def stream_presigned(
        self, method: str, url: str, *, headers: Mapping[str, str] | None = None
    ) -> Iterator[httpx.Response]:
        """Like ``presigned`` but the body is left unread, to be streamed by the caller."""
        response = self._send(
            method, url, headers=headers, auth=False, api=False, idempotent=True, stream=True
        )
        try:
            if not 200 <= response.status_code < 300:
                raise data_store_error_from_body(response.status_code, response.read())
            yield response
        finally:
            response.close()

    def iter_body(self, response: httpx.Response, chunk_size: int | None = None) -> Iterator[bytes]:
        """Stream a response body, turning transport failures into ``APIConnectionError``.

        ``chunk_size=None`` yields the pieces as they come off the socket: re-chunking
        them would copy every byte once more."""
        try:
            yield from response.iter_bytes(chunk_size)
        except httpx.TransportError as exc:
            raise _connection_error(
                exc, response.request.method, str(response.request.url)
            ) from exc
