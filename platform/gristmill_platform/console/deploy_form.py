"""The Deploy form's fields turned into the body the deployment service takes (the same
body ``POST /endpoints`` and ``POST /periodic-deployment`` take), so the service alone
validates it and says what is wrong, in the API's words. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gristmill_platform.errors import BadRequest
from gristmill_platform.strict_json import JsonRefused, strict_loads

INPUT_CHOICES = {"endpoint": "Endpoint input", "constant": "Constant value",
                 "environment": "Environment variable", "datastore": "Data store file",
                 "none": "None (null)"}
OUTPUT_CHOICES = {"endpoint": "Endpoint output", "datastore": "Data store file",
                  "none": "None (discarded)"}


def constant(value: str, data_type: str, name: str) -> Any:
    """A constant typed in a text box, read as the input's type."""
    if data_type == "string":
        return value
    if data_type == "boolean" and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    try:
        # as strictly as the API reads a mapping (docs/limits.md#json): no NaN, no
        # infinity, no nesting deep enough to exhaust the parser's recursion
        return strict_loads(value)
    except JsonRefused as exc:
        raise BadRequest(f"Input {name!r}: the constant {value[:100]!r} is not a valid "
                         f"{data_type}: {exc}") from exc
    except ValueError as exc:
        raise BadRequest(f"Input {name!r}: the constant {value!r} is not a valid "
                         f"{data_type} (write it as JSON)") from exc


def _input_mapping(declared: Mapping[str, Any], form: Mapping[str, str]) -> dict[str, Any]:
    name = declared["name"]
    source = form.get(f"in.{name}.source", "endpoint")
    value = form.get(f"in.{name}.value", "")
    item: dict[str, Any] = {"pipeline_input_name": name}
    if source == "endpoint":
        item["endpoint_input_name"] = value or name
    elif source == "constant":
        item["constant_value"] = constant(value, declared["data_type"], name)
    elif source == "environment":
        item["environment_variable_name"] = value
    elif source == "datastore":
        item["datastore_path"] = value
    elif source == "none":
        item["is_null"] = True
    else:
        raise BadRequest(f"Input {name!r}: unknown source {source!r}")
    return item


def _output_mapping(declared: Mapping[str, Any], form: Mapping[str, str]) -> dict[str, Any]:
    name = declared["name"]
    destination = form.get(f"out.{name}.destination", "endpoint")
    value = form.get(f"out.{name}.value", "")
    item: dict[str, Any] = {"pipeline_output_name": name}
    if destination == "endpoint":
        item["endpoint_output_name"] = value or name
    elif destination == "datastore":
        item["datastore_path"] = value
    elif destination == "none":
        item["is_null"] = True
    else:
        raise BadRequest(f"Output {name!r}: unknown destination {destination!r}")
    return item


def deployment_body(pipeline_name: str, inputs: Sequence[Mapping[str, Any]],
                    outputs: Sequence[Mapping[str, Any]], form: Mapping[str, str]
                    ) -> tuple[str, dict[str, Any]]:
    rule = form.get("execution_rule", "endpoint")
    body: dict[str, Any] = {
        "pipeline_name": pipeline_name,
        "name": form.get("name", "").strip(),
        "mode": form.get("mode", "elastic"),
        "description": form.get("description") or None,
        "inputs_mapping": [_input_mapping(d, form) for d in inputs],
        "outputs_mapping": [_output_mapping(d, form) for d in outputs],
    }
    if rule == "periodic":
        body["schedule"] = form.get("schedule", "")
    timeout = form.get("timeout_s", "").strip()
    if timeout:
        body["timeout_s"] = int(timeout) if timeout.isdigit() else timeout
    if body["mode"] == "low_latency":
        if form.get("enable_parallel_executions"):
            body["enable_parallel_executions"] = True
            parallel = form.get("max_parallel_executions_per_pod", "").strip()
            if parallel:
                body["max_parallel_executions_per_pod"] = (int(parallel) if parallel.isdigit()
                                                           else parallel)
        if form.get("ram_request", "").strip():
            body["ram_request"] = form["ram_request"].strip()
        gpu = form.get("gpu_request", "").strip()
        if gpu:
            body["gpu_request"] = int(gpu) if gpu.isdigit() else gpu
    return rule, body
