"""Bodies that arrive either as JSON or as a form (the craft-ai-sdk client sends some
routes url-encoded, others multipart, others JSON)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from gristmill_platform.errors import BadRequest, PayloadTooLarge
from gristmill_platform.http.whole_forms import whole_form
from gristmill_platform.strict_json import parse_json

MAX_SMALL_BODY = 1024 * 1024


async def json_or_form(request: Request) -> dict[str, Any]:
    """Parse a small JSON object or form body into a dict of fields."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await whole_form(request, max_files=0, max_fields=1000)
        return {key: value for key, value in form.items() if isinstance(value, str)}
    return json_object(await request.body(), MAX_SMALL_BODY)


def json_object(raw: bytes, limit: int, *, too_large: str = "Request body too large",
                expected: str = "a JSON object") -> dict[str, Any]:
    """A JSON object body (empty: no fields), or the 400 (413 when too large) to answer."""
    if len(raw) > limit:
        raise PayloadTooLarge(too_large)
    if not raw.strip():
        return {}
    parsed = parse_json(raw, "The request body")
    if not isinstance(parsed, dict):
        raise BadRequest(f"The request body must be {expected}")
    return parsed


async def required_string(request: Request, field: str) -> str:
    fields = await json_or_form(request)
    value = fields.get(field)
    if not isinstance(value, str) or value == "":
        raise BadRequest(f"Missing field {field!r} (a non-empty string)")
    return value


MAX_FORM_BODY = 12 * 1024 * 1024


async def structured_form(request: Request, file_field: str | None = None
                          ) -> tuple[dict[str, Any], Any]:
    """A creation payload sent as JSON, url-encoded or multipart with bracket keys, and
    the uploaded file of ``file_field`` (a Starlette UploadFile) if any."""
    from gristmill_platform.http.forms import unflatten

    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_FORM_BODY:
        raise PayloadTooLarge(
            f"The request is {int(declared) / 1024 / 1024:.1f} MB; at most "
            f"{MAX_FORM_BODY // 1024 // 1024} MB are accepted (the step code limit is 5 MB)")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await whole_form(request, max_files=4, max_fields=5000)
        pairs = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
        upload = form.get(file_field) if file_field else None
        if upload is not None and isinstance(upload, str):
            raise BadRequest(f"{file_field} must be a file")
        return unflatten(pairs), upload
    return await json_or_form(request), None


class StrictJsonRequest(Request):
    """A request whose ``json()`` reads the body as every other JSON body of the API is read
    (strict_json: no NaN, no infinity, no 1e999, no deep nesting)."""

    _strict_json: Any

    async def json(self) -> Any:
        if not hasattr(self, "_strict_json"):
            try:
                self._strict_json = parse_json(await self.body(), "The request body")
            except BadRequest as exc:
                # FastAPI lets an HTTPException out of its body parsing as it is (any other
                # error would become its own vague 400); it is answered as BadRequest is
                # (errors.py): same status, name and message as json_object's
                raise HTTPException(exc.status_code, exc.message) from exc
        return self._strict_json


class StrictJsonRoute(APIRoute):
    """An APIRoute whose pydantic body parameter is parsed from strict JSON: FastAPI's own
    parsing (Python's json.loads) takes NaN and Infinity, and reads 1e999 as infinity.

    The app's route class (app.py): every plain APIRoute of the service is one. A route
    without a body parameter is served exactly as an APIRoute is."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def strict(request: Request) -> Response:
            # FastAPI calls json() only for a body declared JSON (forms keep form())
            return await handler(StrictJsonRequest(request.scope, request.receive,
                                                   request._send))

        return strict
