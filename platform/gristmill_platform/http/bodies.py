"""Bodies that arrive either as JSON or as a form (the craft-ai-sdk client sends some
routes url-encoded, others multipart, others JSON)."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from gristmill_platform.errors import BadRequest, PayloadTooLarge
from gristmill_platform.strict_json import parse_json

MAX_SMALL_BODY = 1024 * 1024


async def json_or_form(request: Request) -> dict[str, Any]:
    """Parse a small JSON object or form body into a dict of fields."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.form(max_files=0, max_fields=1000)
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
        form = await request.form(max_files=4, max_fields=5000)
        pairs = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
        upload = form.get(file_field) if file_field else None
        if upload is not None and isinstance(upload, str):
            raise BadRequest(f"{file_field} must be a file")
        return unflatten(pairs), upload
    return await json_or_form(request), None
