"""One error type carrying its HTTP status, and the handlers that render the body the
craft-ai-sdk client expects: ``{message, name, request_id, additional_data}``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("gristmill.errors")


class AppError(Exception):
    status_code = 500
    name = "InternalServerError"

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        name: str | None = None,
        additional_data: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        if name is not None:
            self.name = name
        self.additional_data = additional_data
        self.headers = headers


class BadRequest(AppError):
    status_code = 400
    name = "BadRequest"


class Unauthorized(AppError):
    status_code = 401
    name = "Unauthorized"


class Forbidden(AppError):
    status_code = 403
    name = "Forbidden"


class NotFound(AppError):
    status_code = 404
    name = "NotFound"


class Conflict(AppError):
    status_code = 409
    name = "Conflict"


class PayloadTooLarge(AppError):
    status_code = 413
    name = "PayloadTooLarge"


class UnprocessableEntity(AppError):
    status_code = 422
    name = "ValidationError"


_STATUS_NAMES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    422: "ValidationError",
    429: "TooManyRequests",
}


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", "NO_REQUEST_ID"))


def error_body(
    request: Request, message: str, name: str, additional_data: Any = None
) -> dict[str, Any]:
    return error_document(message, name, request_id_of(request), additional_data)


def error_document(message: str, name: str, request_id: str, additional_data: Any = None
                   ) -> dict[str, Any]:
    return {
        "message": message,
        "name": name,
        "request_id": request_id,
        "additional_data": additional_data,
    }


UNEXPECTED = ("Internal server error", "InternalServerError")


def _describe_validation_error(err: dict[str, Any]) -> str:
    location = [str(part) for part in err.get("loc", ()) if part not in ("body", "query")]
    where = ".".join(location) or "request"
    return f"{where}: {err.get('msg', 'invalid value')}"


def app_error_response(request: Request, exc: AppError) -> JSONResponse:
    return JSONResponse(
        error_body(request, exc.message, exc.name, exc.additional_data),
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else "Request failed"
    if exc.status_code == 404 and message == "Not Found":
        message = f"No route for {request.method} {request.url.path}"
    name = _STATUS_NAMES.get(exc.status_code, "HTTPError")
    return JSONResponse(
        error_body(request, message, name),
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
        for e in exc.errors()
    ]
    message = "Invalid request: " + "; ".join(_describe_validation_error(e) for e in errors)
    return JSONResponse(
        error_body(request, message, "ValidationError", {"errors": errors}), status_code=422
    )


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(error_body(request, *UNEXPECTED), status_code=500)


def is_transient_database_error(exc: BaseException) -> bool:
    """The database is busy, not broken: no connection free in time, or SQLite's write lock
    held past busy_timeout. The request can be sent again."""
    if isinstance(exc, SQLAlchemyTimeoutError):
        return True
    return isinstance(exc, OperationalError) and "database is locked" in str(exc)


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    if not is_transient_database_error(exc):
        return await _unhandled(request, exc)
    log.warning("database busy on %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(
        error_body(request, "The service is busy: send the request again shortly",
                   "ServiceBusy"),
        status_code=503, headers={"Retry-After": "1"})


async def _app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return app_error_response(request, exc)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(SQLAlchemyTimeoutError, _database_error)
    app.add_exception_handler(OperationalError, _database_error)
    app.add_exception_handler(Exception, _unhandled)
