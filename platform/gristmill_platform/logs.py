"""The service's logs: text for people, or one JSON object per line for collectors
(``GRISTMILL_LOG_FORMAT=json``), each record carrying the request id, route, user id and
execution id it happened under; secrets masked in both formats.

What a record happened under lives in context variables: the request middleware binds a
``RequestContext`` once per request (the route template and the caller are filled in later,
when routing and authentication have run), and execution code binds an execution id."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from starlette.types import Scope

from gristmill_platform.route_templates import template_of

MASK = "***"


class RequestContext:
    """Mutable on purpose: dependencies that run after the middleware (authentication)
    add the caller here, and a context variable set inside a dependency would not be seen
    by the code that logs afterwards."""

    __slots__ = ("execution_id", "request_id", "scope", "user_id")

    def __init__(self, request_id: str, scope: Scope) -> None:
        self.request_id = request_id
        self.scope = scope
        self.user_id: str | None = None
        self.execution_id: str | None = None

    @property
    def route(self) -> str:
        # the template once routed; before that (or for a 404) the path itself, which a
        # log line may carry (a metric label may not)
        return template_of(self.scope) or str(self.scope.get("path", ""))


request_context: ContextVar[RequestContext | None] = ContextVar(
    "gristmill_request_context", default=None)
execution_context: ContextVar[str | None] = ContextVar(
    "gristmill_execution_id", default=None)


def bind_caller(user_id: str, execution_id: str | None) -> None:
    """Called once the request's caller is authenticated."""
    context = request_context.get()
    if context is not None:
        context.user_id = user_id
        context.execution_id = execution_id


@contextmanager
def execution_scope(execution_id: str) -> Iterator[None]:
    token = execution_context.set(execution_id)
    try:
        yield
    finally:
        execution_context.reset(token)


class Redactor:
    """Masks what must never reach a log: bearer and SDK tokens, JWTs, URL signatures
    (ours and S3's), passwords in URLs and key=value or JSON text, and the literal
    values registered as secret (the signing key, S3 secret key, environment variable
    values the service handles)."""

    _PATTERNS = (
        # Authorization: Bearer <anything>
        (re.compile(r"(?i)(bearer\s+)[^\s\"',;]+"), r"\1" + MASK),
        # SDK tokens gm_<id>_<secret>
        (re.compile(r"\bgm_([0-9a-f]+)_[A-Za-z0-9_\-]+"), r"gm_\1_" + MASK),
        # JWTs (access tokens), whatever carries them
        (re.compile(r"\beyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+"), MASK),
        # query parameters and form fields that authorise by themselves
        (re.compile(r"(?i)\b(signature|x-gristmill-signature|x-amz-signature|"
                    r"x-amz-credential|x-amz-security-token|policy|sdk_token|"
                    r"refresh_token|access_token|token|password|passwd|secret|"
                    r"secret_access_key|deploy_key|private_key)=[^&\s\"']+"),
         r"\1=" + MASK),
        # "password": "..." in JSON or repr'd dicts
        (re.compile(r"(?i)([\"'](?:password|passwd|secret|token|sdk_token|access_token|"
                    r"refresh_token|private_key|deploy_key|secret_access_key|value)[\"']"
                    r"\s*:\s*)[\"'][^\"']*[\"']"),
         r"\1'" + MASK + "'"),
        # user:password@ in URLs (database URLs)
        (re.compile(r"(://[^/\s:@]+):[^/\s@]+@"), r"\1:" + MASK + "@"),
        # private keys (deploy keys) pasted whole
        (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----",
                    re.S), MASK),
    )

    def __init__(self) -> None:
        self._literals: set[str] = set()
        self._literal_pattern: re.Pattern[str] | None = None

    def register(self, *values: str | None) -> None:
        """Literal secret values; short ones are ignored (masking 'a' would mask text)."""
        added = {v for v in values if v and len(v) >= 6} - self._literals
        if added:
            self._literals |= added
            # longest first so a secret containing another is masked whole
            self._literal_pattern = re.compile("|".join(
                re.escape(v) for v in sorted(self._literals, key=len, reverse=True)))

    def __call__(self, text: str) -> str:
        for pattern, replacement in self._PATTERNS:
            text = pattern.sub(replacement, text)
        if self._literal_pattern is not None:
            text = self._literal_pattern.sub(MASK, text)
        return text


redactor = Redactor()


def _render(record: logging.LogRecord) -> tuple[str, str | None]:
    message = redactor(record.getMessage())
    failure = None
    if record.exc_info:
        failure = redactor(logging.Formatter().formatException(record.exc_info))
    elif record.exc_text:
        failure = redactor(record.exc_text)
    return message, failure


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        message, failure = _render(record)
        line = f"{self.formatTime(record)} {record.levelname} {record.name}: {message}"
        context = request_context.get()
        if context is not None:
            line += f" [request {context.request_id}]"
        return f"{line}\n{failure}" if failure else line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message, failure = _render(record)
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
        }
        context = request_context.get()
        if context is not None:
            entry["request_id"] = context.request_id
            entry["method"] = context.scope.get("method")
            entry["route"] = context.route
            if context.user_id:
                entry["user_id"] = context.user_id
            if context.execution_id:
                entry["execution_id"] = context.execution_id
        execution_id = execution_context.get()
        if execution_id:
            entry["execution_id"] = execution_id
        if failure:
            entry["exception"] = failure
        return json.dumps(entry, default=str)


def logging_config(log_format: str, level: str) -> dict[str, Any]:
    """A dictConfig for uvicorn's ``log_config``: its loggers and ours through one
    handler, so every line has the same shape."""
    formatter = "json" if log_format == "json" else "text"
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {"()": JsonFormatter},
            "text": {"()": TextFormatter},
        },
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": formatter,
                        "stream": "ext://sys.stderr"},
        },
        "loggers": {
            "gristmill": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": ["default"], "level": level, "propagate": False},
        },
    }
