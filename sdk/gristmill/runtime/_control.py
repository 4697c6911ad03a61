"""The runner's side of the runtime protocol: a small standard-library HTTP client.

The SDK's own transport (httpx) is deliberately not used: the runner must start in
milliseconds in every step environment, and must keep working when a step pins another
httpx version. ``urllib.request`` is used rather than bare ``http.client`` for its proxy
handling (``HTTPS_PROXY``/``NO_PROXY``), so the runner reaches the control service the same
way the SDK inside the step does.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import os
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

from gristmill.runtime._channel import CALLS, RUNTIME_FD_VAR, Channel

ENVIRONMENT_URL_VARS = ("GRISTMILL_ENVIRONMENT_URL", "CRAFT_AI_ENVIRONMENT_URL")
CONTROL_URL_VARS = ("GRISTMILL_CONTROL_URL", "CRAFT_AI_CONTROL_URL")
SDK_TOKEN_VARS = ("GRISTMILL_SDK_TOKEN", "CRAFT_AI_SDK_TOKEN")
EXECUTION_ID_VARS = ("GRISTMILL_EXECUTION_ID", "CRAFT_AI_EXECUTION_ID")
# An access token the launcher minted with the execution token: the runner starts with it
# instead of exchanging the execution token (one request and one database write less per
# execution); it exchanges the execution token as usual once this one is near its expiry
# or refused.
ACCESS_TOKEN_VAR = "GRISTMILL_ACCESS_TOKEN"  # noqa: S105 - a variable name
STEP_DIR_VAR = "GRISTMILL_STEP_DIR"
IO_DIR_VAR = "GRISTMILL_IO_DIR"
LOG_FLUSH_INTERVAL_VAR = "GRISTMILL_LOG_FLUSH_INTERVAL_S"
RETRY_BUDGET_VAR = "GRISTMILL_RUNTIME_RETRY_BUDGET_S"
EXIT_GRACE_VAR = "GRISTMILL_RUNTIME_EXIT_GRACE_S"

# The protocol's upper bound: the control service takes a longer silence for a dead worker.
MAX_LOG_FLUSH_INTERVAL_S = 10.0
# Long enough to ride out a control-service restart or rolling update, short enough that a
# worker cut off from it gives up well before anyone wonders why the execution hangs.
DEFAULT_RETRY_BUDGET_S = 60.0
HTTP_TIMEOUT_S = 60.0
# How long threads the step left running may delay the worker's exit once the result is in.
DEFAULT_EXIT_GRACE_S = 10.0
# Refresh the access token this long before it expires, so that a request never leaves
# with a token that dies on the way.
TOKEN_REFRESH_MARGIN_S = 60.0
_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_CHUNK = 1024 * 1024
USER_AGENT = "gristmill-runner"


class ConfigError(Exception):
    """The runner was started without what it needs (a launcher bug, not a user error)."""


class ControlError(Exception):
    """A call to the control service did not give the expected answer."""


class Unreachable(ControlError):
    """The control service could not be reached, even after retries."""


class AlreadyStarted(Exception):
    """``POST /start`` answered 409: started, cancelled or finished already."""


class StatusError(ControlError):
    """The control service answered with an error status."""

    def __init__(self, method: str, path: str, status: int, detail: str) -> None:
        self.status = status
        self.detail = detail
        super().__init__(f"{method} {path} answered {status}" + (f": {detail}" if detail else ""))


@dataclass(frozen=True)
class RunnerConfig:
    environment_url: str
    control_url: str
    sdk_token: str = field(repr=False)
    execution_id: str
    step_dir: Path
    io_dir: Path | None
    log_flush_interval_s: float = MAX_LOG_FLUSH_INTERVAL_S
    retry_budget_s: float = DEFAULT_RETRY_BUDGET_S
    exit_grace_s: float = DEFAULT_EXIT_GRACE_S
    warnings: tuple[str, ...] = ()
    access_token: str | None = field(default=None, repr=False)
    # The local channel's descriptor (a worker forked by the local backend), or None.
    channel_fd: int | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RunnerConfig:
        warnings: list[str] = []
        environment_url = _url(_first(env, ENVIRONMENT_URL_VARS, "the environment URL"))
        control = _first_optional(env, CONTROL_URL_VARS)
        control_url = _url(control) if control else environment_url
        token = _first(env, SDK_TOKEN_VARS, "the execution token")[1]
        execution_id = _first(env, EXECUTION_ID_VARS, "the execution id")[1]
        step_dir = Path(env.get(STEP_DIR_VAR) or os.getcwd()).resolve()
        if not step_dir.is_dir():
            raise ConfigError(f"{STEP_DIR_VAR}={step_dir} is not a folder.")
        io_value = env.get(IO_DIR_VAR, "").strip()
        interval = _seconds(
            env, LOG_FLUSH_INTERVAL_VAR, MAX_LOG_FLUSH_INTERVAL_S, warnings,
            maximum=MAX_LOG_FLUSH_INTERVAL_S,
        )
        budget = _seconds(env, RETRY_BUDGET_VAR, DEFAULT_RETRY_BUDGET_S, warnings, zero_ok=True)
        grace = _seconds(env, EXIT_GRACE_VAR, DEFAULT_EXIT_GRACE_S, warnings, zero_ok=True)
        channel_fd = _descriptor(env, warnings)
        return cls(
            environment_url=environment_url,
            control_url=control_url,
            sdk_token=token,
            execution_id=execution_id,
            step_dir=step_dir,
            io_dir=Path(io_value).resolve() if io_value else None,
            log_flush_interval_s=interval,
            retry_budget_s=budget,
            exit_grace_s=grace,
            warnings=tuple(warnings),
            access_token=env.get(ACCESS_TOKEN_VAR, "").strip() or None,
            channel_fd=channel_fd,
        )


def _descriptor(env: Mapping[str, str], warnings: list[str]) -> int | None:
    raw = env.get(RUNTIME_FD_VAR, "").strip()
    if not raw:
        return None
    try:
        fd = int(raw)
        os.fstat(fd)
    except (ValueError, OSError):
        warnings.append(f"{RUNTIME_FD_VAR}={raw!r} ignored: not an open descriptor; "
                        "the control service is called over HTTP.")
        return None
    return fd


def _first_optional(env: Mapping[str, str], names: tuple[str, ...]) -> tuple[str, str] | None:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return name, value
    return None


def _first(env: Mapping[str, str], names: tuple[str, ...], what: str) -> tuple[str, str]:
    found = _first_optional(env, names)
    if found is None:
        raise ConfigError(f"No {what}: set {' or '.join(names)}.")
    return found


def _url(found: tuple[str, str]) -> str:
    name, value = found
    url = value.rstrip("/")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name} must be an http(s) URL, got {value!r}.")
    return url


def _seconds(
    env: Mapping[str, str],
    name: str,
    default: float,
    warnings: list[str],
    *,
    maximum: float | None = None,
    zero_ok: bool = False,
) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    # A bad tuning knob must not fail an execution: say so and keep the default.
    if not (value >= 0 if zero_ok else value > 0) or (maximum is not None and value > maximum):
        bound = f" and at most {maximum:g}" if maximum is not None else ""
        warnings.append(
            f"{name}={raw!r} ignored: expected a number of seconds "
            f"{'>= 0' if zero_ok else '> 0'}{bound}; using {default:g}."
        )
        return default
    return value


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, unverified (the server checks it); None if unreadable."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    segment = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(segment.encode("ascii")))
    except (binascii.Error, UnicodeError, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return float(exp)


def _error_detail(body: bytes) -> str:
    """The server's message from an error body (``{"message": ...}``), kept short."""
    text = body.decode("utf-8", "replace").strip()
    try:
        payload = json.loads(text)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        message = payload.get("message") or payload.get("detail")
        if message is not None:
            text = message if isinstance(message, str) else json.dumps(message)
    return text if len(text) <= 500 else text[:499] + "…"


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes

    def json(self) -> Any:
        """The decoded body; None when empty, the text itself when it is not JSON (the
        caller then reports an unreadable answer instead of crashing)."""
        if not self.body.strip():
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            return self.body.decode("utf-8", "replace")


