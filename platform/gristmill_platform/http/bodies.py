"""Bodies that arrive either as JSON or as a form (the craft-ai-sdk client sends some
routes url-encoded, others multipart, others JSON)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from gristmill_platform.errors import BadRequest

MAX_SMALL_BODY = 1024 * 1024


async def json_or_form(request: Request) -> dict[str, Any]:
    """Parse a small JSON object or form body into a dict of fields."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.form(max_files=0, max_fields=1000)
        return {key: value for key, value in form.items() if isinstance(value, str)}
    raw = await request.body()
    if len(raw) > MAX_SMALL_BODY:
        raise BadRequest("Request body too large")
    if not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise BadRequest("The request body must be a JSON object")
    return parsed


async def required_string(request: Request, field: str) -> str:
    fields = await json_or_form(request)
    value = fields.get(field)
    if not isinstance(value, str) or value == "":
        raise BadRequest(f"Missing field {field!r} (a non-empty string)")
    return value
