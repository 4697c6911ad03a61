"""A streaming multipart/form-data reader for S3-style POST uploads.

Starlette's ``request.form()`` spools a file part to a temporary file first; here the
text fields that precede the file (S3 requires the file to be last) are collected, a
callback checks them before the first byte of the file is accepted, and the file's bytes
go straight to their destination as they arrive."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

MAX_FIELDS_BYTES = 64 * 1024
MAX_FIELDS = 64


class FormError(Exception):
    def __init__(self, message: str, code: str = "MalformedPOSTRequest") -> None:
        super().__init__(message)
        self.code = code


@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    data: bytearray = field(default_factory=bytearray)


FileStart = Callable[[dict[str, str]], Awaitable[Any]]
FileChunk = Callable[[bytes], Awaitable[None]]


async def read_upload_form(
    content_type: str,
    stream: AsyncIterator[bytes],
    *,
    file_field: str,
    on_file_start: FileStart,
    on_file_chunk: FileChunk,
) -> dict[str, str]:
    """Read the form; return its text fields. ``on_file_start(fields)`` runs once, before
    any byte of the file part is handed to ``on_file_chunk``; it may raise to refuse."""
    ctype, params = parse_options_header(content_type)
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise FormError("The upload must be multipart/form-data with a boundary")

    events: list[tuple[str, Any]] = []
    current = _Part()
    header_field = bytearray()
    header_value = bytearray()

    def on_part_begin() -> None:
        nonlocal current
        current = _Part()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        current.headers[header_field.decode("latin-1").lower()] = header_value.decode("latin-1")
        header_field.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        disposition, options = parse_options_header(current.headers.get("content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            raise FormError("A form part lacks its Content-Disposition name")
        current.name = options[b"name"].decode()
        filename = options.get(b"filename")
        current.filename = filename.decode() if filename is not None else None
        events.append(("begin", current))

    def on_part_data(data: bytes, start: int, end: int) -> None:
        events.append(("data", bytes(data[start:end])))

    def on_part_end() -> None:
        events.append(("end", current))

    parser = MultipartParser(
        params[b"boundary"],
        callbacks={  # type: ignore[arg-type]
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )

    fields: dict[str, str] = {}
    fields_bytes = 0
    in_file = False
    seen_file = False
    text_part: _Part | None = None
    async for chunk in stream:
        parser.write(chunk)
        for kind, payload in events:
            if kind == "begin":
                part: _Part = payload
                if seen_file:
                    raise FormError("The file must be the last field of the form")
                if part.name == file_field:
                    await on_file_start(dict(fields))
                    in_file = seen_file = True
                else:
                    text_part = part
            elif kind == "data":
                if in_file:
                    await on_file_chunk(payload)
                elif text_part is not None:
                    fields_bytes += len(payload)
                    if fields_bytes > MAX_FIELDS_BYTES:
                        raise FormError("The form's text fields are too large")
                    text_part.data.extend(payload)
            elif kind == "end":
                if in_file:
                    in_file = False
                elif text_part is not None:
                    if len(fields) >= MAX_FIELDS:
                        raise FormError("Too many form fields")
                    fields[text_part.name] = text_part.data.decode("utf-8", errors="replace")
                    text_part = None
        events.clear()
    parser.finalize()
    if not seen_file:
        raise FormError(f"The form has no '{file_field}' field", code="InvalidArgument")
    # python-multipart's finalize() does not check that the body was whole: without its
    # closing boundary, the file's bytes may be only the first of them
    if parser.state != MultipartState.END:
        raise FormError("The form ended before its closing boundary: the upload was cut "
                        "short, nothing was stored")
    return fields