class LocalWriteError(Exception):
    """A download could not be written here (disk full, permissions): not worth a retry,
    and not the control service's fault."""


class _Transient(Exception):
    """One attempt failed in a way worth retrying."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class ControlClient:
    """Calls ``{environment_url}/api/v1/runtime/executions/{id}/...`` for one execution.

    Safe to share between the main thread and the log shipper: only the token is shared
    state, and it is guarded by a lock.
    """

    def __init__(
        self,
        config: RunnerConfig,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._sleep = sleep
        self._clock = clock
        self._token_lock = threading.Lock()
        self._access_token: str | None = config.access_token
        self._access_token_exp: float | None = (
            jwt_expiry(config.access_token) if config.access_token else None)
        quoted = urllib.parse.quote(config.execution_id, safe="")
        self._base = f"{config.environment_url}/api/v1/runtime/executions/{quoted}"
        self._opener: urllib.request.OpenerDirector | None = None
        self._channel: Channel | None = None
        if config.channel_fd is not None:
            self._channel = Channel(config.channel_fd, HTTP_TIMEOUT_S)

    @property
    def opener(self) -> urllib.request.OpenerDirector:
        # Built on first use: a forked worker whose calls all go over the local channel
        # never needs one. No redirect following: a redirect would replay a POST body we
        # may have streamed from a file, and the runtime routes never redirect.
        if self._opener is None:
            self._opener = urllib.request.build_opener(_NoRedirect)
        return self._opener

    # -- public calls --

    def start(self) -> Any:
        """What to run, as the control service answered (checked by the caller).

        Raises ``AlreadyStarted`` on 409.
        """
        try:
            response = self._call("POST", "/start")
        except StatusError as error:
            if error.status == 409:
                raise AlreadyStarted(error.detail) from None
            raise
        return response.json()

    def send_logs(self, lines: list[dict[str, str]], *, retry: bool = True) -> None:
        self._call("POST", "/logs", json_body={"lines": lines}, retry=retry)

    def download_input(self, name: str, target: Path) -> None:
        path = f"/inputs/{urllib.parse.quote(name, safe='')}"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise LocalWriteError(f"cannot create {target.parent}: {error}") from error
        self._call("GET", path, sink=target)

    def upload_output(self, name: str, source: Path) -> None:
        path = f"/outputs/{urllib.parse.quote(name, safe='')}"
        size = source.stat().st_size
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),
            "X-Gristmill-Filename": header_filename(source.name),
        }
        self._call("PUT", path, body_file=source, headers=headers)

    def finish(self, payload: Mapping[str, Any]) -> Any:
        return self._call("POST", "/finish", json_body=payload).json()

    # -- machinery --

    def redact(self, text: str) -> str:
        """``text`` with every credential the runner holds masked."""
        for secret in (self._config.sdk_token, self._config.access_token, self._access_token):
            if secret and len(secret) >= 8:
                text = text.replace(secret, "***")
        return text

    def _call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        body_file: Path | None = None,
        headers: Mapping[str, str] | None = None,
        sink: Path | None = None,
        retry: bool = True,
    ) -> Response:
        body: bytes | None = None
        all_headers = {"User-Agent": USER_AGENT, **(headers or {})}
        if json_body is not None:
            body = json.dumps(json_body, ensure_ascii=False, allow_nan=False).encode("utf-8")
            all_headers["Content-Type"] = "application/json"
        url = self._base + path
        reauthenticated = False
        attempt = 0
        deadline = self._clock() + (self._config.retry_budget_s if retry else 0.0)
        local = path in CALLS and body_file is None and sink is None
        while True:
            try:
                channel = self._channel if local else None
                if channel is not None:
                    answered = self._call_locally(channel, path, body or b"")
                    if answered is None:
                        continue  # the channel is gone: HTTP from now on
                    status, content = answered
                    if status >= 300:
                        raise StatusError(method, path, status,
                                          self.redact(_error_detail(content)))
                    return Response(status, content)
                token = self._token()
                with _opened(body_file) as stream:
                    data: bytes | IO[bytes] | None = body if stream is None else stream
                    # Only http(s) URLs get here: RunnerConfig checked the scheme.
                    request = urllib.request.Request(  # noqa: S310
                        url,
                        data=data,
                        method=method,
                        headers={**all_headers, "Authorization": f"Bearer {token}"},
                    )
                    status, content = self._send(request, sink)
            except _Transient as transient:
                delay = _backoff(attempt, transient.retry_after)
                if self._clock() + delay > deadline:
                    raise Unreachable(
                        self.redact(f"{method} {url}: {transient}")
                    ) from None
                self._sleep(delay)
                attempt += 1
                continue
            if status == 401 and not reauthenticated:
                # An access token the server no longer accepts (restart with a new signing
                # key, clock skew): exchange the execution token again, once.
                self._forget_token()
                reauthenticated = True
                continue
            if status >= 300:
                raise StatusError(method, path, status, self.redact(_error_detail(content)))
            return Response(status, content)

    def _call_locally(self, channel: Channel, path: str, body: bytes
                      ) -> tuple[int, bytes] | None:
        """The call over the local channel; None once the channel is unusable (closed,
        and forgotten: the caller goes on over HTTP)."""
        try:
            status, content = channel.call(path, body)
        except OSError:
            self._channel = None
            return None
        if status in _RETRY_STATUSES:
            raise _Transient(f"{status} {_error_detail(content)}")
        return status, content

    def _send(self, request: urllib.request.Request, sink: Path | None) -> tuple[int, bytes]:
        try:
            response = self.opener.open(request, timeout=HTTP_TIMEOUT_S)
        except urllib.error.HTTPError as error:
            with error:
                content = error.read()
            location = error.headers.get("Location")
            if (error.code in (302, 303, 307) and location and sink is not None
                    and request.get_method() == "GET"):
                # A data store on S3 hands a file input out as a presigned URL, fetched
                # without Authorization (the signature is the credential; S3 refuses both).
                return self._send(urllib.request.Request(  # noqa: S310
                    location, headers={"User-Agent": USER_AGENT}), sink)
            if error.code in _RETRY_STATUSES:
                raise _Transient(
                    f"{error.code} {_error_detail(content)}",
                    _retry_after(error.headers.get("Retry-After")),
                ) from None
            return error.code, content
        except urllib.error.URLError as error:
            raise _Transient(str(error.reason)) from None
        except (OSError, http.client.HTTPException) as error:
            raise _Transient(f"{type(error).__name__}: {error}") from None
        with response:
            try:
                if sink is not None and 200 <= response.status < 300:
                    _stream_to(response, sink)
                    return response.status, b""
                return response.status, response.read()
            except LocalWriteError:
                raise
            except Exception as error:
                # The connection broke mid-body: the whole exchange is retried.
                raise _Transient(f"reading the answer: {type(error).__name__}: {error}") from None

    def _token(self) -> str:
        with self._token_lock:
            now = time.time()
            if self._access_token is not None and (
                self._access_token_exp is None
                or self._access_token_exp - TOKEN_REFRESH_MARGIN_S > now
            ):
                return self._access_token
            return self._refresh_locked()

    def _forget_token(self) -> None:
        with self._token_lock:
            self._access_token = None
            self._access_token_exp = None

    def _refresh_locked(self) -> str:
        url = f"{self._config.control_url}/api/v1/auth/refresh"
        body = json.dumps({"refresh_token": self._config.sdk_token}).encode("utf-8")
        request = urllib.request.Request(  # noqa: S310 - scheme checked by RunnerConfig
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
        )
        status, content = self._send(request, None)
        if status >= 300:
            raise StatusError("POST", "/api/v1/auth/refresh", status,
                              self.redact(_error_detail(content)))
        try:
            payload = json.loads(content)
        except ValueError:
            payload = None
        token = payload.get("access_token") if isinstance(payload, dict) else None
        if not isinstance(token, str) or not token:
            raise ControlError("POST /api/v1/auth/refresh answered without an access_token.")
        self._access_token = token
        self._access_token_exp = jwt_expiry(token)
        return token


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@contextmanager
def _opened(path: Path | None) -> Iterator[BinaryIO | None]:
    # Reopened on every attempt: a retry must send the file from its first byte.
    if path is None:
        yield None
        return
    with path.open("rb") as stream:
        yield stream


def _stream_to(response: IO[bytes], target: Path) -> None:
    scratch = target.with_name(f".{target.name}.part")
    try:
        try:
            out = scratch.open("wb")
        except OSError as error:
            raise LocalWriteError(f"cannot write {target}: {error}") from error
        with out:
            while chunk := response.read(_CHUNK):
                try:
                    out.write(chunk)
                except OSError as error:
                    raise LocalWriteError(f"cannot write {target}: {error}") from error
        os.replace(scratch, target)
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise


def header_filename(name: str) -> str:
    """``name`` percent-encoded as UTF-8, for the ``X-Gristmill-Filename`` header.

    Header values are latin-1 on the wire and cannot hold control characters, so a name like
    ``résumé.csv`` must be encoded somehow; the characters usual in file names are left as
    they are, so a plain ASCII name (without ``%``) is sent unchanged.
    """
    return urllib.parse.quote(name, safe=" !#$&'()+,;=@[]^`{}~")


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return None


def _backoff(attempt: int, retry_after: float | None) -> float:
    if retry_after is not None:
        return min(retry_after, 30.0)
    # 0.5 s, 1 s, 2 s ... up to 8 s, with jitter so that many workers cut off together do
    # not come back in lockstep.
    base: float = min(8.0, 0.5 * 2**attempt)
    return base * (0.5 + random.random() / 2)


__all__ = [
    "AlreadyStarted",
    "ConfigError",
    "ControlClient",
    "ControlError",
    "RunnerConfig",
    "StatusError",
    "Unreachable",
]
