"""How API commands print what they got: a table for people, tab-separated lines when
piped (every id in full, nothing folded), JSON with ``--output json``."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from enum import Enum
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table


class OutputFormat(str, Enum):
    table = "table"
    json = "json"


Output = Annotated[
    OutputFormat,
    typer.Option("--output", "-o", help="table (tab-separated when piped) or json",
                 case_sensitive=False),
]


def jsonable(value: Any) -> Any:
    """API values as JSON: file contents (bytes) as text when they are UTF-8, else as
    ``{"base64": ...}`` so nothing is lost or garbled."""
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            return raw.decode()
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(raw).decode()}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def print_json(value: Any) -> None:
    typer.echo(json.dumps(jsonable(value), indent=2, ensure_ascii=False))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping | list | tuple | bytes):
        return json.dumps(jsonable(value), ensure_ascii=False)
    return str(value)


def print_rows(rows: Iterable[Mapping[str, Any]], columns: Sequence[str],
               fmt: OutputFormat) -> None:
    """A list of resources: the given columns as a table, or every field as JSON."""
    items = list(rows)
    if fmt is OutputFormat.json:
        print_json(items)
        return
    console = Console()
    if not console.is_terminal:
        # scripts read this: no truncation, no box drawing, one line per row
        typer.echo("\t".join(columns))
        for item in items:
            typer.echo("\t".join(_cell(item.get(c)).replace("\t", " ") for c in columns))
        return
    table = Table(*columns)
    for column in table.columns:
        column.overflow = "fold"  # an id cut with "…" could not be pasted back
    for item in items:
        table.add_row(*(_cell(item.get(c)) for c in columns))
    console.print(table)


def print_record(record: Mapping[str, Any], fmt: OutputFormat) -> None:
    """One resource: ``field<TAB>value`` lines, or JSON."""
    if fmt is OutputFormat.json:
        print_json(record)
        return
    for key, value in record.items():
        typer.echo(f"{key}\t{_cell(value)}")


def print_done(message: str, fmt: OutputFormat, result: Any = None) -> None:
    """What a command changed: a sentence, or (JSON) what the API answered."""
    if fmt is OutputFormat.json:
        print_json(result if result is not None else {"message": message})
    else:
        typer.echo(message)


def fail(message: str, code: int = 1) -> typer.Exit:
    print(f"Error: {message}", file=sys.stderr)
    return typer.Exit(code)
