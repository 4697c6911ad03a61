"""Inputs and outputs of an execution: checked against the declared types, with their
mappings resolved (pure; the service fetches what these functions ask for)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gristmill_platform.datastore.paths import validate_user_path
from gristmill_platform.errors import BadRequest
from gristmill_platform.http.forms import parse_bool
from gristmill_platform.steps.spec import check_value, number_from_text
from gristmill_platform.strict_json import strict_loads

# The documented 0.06 MB for all non-file inputs together (and for outputs).
MAX_IO_BYTES = 60_000
INPUT_SOURCES = ("endpoint_input_name", "constant_value", "environment_variable_name",
                 "is_null", "datastore_path")
OUTPUT_DESTINATIONS = ("endpoint_output_name", "is_null", "datastore_path")


@dataclass
class ResolvedInput:
    name: str
    data_type: str
    mapping_type: str
    mapping_value: dict[str, Any]
    value: Any = None
    # for file inputs: ("upload", part name) or ("datastore", object path)
    file_source: tuple[str, str] | None = None

    def record(self) -> dict[str, Any]:
        return {"pipeline_input_name": self.name, "data_type": self.data_type,
                "mapping_type": self.mapping_type, "mapping_value": self.mapping_value,
                "value": self.value}


@dataclass
class OutputPlan:
    name: str
    data_type: str
    mapping_type: str  # run | endpoint | datastore | is_null
    mapping_value: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return {"pipeline_output_name": self.name, "data_type": self.data_type,
                "mapping_type": self.mapping_type, "mapping_value": self.mapping_value,
                "value": None}


class InvalidInputs(BadRequest):
    name = "InvalidInputs"


def _mapped_name(mapping: Mapping[str, Any], key: str, legacy: str, declared: set[str],
                 kind: str) -> str:
    name = mapping.get(key, mapping.get(legacy))
    if not isinstance(name, str):
        raise InvalidInputs(f"A {kind} mapping lacks {key}")
    if name not in declared:
        raise InvalidInputs(f"The {kind} mapping names {name!r}, which the pipeline does not "
                            f"declare (declared: {', '.join(sorted(declared)) or 'none'})")
    return name


def _env_value(raw: str, data_type: str, where: str) -> Any:
    if data_type == "string":
        return raw
    if data_type == "number":
        return number_from_text(raw, where, InvalidInputs)
    if data_type == "boolean":
        return parse_bool(raw, where)
    try:
        value = strict_loads(raw)
    except ValueError:
        raise InvalidInputs(f"{where} must hold JSON, got {raw!r}") from None
    return check_value(value, data_type, where)


def size_of(values: Sequence[Any]) -> int:
    return sum(len(json.dumps(v, separators=(",", ":"))) for v in values if v is not None)


def resolve_inputs(
    declared: Sequence[Mapping[str, Any]],
    given: Mapping[str, Any],
    files: set[str],
    mappings: Sequence[Mapping[str, Any]],
    environment: Mapping[str, str],
    *,
    allow_endpoint: bool = False,
) -> list[ResolvedInput]:
    types = {d["name"]: d["data_type"] for d in declared}
    unknown = sorted((set(given) | files) - set(types))
    if unknown:
        raise InvalidInputs(f"Unknown input(s): {', '.join(unknown)} (the pipeline declares: "
                            f"{', '.join(types) or 'no input'})")
    by_name: dict[str, Mapping[str, Any]] = {}
    for mapping in mappings:
        name = _mapped_name(mapping, "pipeline_input_name", "step_input_name", set(types),
                            "input")
        if name in by_name:
            raise InvalidInputs(f"Input {name!r} is mapped twice")
        sources = [k for k in INPUT_SOURCES if k in mapping and mapping[k] is not None]
        if len(sources) != 1:
            raise InvalidInputs(f"The mapping of input {name!r} must have exactly one source "
                                f"among {', '.join(INPUT_SOURCES)} (got "
                                f"{', '.join(sources) or 'none'})")
        if sources[0] == "endpoint_input_name" and not allow_endpoint:
            raise InvalidInputs(f"Input {name!r}: endpoint_input_name only applies to endpoint "
                                "deployments; give the value in inputs instead")
        if name in given or name in files:
            raise InvalidInputs(f"Input {name!r} is both given and mapped: choose one")
        by_name[name] = mapping

    resolved: list[ResolvedInput] = []
    missing: list[str] = []
    for item in declared:
        name, data_type = item["name"], item["data_type"]
        where = f"Input {name!r}"
        mapped = by_name.get(name)
        if mapped is not None:
            resolved.append(_resolve_mapped(name, data_type, mapped, environment, where))
            continue
        record = {"run_input_name": name, "is_required": item.get("is_required", True)}
        if item.get("default_value") is not None:
            record["default_value"] = item["default_value"]
        if data_type == "file":
            if name in given:
                raise InvalidInputs(f"{where} is a file: send it as a file part, not as a value")
            if name in files:
                resolved.append(ResolvedInput(name, data_type, "run", record,
                                              file_source=("upload", name)))
                continue
        elif name in files:
            raise InvalidInputs(f"{where} is of type {data_type}: send it as a value, not a file")
        elif name in given and given[name] is not None:
            resolved.append(ResolvedInput(name, data_type, "run", record,
                                          check_value(given[name], data_type, where)))
            continue
        if item.get("default_value") is not None:
            resolved.append(ResolvedInput(name, data_type, "run", record,
                                          item["default_value"]))
        elif item.get("is_required", True):
            missing.append(name)
        else:
            resolved.append(ResolvedInput(name, data_type, "run", record))
    _check_complete(resolved, missing)
    return resolved


def _check_complete(resolved: Sequence[ResolvedInput], missing: Sequence[str]) -> None:
    if missing:
        raise InvalidInputs(f"Missing required input(s): {', '.join(missing)}",
                            additional_data={"missing": list(missing)})
    # file inputs carry no value (their content travels apart), so they never count
    total = size_of([r.value for r in resolved])
    if total > MAX_IO_BYTES:
        raise InvalidInputs(
            f"The non-file inputs total {total} bytes; the limit is 0.06 MB ({MAX_IO_BYTES} "
            "bytes). Pass large data as a file input or through the data store.",
            name="InputsTooLarge")


def _resolve_mapped(name: str, data_type: str, mapping: Mapping[str, Any],
                    environment: Mapping[str, str], where: str) -> ResolvedInput:
    if "constant_value" in mapping and mapping["constant_value"] is not None:
        if data_type == "file":
            raise InvalidInputs(f"{where} is a file: map it with datastore_path, not a constant")
        value = check_value(mapping["constant_value"], data_type, where)
        return ResolvedInput(name, data_type, "constant", {"constant_value": value}, value)
    if mapping.get("environment_variable_name") is not None:
        variable = mapping["environment_variable_name"]
        if data_type == "file":
            raise InvalidInputs(f"{where} is a file: map it with datastore_path")
        if variable not in environment:
            raise InvalidInputs(f"{where} is mapped to environment variable {variable!r}, "
                                "which is not defined")
        value = _env_value(environment[variable], data_type, where)
        return ResolvedInput(name, data_type, "environment_variable",
                             {"environment_variable_name": variable}, value)
    if mapping.get("is_null") is not None:
        if not parse_bool(mapping["is_null"], f"{where} is_null"):
            raise InvalidInputs(f"{where}: is_null must be true when given")
        return ResolvedInput(name, data_type, "is_null", {"is_null": True})
    if mapping.get("datastore_path") is not None:
        path = mapping["datastore_path"]
        if data_type != "file":
            raise InvalidInputs(f"{where} is of type {data_type}: datastore_path maps file "
                                "inputs only")
        if not isinstance(path, str):
            raise InvalidInputs(f"{where}: datastore_path must be a string")
        # the platform's own files (step archives, other executions' files) are read
        # through the raw backend: a user's path must name the user's part of the store
        validate_user_path(path, max_length=None)
        return ResolvedInput(name, data_type, "datastore", {"datastore_path": path},
                             file_source=("datastore", path))
    assert mapping.get("endpoint_input_name") is not None
    record = {"endpoint_input_name": mapping["endpoint_input_name"],
              "is_required": mapping.get("is_required", True)}
    if mapping.get("default_value") is not None:
        record["default_value"] = mapping["default_value"]
    return ResolvedInput(name, data_type, "endpoint", record)


def plan_outputs(declared: Sequence[Mapping[str, Any]], mappings: Sequence[Mapping[str, Any]],
                 *, allow_endpoint: bool = False) -> list[OutputPlan]:
    types = {d["name"]: d["data_type"] for d in declared}
    by_name: dict[str, Mapping[str, Any]] = {}
    for mapping in mappings:
        name = _mapped_name(mapping, "pipeline_output_name", "step_output_name", set(types),
                            "output")
        if name in by_name:
            raise InvalidInputs(f"Output {name!r} is mapped twice")
        targets = [k for k in OUTPUT_DESTINATIONS if mapping.get(k) is not None]
        if len(targets) != 1:
            raise InvalidInputs(f"The mapping of output {name!r} must have exactly one "
                                f"destination among {', '.join(OUTPUT_DESTINATIONS)}")
        if targets[0] == "endpoint_output_name" and not allow_endpoint:
            raise InvalidInputs(f"Output {name!r}: endpoint_output_name only applies to "
                                "endpoint deployments")
        if targets[0] == "datastore_path":
            if types[name] != "file":
                raise InvalidInputs(f"Output {name!r} is of type {types[name]}: "
                                    "datastore_path maps file outputs only")
            check_output_path(mapping["datastore_path"], name)
        by_name[name] = mapping
    plans = []
    for name, data_type in types.items():
        target = by_name.get(name)
        if target is None:
            plans.append(OutputPlan(name, data_type, "run", {"run_output_name": name}))
        elif target.get("is_null") is not None:
            plans.append(OutputPlan(name, data_type, "is_null", {"is_null": True}))
        elif target.get("datastore_path") is not None:
            plans.append(OutputPlan(name, data_type, "datastore",
                                    {"datastore_path": target["datastore_path"]}))
        else:
            plans.append(OutputPlan(name, data_type, "endpoint",
                                    {"endpoint_output_name": target["endpoint_output_name"]}))
    return plans


def check_output_path(pattern: object, name: str) -> str:
    """An output's data store path, checked when the run or the deployment is asked for,
    not when its outputs are written: the placeholders only ever expand to letters,
    digits, '-' and '_', so the pattern passes where its expansions do (their length
    is the backend's to check, it knows the configured limit)."""
    if not isinstance(pattern, str):
        raise InvalidInputs(f"Output {name!r}: datastore_path must be a string")
    return validate_user_path(pattern, max_length=None)


def expand_datastore_path(pattern: str, execution_id: str, when: datetime) -> str:
    """The documented placeholders: {execution_id}, {date} (YYYYMMDD), {date_time}
    (YYYYMMDD_hhmmss)."""
    return (pattern.replace("{execution_id}", execution_id)
            .replace("{date_time}", when.strftime("%Y%m%d_%H%M%S"))
            .replace("{date}", when.strftime("%Y%m%d")))


def check_outputs(plans: Sequence[OutputPlan], returned: Any, files_received: set[str]
                  ) -> tuple[dict[str, Any], str | None]:
    """Validate what the function returned; (values, None) or ({}, failure reason)."""
    expected = {p.name: p for p in plans}
    if returned is None:
        returned = {}
    if not isinstance(returned, dict):
        return {}, (f"The step function must return a dict of its outputs, it returned a "
                    f"{type(returned).__name__}")
    extra = sorted(set(returned) - set(expected) - files_received)
    if extra:
        return {}, (f"The step function returned undeclared output(s): {', '.join(extra)} "
                    f"(declared: {', '.join(expected) or 'none'})")
    values: dict[str, Any] = {}
    for plan in plans:
        if plan.data_type == "file":
            if plan.name not in files_received and plan.mapping_type != "is_null":
                return {}, (f"Output {plan.name!r} (file) is missing: return "
                            f"{{'{plan.name}': {{'path': '<file>'}}}}")
            continue
        if plan.name not in returned:
            if plan.mapping_type == "is_null":
                continue
            return {}, f"Output {plan.name!r} is missing from the step function's result"
        try:
            values[plan.name] = check_value(returned[plan.name], plan.data_type,
                                            f"Output {plan.name!r}")
        except BadRequest as exc:
            return {}, exc.message
    total = size_of(list(values.values()))
    if total > MAX_IO_BYTES:
        return {}, (f"The non-file outputs total {total} bytes; the limit is 0.06 MB "
                    f"({MAX_IO_BYTES} bytes): return large results as a file output")
    return values, None


def resolve_deployment_inputs(
    declared: Sequence[Mapping[str, Any]],
    mappings: Sequence[Mapping[str, Any]],
    body: Mapping[str, Any],
    files: set[str],
    environment: Mapping[str, str],
) -> list[ResolvedInput]:
    """Inputs of an execution triggered through a deployment: endpoint inputs from the
    request (by their endpoint names), the rest from the deployment's mappings."""
    types = {d["name"]: d["data_type"] for d in declared}
    by_endpoint = {m["endpoint_input_name"]: m for m in mappings if "endpoint_input_name" in m}
    unknown = sorted((set(body) | files) - set(by_endpoint))
    if unknown:
        raise InvalidInputs(f"Unknown input(s): {', '.join(unknown)} (this endpoint takes: "
                            f"{', '.join(by_endpoint) or 'no input'})")
    resolved: list[ResolvedInput] = []
    missing: list[str] = []
    for mapping in mappings:
        name = mapping["pipeline_input_name"]
        data_type = types[name]
        if "endpoint_input_name" not in mapping:
            resolved.append(_resolve_mapped(name, data_type, mapping, environment,
                                            f"Input {name!r}"))
            continue
        public = mapping["endpoint_input_name"]
        where = f"Input {public!r}"
        record = {k: mapping[k] for k in ("endpoint_input_name", "is_required", "default_value")
                  if k in mapping}
        if data_type == "file":
            if public in body:
                raise InvalidInputs(f"{where} is a file: send it as a multipart file part")
            if public in files:
                resolved.append(ResolvedInput(name, data_type, "endpoint", record,
                                              file_source=("upload", public)))
            elif mapping.get("is_required", True):
                missing.append(public)
            else:
                resolved.append(ResolvedInput(name, data_type, "endpoint", record))
            continue
        if public in files:
            raise InvalidInputs(f"{where} is of type {data_type}: send it as a value")
        if body.get(public) is not None:
            resolved.append(ResolvedInput(name, data_type, "endpoint", record,
                                          check_value(body[public], data_type, where)))
        elif mapping.get("default_value") is not None:
            resolved.append(ResolvedInput(name, data_type, "endpoint", record,
                                          mapping["default_value"]))
        elif mapping.get("is_required", True):
            missing.append(public)
        else:
            resolved.append(ResolvedInput(name, data_type, "endpoint", record))
    _check_complete(resolved, missing)
    order = {d["name"]: i for i, d in enumerate(declared)}
    return sorted(resolved, key=lambda r: order[r.name])
