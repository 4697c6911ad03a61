"""The inputs of an endpoint call: a JSON object, or a multipart form of files and fields
(the same parsing for the gateway and for triggers with an SDK token)."""

from __future__ import annotations

import os
from typing import Any

from fastapi import Request

from gristmill_platform.http.bodies import json_object
from gristmill_platform.http.limits import MAX_ENDPOINT_JSON_BODY
from gristmill_platform.http.whole_forms import whole_form
from gristmill_platform.strict_json import strict_loads


def json_inputs(raw: bytes) -> dict[str, Any]:
    """The inputs of a JSON body, or the 400 to answer (413 when too large)."""
    return json_object(raw, MAX_ENDPOINT_JSON_BODY, too_large="The request body is too large",
                       expected="a JSON object of inputs")


async def inputs_of(request: Request) -> tuple[dict[str, Any], dict[str, tuple[str, Any]]]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    files: dict[str, tuple[str, Any]] = {}
    if content_type == "multipart/form-data":
        form = await whole_form(request, max_files=10, max_fields=200)
        body: dict[str, Any] = {}
        for key, value in form.multi_items():
            if isinstance(value, str):
                # plain clients send text fields; newer SDKs send JSON per field
                # (NaN, infinities and deep nesting stay text: then refused by type)
                try:
                    body[key] = strict_loads(value)
                except ValueError:
                    body[key] = value
            else:
                files[key] = (os.path.basename(value.filename or key), value.file)
        return body, files
    return json_inputs(await request.body()), {}
