"""How large a request body each route accepts (pure), so that the limit can be checked
from the declared Content-Length before a byte is read or parsed (middleware.BodyLimit)."""

from __future__ import annotations

import re

from gristmill_platform.http.bodies import MAX_FORM_BODY, MAX_SMALL_BODY

# An endpoint's non-file inputs are limited to 0.06 MB (executions/io.py); a JSON body
# many times that is refused before it is read.
MAX_ENDPOINT_JSON_BODY = MAX_SMALL_BODY
# file inputs of an endpoint call travel in a multipart body
MAX_ENDPOINT_MULTIPART_BODY = 64 * 1024 * 1024

# Routes that stream their body to disk with a limit of their own: data store uploads and
# parts through signed URLs, a running step's file outputs.
_STREAMED = re.compile(r"^(/presigned/data-store/|/api/v1/runtime/executions/[^/]+/outputs/)")
_CREATION_FORMS = frozenset(("/api/v1/steps", "/api/v1/pipelines"))


def body_limit(method: str, path: str, content_type: str) -> int | None:
    """The most bytes the body of this request may hold; None: the route checks itself."""
    if method in ("GET", "HEAD", "OPTIONS") or _STREAMED.match(path):
        return None
    multipart = content_type.split(";")[0].strip().lower() == "multipart/form-data"
    if path.startswith("/endpoints/"):
        return MAX_ENDPOINT_MULTIPART_BODY if multipart else MAX_ENDPOINT_JSON_BODY
    if path.rstrip("/") in _CREATION_FORMS:
        return MAX_FORM_BODY
    if multipart:
        # a pipeline run's file inputs: spooled to disk by the form parser, bounded by the
        # data store's object limit when stored
        return None
    return MAX_SMALL_BODY
