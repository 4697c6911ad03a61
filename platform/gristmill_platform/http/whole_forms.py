"""Forms read whole: Starlette's form parser takes a multipart body that ends before its
closing boundary (a client or proxy that cut the request short) as if it were complete,
keeping the parts it finished and silently dropping the one it was in, a file input
among them. These read the same forms and refuse such a body."""

from __future__ import annotations

from fastapi import Request
from python_multipart.multipart import parse_options_header
from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException, MultiPartParser

from gristmill_platform.errors import BadRequest

CUT_SHORT = ("The multipart body ended before its closing boundary: the request was cut "
             "short, nothing was taken from it")


class _WholeMultiPartParser(MultiPartParser):
    ended = False

    def on_end(self) -> None:
        # python-multipart calls it when it reads the closing boundary, and only then
        self.ended = True


async def whole_form(request: Request, *, max_files: int, max_fields: int) -> FormData:
    """request.form(max_files=, max_fields=), a multipart body refused (400) unless it
    reached its closing boundary."""
    content_type, _ = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data":
        return await request.form(max_files=max_files, max_fields=max_fields)
    parser = _WholeMultiPartParser(request.headers, request.stream(), max_files=max_files,
                                   max_fields=max_fields)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise BadRequest(exc.message) from None
    if not parser.ended:
        await form.close()
        raise BadRequest(CUT_SHORT)
    # kept where request.form() keeps its own, so that a later call gets the same form
    request._form = form
    return form
