"""The console's static files and the API docs (Swagger UI), all served from the package:
no request ever leaves the environment."""

from __future__ import annotations

import mimetypes

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, HTMLResponse

from gristmill_platform.console.web import STATIC_DIR
from gristmill_platform.errors import NotFound

router = APIRouter(include_in_schema=False)

SWAGGER = "/console/static/vendor/swagger-ui-dist-5.35.0"
# Swagger UI styles its React tree with style attributes: the docs page alone allows them.
DOCS_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
            "frame-ancestors 'none'")


@router.get("/console/static/{path:path}")
async def static(path: str) -> Response:
    root = STATIC_DIR.resolve()
    try:
        target = (root / path).resolve()
        # resolve() folds any ../ first: whatever escapes the static folder is not there
        found = target.is_relative_to(root) and target.is_file()
    except (ValueError, OSError):
        # a name no file can have: a null byte (ValueError), too long for the file
        # system (OSError ENAMETOOLONG), ...
        found = False
    if not found:
        raise NotFound(f"No console asset {path[:200]!r}")
    media_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    if target.suffix == ".js":
        media_type = "text/javascript"
    # vendored files live in versioned folders; ours carry ?v=<version>
    return FileResponse(target, media_type=media_type,
                        headers={"Cache-Control": "public, max-age=86400",
                                 "X-Content-Type-Options": "nosniff"})


@router.get("/docs")
async def docs(request: Request) -> HTMLResponse:
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Gristmill API</title>
<link rel="stylesheet" href="{SWAGGER}/swagger-ui.css">
<link rel="icon" href="/console/static/favicon.svg" type="image/svg+xml">
</head><body><div id="swagger-ui" data-openapi-url="{request.app.openapi_url}"></div>
<script src="{SWAGGER}/swagger-ui-bundle.js"></script>
<script src="/console/static/docs.js"></script>
</body></html>"""
    return HTMLResponse(page, headers={"Content-Security-Policy": DOCS_CSP,
                                       "X-Content-Type-Options": "nosniff"})
