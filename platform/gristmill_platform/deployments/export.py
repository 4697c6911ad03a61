"""A deployment's executions exported to the data store (docs/rollout.md): one row per
execution, as Parquet or JSON Lines, streamed: batches of rows are read by key (created,
id), converted and appended to a local file, then the file is uploaded; memory stays
bounded by a batch whatever the number of executions (bench/export.py)."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import select, tuple_

from gristmill_platform.datastore.backend import DataStoreFor
from gristmill_platform.datastore.paths import validate_user_path
from gristmill_platform.db.models.deployments import Deployment
from gristmill_platform.db.models.executions import Execution
from gristmill_platform.db.transactions import Transactions
from gristmill_platform.errors import BadRequest

FORMATS = ("parquet", "jsonl")
BATCH = 5_000
_COLUMNS = (Execution.id, Execution.pipeline_name, Execution.shadow, Execution.status,
            Execution.created_at, Execution.ended_at, Execution.inputs, Execution.outputs,
            Execution.validation_failures)


class InvalidExport(BadRequest):
    name = "InvalidExport"


@dataclass(frozen=True)
class ExportRequest:
    datastore_path: str
    format: str
    start: datetime | None
    end: datetime | None


def _when(value: Any, what: str) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise InvalidExport(f"{what} must be an ISO 8601 date and time") from None
    if parsed.tzinfo is None:
        raise InvalidExport(f"{what} must say its time zone (e.g. +00:00)")
    return parsed


def parse_request(body: dict[str, Any]) -> ExportRequest:
    fmt = body.get("format") or "parquet"
    if fmt not in FORMATS:
        raise InvalidExport(f"format must be one of {', '.join(FORMATS)}")
    path = body.get("datastore_path")
    if not isinstance(path, str) or not path:
        raise InvalidExport("datastore_path is required")
    start, end = _when(body.get("start"), "start"), _when(body.get("end"), "end")
    if start and end and end < start:
        raise InvalidExport("end is before start")
    return ExportRequest(validate_user_path(path), fmt, start, end)


def _named(items: Sequence[dict[str, Any]], key: str) -> str:
    return json.dumps({str(i.get(key)): i.get("value") for i in items}, default=str)


def rows_of(batch: Sequence[Any]) -> dict[str, list[Any]]:
    """A batch of execution rows as columns (inputs and outputs as JSON objects)."""
    columns: dict[str, list[Any]] = {name: [] for name in (
        "id", "pipeline", "shadow", "status", "created", "ended", "duration_ms", "inputs",
        "outputs", "validation_failures")}
    for (id_, pipeline, shadow, status, created, ended, inputs, outputs, failures) in batch:
        columns["id"].append(id_)
        columns["pipeline"].append(pipeline)
        columns["shadow"].append(bool(shadow))
        columns["status"].append(status)
        columns["created"].append(created)
        columns["ended"].append(ended)
        columns["duration_ms"].append(
            (ended - created).total_seconds() * 1000 if ended is not None else None)
        columns["inputs"].append(_named(inputs or [], "pipeline_input_name"))
        columns["outputs"].append(_named(outputs or [], "pipeline_output_name"))
        columns["validation_failures"].append(list(failures or []))
    return columns


class _Writer:
    """Appends batches to a local file in one format."""

    def __init__(self, target: Path, fmt: str) -> None:
        import pyarrow as pa  # the platform extra; imported here: only exports need it

        self.pa = pa
        self.fmt = fmt
        self.schema = pa.schema([
            ("id", pa.string()), ("pipeline", pa.string()), ("shadow", pa.bool_()),
            ("status", pa.string()), ("created", pa.timestamp("us", tz="UTC")),
            ("ended", pa.timestamp("us", tz="UTC")), ("duration_ms", pa.float64()),
            ("inputs", pa.string()), ("outputs", pa.string()),
            ("validation_failures", pa.list_(pa.string()))])
        self._parquet: Any = None
        self._text: IO[str] | None = None
        if fmt == "parquet":
            import pyarrow.parquet as pq

            self._parquet = pq.ParquetWriter(str(target), self.schema)
        else:
            self._text = target.open("w", encoding="utf-8")

    def write(self, columns: dict[str, list[Any]]) -> None:
        if self._parquet is not None:
            self._parquet.write_table(self.pa.table(columns, schema=self.schema))
            return
        assert self._text is not None
        for row in _records(columns):
            self._text.write(json.dumps(row, ensure_ascii=False) + "\n")

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self._text is not None:
            self._text.close()


def _records(columns: dict[str, list[Any]]) -> Iterator[dict[str, Any]]:
    names = list(columns)
    for values in zip(*(columns[n] for n in names), strict=True):
        row = dict(zip(names, values, strict=True))
        for key in ("created", "ended"):
            row[key] = row[key].isoformat() if row[key] is not None else None
        row["inputs"], row["outputs"] = json.loads(row["inputs"]), json.loads(row["outputs"])
        yield row


async def export_executions(transactions: Transactions, datastore: DataStoreFor,
                            deployment: Deployment, request: ExportRequest) -> int:
    """Write the deployment's executions (created within [start, end)) to the data store
    at request.datastore_path; the number of rows."""
    rows = 0
    with tempfile.TemporaryDirectory(prefix="gristmill-export-") as scratch:
        target = Path(scratch) / f"export.{request.format}"
        writer = _Writer(target, request.format)
        try:
            last: tuple[datetime, str] | None = None
            while True:
                # by name: ix_executions_deployment_created_id; a deployment's executions go with it
                query = select(*_COLUMNS).where(Execution.deployment_name == deployment.name)
                if request.start is not None:
                    query = query.where(Execution.created_at >= request.start)
                if request.end is not None:
                    query = query.where(Execution.created_at < request.end)
                if last is not None:
                    query = query.where(tuple_(Execution.created_at, Execution.id) > last)
                query = query.order_by(Execution.created_at, Execution.id).limit(BATCH)
                # a short transaction per batch: none held open for the whole export
                async with transactions() as session:
                    batch = (await session.execute(query)).all()
                if not batch:
                    break
                last = (batch[-1][4], batch[-1][0])
                rows += len(batch)
                await asyncio.to_thread(writer.write, rows_of(batch))
        finally:
            await asyncio.to_thread(writer.close)
        async with transactions() as session:
            await datastore(session).upload_from(target, request.datastore_path)
    return rows
