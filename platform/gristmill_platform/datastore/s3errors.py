"""S3-style XML errors for the presigned routes: the craft-ai-sdk client reads ``Code``
and ``Message`` from them (and other S3 clients expect this shape)."""

from __future__ import annotations

from xml.sax.saxutils import escape

from fastapi import FastAPI, Request
from fastapi.responses import Response

from gristmill_platform.errors import request_id_of


class S3StyleError(Exception):
    def __init__(self, status_code: int, code: str, message: str, **extra: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.extra = extra


def render(code: str, message: str, request_id: str, **extra: str) -> bytes:
    children = [f"<Code>{escape(code)}</Code>", f"<Message>{escape(message)}</Message>"]
    children += [f"<{k}>{escape(v)}</{k}>" for k, v in extra.items()]
    children.append(f"<RequestId>{escape(request_id)}</RequestId>")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<Error>' + "".join(children)
            + "</Error>").encode()


async def _handle(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, S3StyleError)
    body = render(exc.code, exc.message, request_id_of(request), **exc.extra)
    return Response(body, status_code=exc.status_code, media_type="application/xml")


def install(app: FastAPI) -> None:
    app.add_exception_handler(S3StyleError, _handle)
