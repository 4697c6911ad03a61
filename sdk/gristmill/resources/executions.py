"""Runs and executions: run a pipeline and wait for its outputs, then look executions up
(contract §3.6-§3.12)."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from datetime import datetime
from typing import IO, Any

from gristmill._transport import FileParts
from gristmill.errors import GristmillError, InvalidResponseError
from gristmill.io import INPUT_OUTPUT_TYPES, InputSource, OutputDestination
from gristmill.progress import Spinner
from gristmill.resources._base import ClientBase, expect_dict, expect_list, path_segment

_FILE = INPUT_OUTPUT_TYPES.FILE.value
# Bookkeeping keys of a mapping, dropped when an execution's inputs/outputs are shown.
_MAPPING_BOOKKEEPING = ("is_required", "default_value", "run_input_name", "run_output_name")


def _input_types(pipeline: Mapping[str, Any]) -> dict[str, str]:
    declared = pipeline.get("inputs") or []
    types: dict[str, str] = {}
    for item in declared if isinstance(declared, list) else []:
        if isinstance(item, dict):
            name = item.get("input_name", item.get("name"))
            if isinstance(name, str):
                types[name] = str(item.get("data_type"))
    return types


def _open_file_input(name: str, value: Any, stack: ExitStack) -> tuple[str, IO[bytes] | bytes]:
    """(filename, content) of a file input: a path, a binary file object or bytes."""
    if isinstance(value, str | os.PathLike):
        path = os.fspath(value)
        return os.path.basename(path), stack.enter_context(open(path, "rb"))
    if isinstance(value, bytes | bytearray | memoryview):
        return name, bytes(value)
    if isinstance(value, io.TextIOBase):
        raise TypeError(f"Input {name!r} is a file opened in text mode; open it with 'rb'.")
    if callable(getattr(value, "read", None)):
        filename = getattr(value, "name", None)
        usable = isinstance(filename, str) and filename and not filename.startswith("<")
        return (os.path.basename(filename) if usable else name), value  # type: ignore[arg-type]
    raise TypeError(
        f"Input {name!r} is a file input: pass a path, a binary file object "
        f"(open(path, 'rb'), io.BytesIO) or bytes, not {type(value).__name__}."
    )


def _mapping_json(items: Sequence[Any] | None, cls: type, what: str) -> str | None:
    if items is None:
        return None
    if not all(isinstance(item, cls) for item in items):
        raise ValueError(f"'{what}' must be a list of gristmill.io.{cls.__name__}.")
    return json.dumps([item.to_dict() for item in items])


def _shown(item: Mapping[str, Any], name_key: str, kind_key: str, value: Any) -> dict[str, Any]:
    """An execution input/output as craft-ai-sdk shows it: the mapping's own keys
    flattened in, its type as ``source``/``destination``."""
    mapping = item.get("mapping_value")
    extra = {
        k: v
        for k, v in (mapping.items() if isinstance(mapping, dict) else ())
        if k not in _MAPPING_BOOKKEEPING
    }
    return {
        name_key: item.get(name_key),
        "data_type": item.get("data_type"),
        **extra,
        kind_key: item.get("mapping_type"),
        "value": value,
    }


def _timestamp_ms(value: datetime, what: str) -> int:
    if not isinstance(value, datetime):
        raise ValueError(f"{what} must be a datetime.datetime.")
    # A naive datetime is local time, as datetime.timestamp() reads it (craft-ai-sdk too).
    return int(value.timestamp() * 1000)


class ExecutionsMixin(ClientBase):
    # -- run --

    def run_pipeline(
        self,
        pipeline_name: str,
        inputs: Mapping[str, Any] | None = None,
        inputs_mapping: Sequence[InputSource] | None = None,
        outputs_mapping: Sequence[OutputDestination] | None = None,
    ) -> dict[str, Any]:
        """Run a pipeline and wait for its outputs.

        Args:
            pipeline_name: Name of the pipeline.
            inputs: Values by input name. A ``file`` input takes a path, a binary file
                object or bytes; other inputs any JSON value (0.06 MB in all at most).
            inputs_mapping: ``InputSource`` objects taking inputs from elsewhere
                (constant, environment variable, data store, null).
            outputs_mapping: ``OutputDestination`` objects sending outputs elsewhere
                (data store, null).

        Returns:
            ``{"execution_id": ..., "outputs": {name: value}}``; a file output is its
            bytes (``None`` for one sent to the data store).

        Raises:
            ExecutionFailedError: the execution failed; the message says why.
        """
        if inputs is not None and not isinstance(inputs, Mapping):
            raise TypeError(
                "'inputs' must be a mapping of input name to value (e.g. "
                f'{{"number1": 3}}), not {type(inputs).__name__}.'
            )
        inputs_mapping_json = _mapping_json(inputs_mapping, InputSource, "inputs_mapping")
        outputs_mapping_json = _mapping_json(outputs_mapping, OutputDestination, "outputs_mapping")
        base = f"/pipelines/{path_segment(pipeline_name)}"
        pipeline = expect_dict(
            self._transport.request("GET", self._api_url(base)), "GET /pipelines/{name}"
        )
        types = _input_types(pipeline)

        with ExitStack() as stack:
            json_inputs: dict[str, Any] = {}
            file_parts: dict[str, tuple[str, Any]] = {}
            for name, value in (inputs or {}).items():
                if types.get(name) == _FILE:
                    file_parts[name] = _open_file_input(name, value, stack)
                else:
                    # Undeclared names go here too: the platform reports them.
                    json_inputs[name] = value
            fields = {"json_inputs": json.dumps(json_inputs)}
            if inputs_mapping_json is not None:
                fields["inputs_mapping"] = inputs_mapping_json
            if outputs_mapping_json is not None:
                fields["outputs_mapping"] = outputs_mapping_json
            parts: FileParts | None = file_parts or None
            started = self._transport.request(
                "POST", self._api_url(f"{base}/run"), data=fields, files=parts
            )
        execution_id = expect_dict(started, "POST /pipelines/{name}/run").get("execution_id")
        if not isinstance(execution_id, str) or not execution_id:
            raise InvalidResponseError("POST /pipelines/{name}/run returned no 'execution_id'.")
        return self._wait_for_outputs(pipeline_name, execution_id)

    def _wait_for_outputs(self, pipeline_name: str, execution_id: str) -> dict[str, Any]:
        base = f"/executions/{path_segment(execution_id)}"
        text = f"Running pipeline {pipeline_name!r} (execution {execution_id})..."
        with Spinner(text, enabled=self._settings.progress):
            result = expect_dict(
                self._transport.long_poll(
                    self._api_url(f"{base}/outputs"), params={"wait_for_results": "true"}
                ),
                "GET /executions/{id}/outputs",
            )
        outputs: dict[str, Any] = {}
        for item in expect_list(result.get("outputs"), "GET /executions/{id}/outputs"):
            name = item["pipeline_output_name"]
            value = item.get("value")
            if item.get("data_type") == _FILE and item.get("mapping_type") not in (
                "is_null",
                "datastore",
            ):
                value = self._io_value(execution_id, "outputs", name)
            outputs[name] = value
        return {"execution_id": execution_id, "outputs": outputs}

    def _io_value(self, execution_id: str, kind: str, name: str) -> Any:
        """A value of an execution: bytes for a file, else the JSON value (§3.9)."""
        return self._transport.request(
            "GET",
            self._api_url(f"/executions/{path_segment(execution_id)}/{kind}/{path_segment(name)}"),
        )

    # -- executions --

    def list_pipeline_executions(self, pipeline_name: str) -> list[dict[str, Any]]:
        """The executions of a pipeline: dicts with ``execution_id``, ``status``,
        ``created_at``, ``created_by``, ``end_date``, ``pipeline_name``,
        ``deployment_name``."""
        return expect_list(
            self._transport.request(
                "GET", self._api_url(f"/pipelines/{path_segment(pipeline_name)}/executions")
            ),
            "GET /pipelines/{name}/executions",
        )

    def get_pipeline_execution(self, execution_id: str) -> dict[str, Any]:
        """An execution, with its ``steps`` and the values of its ``inputs`` and
        ``outputs`` (file values as bytes).

        Each input has ``pipeline_input_name``, ``data_type``, ``source`` (``run``,
        ``endpoint``, ``constant``, ``environment_variable``, ``datastore``,
        ``is_null``), the source's own keys and ``value``; each output
        ``pipeline_output_name``, ``data_type``, ``destination`` and ``value``.
        """
        execution = self._execution(execution_id)
        inputs = []
        for item in expect_list(execution.get("inputs"), "GET /executions/{id} (inputs)"):
            value = item.get("value")
            if item.get("data_type") == _FILE and item.get("mapping_type") not in (
                "is_null",
                "datastore",
            ):
                value = self._io_value(execution_id, "inputs", item["pipeline_input_name"])
            inputs.append(_shown(item, "pipeline_input_name", "source", value))
        outputs = []
        for item in expect_list(execution.get("outputs"), "GET /executions/{id} (outputs)"):
            value = item.get("value")
            # Unlike inputs, data store file outputs are fetched too (contract §3.8).
            if item.get("data_type") == _FILE and item.get("mapping_type") != "is_null":
                value = self._io_value(execution_id, "outputs", item["pipeline_output_name"])
            outputs.append(_shown(item, "pipeline_output_name", "destination", value))
        execution["inputs"] = inputs
        execution["outputs"] = outputs
        return execution

    def get_pipeline_execution_input(self, execution_id: str, input_name: str) -> dict[str, Any]:
        """One input of an execution with its ``value`` (bytes for a file)."""
        return self._execution_io(execution_id, "inputs", "pipeline_input_name", input_name)

    def get_pipeline_execution_output(self, execution_id: str, output_name: str) -> dict[str, Any]:
        """One output of an execution with its ``value`` (bytes for a file)."""
        return self._execution_io(execution_id, "outputs", "pipeline_output_name", output_name)

    def _execution(self, execution_id: str, *, include_io_values: bool = True) -> dict[str, Any]:
        params = None if include_io_values else {"include_io_values": "false"}
        return expect_dict(
            self._transport.request(
                "GET", self._api_url(f"/executions/{path_segment(execution_id)}"), params=params
            ),
            "GET /executions/{id}",
        )

    def _execution_io(
        self, execution_id: str, kind: str, name_key: str, name: str
    ) -> dict[str, Any]:
        execution = self._execution(execution_id, include_io_values=False)
        items = expect_list(execution.get(kind), f"GET /executions/{{id}} ({kind})")
        found = [item for item in items if item.get(name_key) == name]
        if not found:
            known = ", ".join(repr(item.get(name_key)) for item in items) or "none"
            raise GristmillError(
                f"Execution {execution_id!r} has no {kind[:-1]} {name!r} (it has: {known})."
            )
        value = self._io_value(execution_id, kind, name)
        return _shown(found[0], name_key, "source" if kind == "inputs" else "destination", value)

    def get_pipeline_execution_logs(
        self,
        execution_id: str,
        from_datetime: datetime | None = None,
        to_datetime: datetime | None = None,
        limit: int | None = None,
        *,
        pipeline_name: str | None = None,
    ) -> list[dict[str, Any]]:
        """The log lines of an execution, oldest first.

        Args:
            from_datetime, to_datetime: Only lines in this window (naive datetimes are
                local time).
            limit: At most this many lines.
            pipeline_name: Ignored; accepted because the platform documentation's
                example passes it.

        Returns:
            list of dicts with ``timestamp`` (ISO 8601) and ``message``.
        """
        body: dict[str, Any] = {}
        if from_datetime is not None:
            body["from"] = _timestamp_ms(from_datetime, "from_datetime")
        if to_datetime is not None:
            body["to"] = _timestamp_ms(to_datetime, "to_datetime")
        if limit is not None:
            body["limit"] = limit
        logs = expect_list(
            self._transport.request(
                "POST",
                self._api_url(f"/executions/{path_segment(execution_id)}/logs"),
                json=body,
                # Reading logs changes nothing: safe to retry.
                idempotent=True,
            ),
            "POST /executions/{id}/logs",
        )
        # One list per step (contract §3.11); pipelines have one step.
        if not logs:
            return []
        first = logs[0]
        if not isinstance(first, list):
            raise InvalidResponseError(
                "POST /executions/{id}/logs must return a list of lists (one per step)."
            )
        return first

    def cancel_pipeline_execution(self, execution_id: str) -> dict[str, Any]:
        """Cancel a running execution: its worker is stopped and, for a multi-step
        pipeline, every node still running is stopped and what has not started is
        skipped. Returns the execution's summary, ``status`` ``"Cancelled"``. Raises
        ``ConflictError`` when the execution has already ended."""
        return expect_dict(
            self._transport.request(
                "POST", self._api_url(f"/executions/{path_segment(execution_id)}/cancel")
            ),
            "POST /executions/{id}/cancel",
        )

    def delete_pipeline_execution(self, execution_id: str) -> dict[str, Any]:
        """Delete an execution; returns ``{"execution_id": ...}``."""
        return expect_dict(
            self._transport.request(
                "DELETE", self._api_url(f"/executions/{path_segment(execution_id)}")
            ),
            "DELETE /executions/{id}",
        )
