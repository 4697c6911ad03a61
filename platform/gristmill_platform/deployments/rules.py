"""What a deployment may be: the documented compatibility of rules, modes and mappings
(pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gristmill_platform.datastore.paths import validate_user_path
from gristmill_platform.errors import BadRequest
from gristmill_platform.executions.io import INPUT_SOURCES, plan_outputs
from gristmill_platform.http.forms import parse_bool
from gristmill_platform.steps.spec import check_value
from gristmill_platform.units import RAM, ram_bytes

RULES = ("endpoint", "periodic")
MODES = ("elastic", "low_latency")
DEFAULT_MAX_PARALLEL = 6
MAX_PARALLEL_LIMIT = 100


class InvalidDeployment(BadRequest):
    name = "InvalidDeployment"


@dataclass(frozen=True)
class ModeOptions:
    enable_parallel_executions: bool
    max_parallel_executions_per_pod: int
    ram_request: str | None
    gpu_request: int | None


def check_rule_and_mode(rule: object, mode: object) -> tuple[str, str]:
    if rule not in RULES:
        raise InvalidDeployment(f"execution_rule must be one of {', '.join(RULES)}")
    if mode not in MODES:
        raise InvalidDeployment(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return str(rule), str(mode)


def check_mode_options(mode: str, body: Mapping[str, Any], *, gpu_available: bool
                       ) -> ModeOptions:
    parallel = body.get("enable_parallel_executions")
    max_parallel = body.get("max_parallel_executions_per_pod")
    ram, gpu = body.get("ram_request"), body.get("gpu_request")
    if mode != "low_latency":
        given = [k for k, v in (("enable_parallel_executions", parallel),
                                ("max_parallel_executions_per_pod", max_parallel),
                                ("ram_request", ram), ("gpu_request", gpu)) if v is not None]
        if given:
            raise InvalidDeployment(f"{', '.join(given)} only apply to low_latency deployments "
                                    "(elastic executions each get a fresh worker)")
        return ModeOptions(False, 1, None, None)
    enabled = parse_bool(parallel, "enable_parallel_executions") if parallel is not None \
        else False
    if max_parallel is not None and not enabled:
        raise InvalidDeployment("max_parallel_executions_per_pod needs "
                                "enable_parallel_executions=True")
    if max_parallel is None:
        count = DEFAULT_MAX_PARALLEL if enabled else 1
    elif isinstance(max_parallel, bool) or not isinstance(max_parallel, int) or not (
            1 <= max_parallel <= MAX_PARALLEL_LIMIT):
        raise InvalidDeployment(f"max_parallel_executions_per_pod must be an integer from 1 "
                                f"to {MAX_PARALLEL_LIMIT}")
    else:
        count = max_parallel
    if ram is not None and (not isinstance(ram, str) or not RAM.match(ram)
                            or ram_bytes(ram) == 0):
        raise InvalidDeployment(f"ram_request must look like '512MiB' or '2GiB' "
                                f"(KiB, MiB or GiB), got {ram!r}")
    if gpu is not None:
        if isinstance(gpu, bool) or not isinstance(gpu, int) or gpu < 0:
            raise InvalidDeployment("gpu_request must be a whole number of GPUs (0 or more)")
        if gpu > 0 and not gpu_available:
            raise InvalidDeployment(
                "gpu_request needs GPU workers: this environment runs local workers without "
                "GPU scheduling (use the Kubernetes backend with a GPU node pool)")
    return ModeOptions(enabled, count, ram, gpu)


def complete_mappings(
    rule: str,
    declared_inputs: Sequence[Mapping[str, Any]],
    declared_outputs: Sequence[Mapping[str, Any]],
    inputs_mapping: Sequence[Mapping[str, Any]],
    outputs_mapping: Sequence[Mapping[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Validate a deployment's mappings against its rule and fill in the automatic ones
    (endpoint rules map what is left to endpoint inputs/outputs of the same name)."""
    endpoint = rule == "endpoint"
    types = {d["name"]: d for d in declared_inputs}
    mapped: dict[str, dict[str, Any]] = {}
    for raw in inputs_mapping:
        name = raw.get("pipeline_input_name", raw.get("step_input_name"))
        if name not in types:
            raise InvalidDeployment(f"The input mapping names {name!r}, which the pipeline "
                                    f"does not declare (declared: {', '.join(types) or 'none'})")
        if name in mapped:
            raise InvalidDeployment(f"Input {name!r} is mapped twice")
        sources = [k for k in INPUT_SOURCES if raw.get(k) is not None]
        if len(sources) != 1:
            raise InvalidDeployment(f"The mapping of input {name!r} must have exactly one "
                                    f"source among {', '.join(INPUT_SOURCES)}")
        source = sources[0]
        data_type = types[name]["data_type"]
        where = f"Input {name!r}"
        if source == "endpoint_input_name" and not endpoint:
            raise InvalidDeployment(f"{where}: endpoint inputs exist only for endpoint "
                                    "deployments")
        if source == "constant_value":
            if data_type == "file":
                raise InvalidDeployment(f"{where} is a file: a constant cannot provide it")
            check_value(raw["constant_value"], data_type, where)
        if source == "environment_variable_name" and data_type == "file":
            raise InvalidDeployment(f"{where} is a file: an environment variable cannot "
                                    "provide it")
        if source == "datastore_path":
            if data_type != "file":
                raise InvalidDeployment(f"{where} is of type {data_type}: datastore_path maps "
                                        "file inputs only")
            if not isinstance(raw["datastore_path"], str):
                raise InvalidDeployment(f"{where}: datastore_path must be a string")
            try:
                validate_user_path(raw["datastore_path"], max_length=None)
            except BadRequest as exc:
                raise InvalidDeployment(f"{where}: {exc.message}") from exc
        if source == "is_null" and not parse_bool(raw["is_null"], f"{where} is_null"):
            raise InvalidDeployment(f"{where}: is_null must be true when given")
        item = {"pipeline_input_name": name, source: raw[source]}
        if source == "endpoint_input_name":
            item["is_required"] = parse_bool(raw["is_required"], f"{where} is_required") \
                if raw.get("is_required") is not None else types[name].get("is_required", True)
            default = raw.get("default_value")
            if default is not None:
                check_value(default, data_type, f"{where} default_value")
                item["default_value"] = default
        mapped[name] = item
    unmapped_inputs = [n for n in types if n not in mapped]
    if unmapped_inputs and not endpoint:
        raise InvalidDeployment(f"A periodic deployment must map every input explicitly; "
                                f"not mapped: {', '.join(unmapped_inputs)}")
    for name in unmapped_inputs:
        declared = types[name]
        item = {"pipeline_input_name": name, "endpoint_input_name": name,
                "is_required": declared.get("is_required", True)}
        if declared.get("default_value") is not None:
            item["default_value"] = declared["default_value"]
        mapped[name] = item
    inputs = [mapped[n] for n in types]
    file_endpoint_inputs = [i for i in inputs if "endpoint_input_name" in i
                            and types[i["pipeline_input_name"]]["data_type"] == "file"]
    if len(file_endpoint_inputs) > 1:
        raise InvalidDeployment("An endpoint can take at most one file input; map the others "
                                "to the data store")

    output_names = {d["name"] for d in declared_outputs}
    explicit = {m.get("pipeline_output_name", m.get("step_output_name"))
                for m in outputs_mapping}
    unmapped_outputs = [n for n in output_names if n not in explicit]
    if unmapped_outputs and not endpoint:
        raise InvalidDeployment(f"A periodic deployment must map every output explicitly; "
                                f"not mapped: {', '.join(sorted(unmapped_outputs))}")
    completed = [*outputs_mapping,
                 *({"pipeline_output_name": n, "endpoint_output_name": n}
                   for n in sorted(unmapped_outputs))]
    try:
        plans = plan_outputs(declared_outputs, completed, allow_endpoint=endpoint)
    except BadRequest as exc:
        raise InvalidDeployment(exc.message) from exc
    output_types = {d["name"]: d["data_type"] for d in declared_outputs}
    file_endpoint_outputs = [p for p in plans if p.mapping_type == "endpoint"
                             and output_types[p.name] == "file"]
    if len(file_endpoint_outputs) > 1:
        raise InvalidDeployment("An endpoint can return at most one file output; map the "
                                "others to the data store")
    if file_endpoint_outputs:
        # the answer is the file's bytes alone (the documented client has no way to read a
        # file and JSON outputs from one answer): anything else would be silently dropped
        others = [p.name for p in plans if p.mapping_type == "endpoint"
                  and output_types[p.name] != "file"]
        if others:
            raise InvalidDeployment(
                f"An endpoint returning the file output {file_endpoint_outputs[0].name!r} "
                f"cannot return other outputs too (its answer is the file itself); map "
                f"{', '.join(repr(n) for n in sorted(others))} to the data store or to null "
                "(outputs_mapping), or the file output to the data store")
    outputs = [{"pipeline_output_name": p.name, **p.mapping_value} if p.mapping_type != "is_null"
               else {"pipeline_output_name": p.name, "is_null": True} for p in plans]
    return inputs, outputs
