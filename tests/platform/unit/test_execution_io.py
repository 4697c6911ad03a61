"""Inputs and outputs of an execution (executions/io.py): every refusal with its name,
status and message, the conversions of environment-variable mappings, and both size
limits at their exact edge."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gristmill_platform.errors import BadRequest
from gristmill_platform.executions.io import (
    MAX_IO_BYTES,
    InvalidInputs,
    OutputPlan,
    ResolvedInput,
    check_outputs,
    plan_outputs,
    resolve_deployment_inputs,
    resolve_inputs,
    size_of,
)

NUMBER = {"name": "n", "data_type": "number"}
FILE = {"name": "f", "data_type": "file"}


def refusal(call: Callable[[], object]) -> tuple[int, str, str]:
    """(status, name, message) of the 400 the call raises: InvalidInputs for the mapping
    rules, BadRequest from the shared type check."""
    with pytest.raises(BadRequest) as caught:
        call()
    return caught.value.status_code, caught.value.name, caught.value.message


def bad(message: str, name: str = "InvalidInputs") -> tuple[int, str, str]:
    return 400, name, message


def one(data_type: str, **extra: Any) -> list[dict[str, Any]]:
    return [{"name": "x", "data_type": data_type, **extra}]


# -- given values, defaults, files -----------------------------------------------------------

def test_given_values_are_checked_and_recorded_as_run_inputs() -> None:
    [resolved] = resolve_inputs(one("number"), {"x": 2.5}, set(), [], {})
    assert resolved == ResolvedInput("x", "number", "run",
                                     {"run_input_name": "x", "is_required": True}, 2.5)
    assert resolved.record() == {"pipeline_input_name": "x", "data_type": "number",
                                 "mapping_type": "run",
                                 "mapping_value": {"run_input_name": "x", "is_required": True},
                                 "value": 2.5}
    assert refusal(lambda: resolve_inputs(one("number"), {"x": "2"}, set(), [], {})) == bad(
        "Input 'x' must be of type number, got str", "BadRequest")


def test_defaults_apply_to_missing_and_null_values() -> None:
    declared = one("string", default_value="d", is_required=True)
    for given in ({}, {"x": None}):
        assert resolve_inputs(declared, given, set(), [], {}) == [ResolvedInput(
            "x", "string", "run",
            {"run_input_name": "x", "is_required": True, "default_value": "d"}, "d")]


def test_optional_input_without_value_is_null_and_required_one_is_missing() -> None:
    assert resolve_inputs(one("json", is_required=False), {}, set(), [], {}) == [
        ResolvedInput("x", "json", "run", {"run_input_name": "x", "is_required": False})]
    declared = [*one("json"), {"name": "y", "data_type": "file"}]
    assert refusal(lambda: resolve_inputs(declared, {}, set(), [], {})) == bad(
        "Missing required input(s): x, y")
    with pytest.raises(InvalidInputs) as caught:
        resolve_inputs(declared, {}, set(), [], {})
    assert caught.value.additional_data == {"missing": ["x", "y"]}


def test_file_inputs_come_as_file_parts_only() -> None:
    assert resolve_inputs([FILE], {}, {"f"}, [], {}) == [ResolvedInput(
        "f", "file", "run", {"run_input_name": "f", "is_required": True},
        file_source=("upload", "f"))]
    assert refusal(lambda: resolve_inputs([FILE], {"f": "x"}, set(), [], {})) == bad(
        "Input 'f' is a file: send it as a file part, not as a value")
    [optional] = resolve_inputs([{**FILE, "is_required": False}], {}, set(), [], {})
    assert (optional.file_source, optional.value) == (None, None)


def test_file_sent_for_a_value_input_is_refused() -> None:
    assert refusal(lambda: resolve_inputs([NUMBER], {}, {"n"}, [], {})) == bad(
        "Input 'n' is of type number: send it as a value, not a file")


def test_unknown_inputs_are_named_with_what_the_pipeline_declares() -> None:
    assert refusal(lambda: resolve_inputs([NUMBER, FILE], {"z": 1}, {"a"}, [], {})) == bad(
        "Unknown input(s): a, z (the pipeline declares: n, f)")
    assert refusal(lambda: resolve_inputs([], {"z": 1}, set(), [], {})) == bad(
        "Unknown input(s): z (the pipeline declares: no input)")


# -- mappings --------------------------------------------------------------------------------

def test_constant_mapping() -> None:
    [resolved] = resolve_inputs(one("array"), {}, set(),
                                [{"pipeline_input_name": "x", "constant_value": [1]}], {})
    assert resolved == ResolvedInput("x", "array", "constant", {"constant_value": [1]}, [1])
    assert resolved.record()["mapping_type"] == "constant"
    assert refusal(lambda: resolve_inputs(
        one("array"), {}, set(), [{"pipeline_input_name": "x", "constant_value": 1}], {})) == bad(
        "Input 'x' must be of type array, got int", "BadRequest")
    assert refusal(lambda: resolve_inputs(
        [FILE], {}, set(), [{"pipeline_input_name": "f", "constant_value": "x"}], {})) == bad(
        "Input 'f' is a file: map it with datastore_path, not a constant")


def test_legacy_step_input_name_is_accepted() -> None:
    [resolved] = resolve_inputs(one("string"), {}, set(),
                                [{"step_input_name": "x", "constant_value": "v"}], {})
    assert resolved.value == "v"


@pytest.mark.parametrize(("data_type", "raw", "value"), [
    ("string", "007", "007"),
    ("string", "", ""),
    ("number", "42", 42),
    ("number", "-1.5", -1.5),
    ("number", "1e3", 1000.0),
    ("boolean", "true", True),
    ("boolean", "0", False),
    ("json", '{"a": [1, null]}', {"a": [1, None]}),
    ("json", "null", None),
    ("array", "[1, \"b\"]", [1, "b"]),
])
def test_environment_variable_mapping_converts_to_the_declared_type(
        data_type: str, raw: str, value: object) -> None:
    [resolved] = resolve_inputs(one(data_type), {}, set(),
                                [{"pipeline_input_name": "x", "environment_variable_name": "V"}],
                                {"V": raw, "OTHER": "1"})
    assert resolved == ResolvedInput("x", data_type, "environment_variable",
                                     {"environment_variable_name": "V"}, value)
    assert type(resolved.value) is type(value)


@pytest.mark.parametrize(("data_type", "raw", "expected"), [
    ("number", "ten", bad("Input 'x' must be a number, got 'ten'")),
    ("number", "nan", bad("Input 'x' must be a finite number, got 'nan'")),
    ("number", "-inf", bad("Input 'x' must be a finite number, got '-inf'")),
    ("number", "1e999", bad("Input 'x' must be a finite number, got '1e999'")),
    ("boolean", "maybe", bad("Input 'x' must be a boolean (True or False), got 'maybe'",
                             "BadRequest")),
    ("json", "{oops", bad("Input 'x' must hold JSON, got '{oops'")),
    ("array", '{"a": 1}', bad("Input 'x' must be of type array, got dict", "BadRequest")),
])
def test_environment_variable_that_does_not_convert_is_refused(
        data_type: str, raw: str, expected: tuple[int, str, str]) -> None:
    mapping = [{"pipeline_input_name": "x", "environment_variable_name": "V"}]
    assert refusal(lambda: resolve_inputs(one(data_type), {}, set(), mapping,
                                          {"V": raw})) == expected


def test_environment_variable_mapping_refusals() -> None:
    mapping = [{"pipeline_input_name": "x", "environment_variable_name": "V"}]
    assert refusal(lambda: resolve_inputs(one("string"), {}, set(), mapping, {})) == bad(
        "Input 'x' is mapped to environment variable 'V', which is not defined")
    file_mapping = [{"pipeline_input_name": "f", "environment_variable_name": "V"}]
    assert refusal(lambda: resolve_inputs([FILE], {}, set(), file_mapping, {"V": "a"})) == bad(
        "Input 'f' is a file: map it with datastore_path")


def test_is_null_mapping() -> None:
    for flag in (True, "true"):
        assert resolve_inputs(
            one("string", default_value="d"), {}, set(),
            [{"pipeline_input_name": "x", "is_null": flag}], {}) == [
            ResolvedInput("x", "string", "is_null", {"is_null": True}, None)]
    assert refusal(lambda: resolve_inputs(
        one("string"), {}, set(), [{"pipeline_input_name": "x", "is_null": False}], {})) == bad(
        "Input 'x': is_null must be true when given")
    assert refusal(lambda: resolve_inputs(
        one("string"), {}, set(), [{"pipeline_input_name": "x", "is_null": "maybe"}], {})) == bad(
        "Input 'x' is_null must be a boolean (True or False), got 'maybe'", "BadRequest")


def test_datastore_path_mapping() -> None:
    assert resolve_inputs(
        [FILE], {}, set(), [{"pipeline_input_name": "f", "datastore_path": "in/a.csv"}], {}) == [
        ResolvedInput("f", "file", "datastore", {"datastore_path": "in/a.csv"},
                      file_source=("datastore", "in/a.csv"))]
    assert refusal(lambda: resolve_inputs(
        [NUMBER], {}, set(), [{"pipeline_input_name": "n", "datastore_path": "a"}], {})) == bad(
        "Input 'n' is of type number: datastore_path maps file inputs only")
    assert refusal(lambda: resolve_inputs(
        [FILE], {}, set(), [{"pipeline_input_name": "f", "datastore_path": 3}], {})) == bad(
        "Input 'f': datastore_path must be a string")


def test_endpoint_mapping_is_for_deployments_only() -> None:
    mapping = {"pipeline_input_name": "x", "endpoint_input_name": "e", "is_required": False,
               "default_value": "d"}
    assert refusal(lambda: resolve_inputs(one("string"), {}, set(), [mapping], {})) == bad(
        "Input 'x': endpoint_input_name only applies to endpoint deployments; "
        "give the value in inputs instead")
    assert resolve_inputs(one("string"), {}, set(), [mapping], {}, allow_endpoint=True) == [
        ResolvedInput("x", "string", "endpoint",
                      {"endpoint_input_name": "e", "is_required": False, "default_value": "d"})]
    [plain] = resolve_inputs(one("string"), {}, set(),
                             [{"pipeline_input_name": "x", "endpoint_input_name": "e"}], {},
                             allow_endpoint=True)
    assert plain.mapping_value == {"endpoint_input_name": "e", "is_required": True}


@pytest.mark.parametrize(("mappings", "message"), [
    ([{"constant_value": 1}], "A input mapping lacks pipeline_input_name"),
    ([{"pipeline_input_name": 3, "constant_value": 1}],
     "A input mapping lacks pipeline_input_name"),
    ([{"pipeline_input_name": "zz", "constant_value": 1}],
     "The input mapping names 'zz', which the pipeline does not declare (declared: n, x)"),
    ([{"pipeline_input_name": "x", "constant_value": 1},
      {"pipeline_input_name": "x", "is_null": True}], "Input 'x' is mapped twice"),
    ([{"pipeline_input_name": "x"}],
     "The mapping of input 'x' must have exactly one source among endpoint_input_name, "
     "constant_value, environment_variable_name, is_null, datastore_path (got none)"),
    ([{"pipeline_input_name": "x", "constant_value": None, "is_null": None}],
     "The mapping of input 'x' must have exactly one source among endpoint_input_name, "
     "constant_value, environment_variable_name, is_null, datastore_path (got none)"),
    ([{"pipeline_input_name": "x", "constant_value": 1, "is_null": True}],
     "The mapping of input 'x' must have exactly one source among endpoint_input_name, "
     "constant_value, environment_variable_name, is_null, datastore_path "
     "(got constant_value, is_null)"),
])
def test_bad_input_mappings_are_refused(mappings: list[dict[str, Any]], message: str) -> None:
    declared = [*one("number"), NUMBER]
    assert refusal(lambda: resolve_inputs(declared, {}, set(), mappings, {})) == bad(message)


def test_mapping_to_an_undeclared_input_lists_none_when_nothing_is_declared() -> None:
    assert refusal(lambda: resolve_inputs(
        [], {}, set(), [{"pipeline_input_name": "x", "constant_value": 1}], {})) == bad(
        "The input mapping names 'x', which the pipeline does not declare (declared: none)")


@pytest.mark.parametrize(("given", "files"), [({"x": 1}, set()), ({}, {"x"})])
def test_input_both_given_and_mapped_is_refused(given: dict[str, Any], files: set[str]) -> None:
    mapping = [{"pipeline_input_name": "x", "constant_value": 1}]
    assert refusal(lambda: resolve_inputs(one("json"), given, files, mapping, {})) == bad(
        "Input 'x' is both given and mapped: choose one")


# -- sizes -----------------------------------------------------------------------------------

def test_size_counts_compact_json_and_skips_nulls() -> None:
    assert size_of([{"a": [1, 2]}, None, "é"]) == len('{"a":[1,2]}') + len('"\\u00e9"')
    assert size_of([]) == 0


def _string_of_json_size(size: int) -> str:
    return "x" * (size - 2)  # the quotes count


def test_inputs_at_the_size_limit_pass_and_one_byte_more_is_refused() -> None:
    declared = [*one("string"), {"name": "f", "data_type": "file"}]
    at_limit = _string_of_json_size(MAX_IO_BYTES)
    assert resolve_inputs(declared, {"x": at_limit}, {"f"}, [], {})[0].value == at_limit
    over = at_limit + "x"
    assert refusal(lambda: resolve_inputs(declared, {"x": over}, {"f"}, [], {})) == bad(
        f"The non-file inputs total {MAX_IO_BYTES + 1} bytes; the limit is 0.06 MB (60000 bytes)."
        " Pass large data as a file input or through the data store.", "InputsTooLarge")


def test_outputs_at_the_size_limit_pass_and_one_byte_more_fails_the_execution() -> None:
    plans = plan_outputs(one("string"), [])
    at_limit = _string_of_json_size(MAX_IO_BYTES)
    assert check_outputs(plans, {"x": at_limit}, set()) == ({"x": at_limit}, None)
    assert check_outputs(plans, {"x": at_limit + "x"}, set()) == (
        {}, f"The non-file outputs total {MAX_IO_BYTES + 1} bytes; the limit is 0.06 MB "
            "(60000 bytes): return large results as a file output")


# -- outputs ---------------------------------------------------------------------------------

def test_output_plans_follow_their_mappings() -> None:
    declared = [{"name": "a", "data_type": "number"}, {"name": "b", "data_type": "file"},
                {"name": "c", "data_type": "string"}, {"name": "d", "data_type": "json"}]
    plans = plan_outputs(declared, [
        {"pipeline_output_name": "b", "datastore_path": "out/{execution_id}"},
        {"step_output_name": "c", "is_null": True},
        {"pipeline_output_name": "d", "endpoint_output_name": "public"},
    ], allow_endpoint=True)
    assert plans == [
        OutputPlan("a", "number", "run", {"run_output_name": "a"}),
        OutputPlan("b", "file", "datastore", {"datastore_path": "out/{execution_id}"}),
        OutputPlan("c", "string", "is_null", {"is_null": True}),
        OutputPlan("d", "json", "endpoint", {"endpoint_output_name": "public"}),
    ]
    assert plans[0].record() == {"pipeline_output_name": "a", "data_type": "number",
                                 "mapping_type": "run",
                                 "mapping_value": {"run_output_name": "a"}, "value": None}


@pytest.mark.parametrize(("mappings", "message"), [
    ([{"is_null": True}], "A output mapping lacks pipeline_output_name"),
    ([{"pipeline_output_name": "z", "is_null": True}],
     "The output mapping names 'z', which the pipeline does not declare (declared: a, f)"),
    ([{"pipeline_output_name": "a", "is_null": True},
      {"pipeline_output_name": "a", "is_null": True}], "Output 'a' is mapped twice"),
    ([{"pipeline_output_name": "a"}],
     "The mapping of output 'a' must have exactly one destination among "
     "endpoint_output_name, is_null, datastore_path"),
    ([{"pipeline_output_name": "a", "is_null": True, "datastore_path": "p"}],
     "The mapping of output 'a' must have exactly one destination among "
     "endpoint_output_name, is_null, datastore_path"),
    ([{"pipeline_output_name": "a", "endpoint_output_name": "e"}],
     "Output 'a': endpoint_output_name only applies to endpoint deployments"),
    ([{"pipeline_output_name": "a", "datastore_path": "p"}],
     "Output 'a' is of type number: datastore_path maps file outputs only"),
])
def test_bad_output_mappings_are_refused(mappings: list[dict[str, Any]], message: str) -> None:
    declared = [{"name": "a", "data_type": "number"}, FILE]
    assert refusal(lambda: plan_outputs(declared, mappings)) == bad(message)


RESERVED = "'.gristmill' is reserved for the platform's own files"


@pytest.mark.parametrize(("path", "message"), [
    (".gristmill/steps/s/code.tgz",
     f"Invalid object path '.gristmill/steps/s/code.tgz': {RESERVED}"),
    (".gristmill", f"Invalid object path '.gristmill': {RESERVED}"),
    ("../escape.txt",
     "Invalid object path '../escape.txt': '.' and '..' segments are not allowed"),
    ("/abs.txt", "Invalid object path '/abs.txt': it must be relative (no leading '/')"),
    ("a//b", "Invalid object path 'a//b': empty segment ('//' or a trailing '/')"),
    (7, "Output 'f': datastore_path must be a string"),
])
def test_output_paths_are_checked_when_the_run_is_asked_for(path: object, message: str) -> None:
    """Not when the outputs are written: by then the step has run for nothing, and the
    platform's own files (step archives, other executions' outputs) are written through
    the raw backend, which would have let a run overwrite them."""
    mapping = [{"pipeline_output_name": "f", "datastore_path": path}]
    status, _, text = refusal(lambda: plan_outputs([FILE], mapping))
    assert (status, text) == (400, message)


@pytest.mark.parametrize("path", [".gristmill/executions/x/outputs/f", ".gristmill",
                                  "../x", "a//b", "/x"])
def test_input_paths_may_not_name_the_platforms_files_or_escape(path: str) -> None:
    mapping = [{"pipeline_input_name": "f", "datastore_path": path}]
    status, name, _ = refusal(lambda: resolve_inputs([FILE], {}, set(), mapping, {}))
    assert (status, name) == (400, "InvalidPath")


def test_a_mappings_path_length_is_the_backends_to_check() -> None:
    """It knows the configured limit (GRISTMILL_DATASTORE_MAX_PATH_LENGTH), which may be
    more than the default 1024 bytes."""
    long = "d/" * 600 + "f.bin"
    [resolved] = resolve_inputs([FILE], {}, set(),
                                [{"pipeline_input_name": "f", "datastore_path": long}], {})
    assert resolved.file_source == ("datastore", long)
    [plan] = plan_outputs([FILE], [{"pipeline_output_name": "f", "datastore_path": long}])
    assert plan.mapping_value == {"datastore_path": long}


def test_a_pattern_expands_to_what_it_was_checked_as() -> None:
    plans = plan_outputs([FILE], [{"pipeline_output_name": "f",
                                   "datastore_path": "out/{date}/{execution_id}.bin"}])
    assert plans[0].mapping_value == {"datastore_path": "out/{date}/{execution_id}.bin"}


def test_step_returning_something_else_than_a_dict_fails_with_its_type() -> None:
    plans = plan_outputs([{"name": "a", "data_type": "number", "is_required": False}],
                         [{"pipeline_output_name": "a", "is_null": True}])
    for returned, type_name in (([1], "list"), ("a", "str"), (3, "int")):
        assert check_outputs(plans, returned, set()) == (
            {}, "The step function must return a dict of its outputs, it returned a "
                f"{type_name}")
    assert check_outputs(plans, None, set()) == ({}, None)


def test_output_check_messages() -> None:
    plans = plan_outputs([{"name": "a", "data_type": "number"}, FILE], [])
    assert check_outputs(plans, {"a": 1, "z": 2, "y": 3}, {"f"}) == (
        {}, "The step function returned undeclared output(s): y, z (declared: a, f)")
    assert check_outputs([], {"z": 2}, set()) == (
        {}, "The step function returned undeclared output(s): z (declared: none)")
    # a file output comes back as a received file, which may also appear in the result
    assert check_outputs(plans, {"a": 1, "f": {"path": "x"}}, {"f"}) == ({"a": 1}, None)
    assert check_outputs(plans, {"a": 1}, set()) == (
        {}, "Output 'f' (file) is missing: return {'f': {'path': '<file>'}}")
    assert check_outputs(plans, {}, {"f"}) == (
        {}, "Output 'a' is missing from the step function's result")
    assert check_outputs(plans, {"a": True}, {"f"}) == (
        {}, "Output 'a' must be of type number, got bool")


def test_null_mapped_outputs_may_be_absent() -> None:
    plans = plan_outputs([{"name": "a", "data_type": "number"}, FILE],
                         [{"pipeline_output_name": "a", "is_null": True},
                          {"pipeline_output_name": "f", "is_null": True}])
    assert check_outputs(plans, {}, set()) == ({}, None)
    assert check_outputs(plans, {"a": 2}, set()) == ({"a": 2}, None)


# -- inputs of an execution triggered through a deployment -----------------------------------

def _deployment(mappings: list[dict[str, Any]], body: dict[str, Any],
                files: set[str] = frozenset(),  # type: ignore[assignment]
                declared: list[dict[str, Any]] | None = None,
                environment: dict[str, str] | None = None) -> list[ResolvedInput]:
    declared = declared if declared is not None else [
        {"name": "a", "data_type": "number"}, {"name": "b", "data_type": "string"}, FILE]
    return resolve_deployment_inputs(declared, mappings, body, set(files), environment or {})


def test_deployment_inputs_come_by_their_endpoint_names_in_declared_order() -> None:
    resolved = _deployment([
        {"pipeline_input_name": "b", "environment_variable_name": "B"},
        {"pipeline_input_name": "f", "endpoint_input_name": "upload", "is_required": True},
        {"pipeline_input_name": "a", "endpoint_input_name": "count"},
    ], {"count": 3}, {"upload"}, environment={"B": "from-env"})
    assert resolved == [
        ResolvedInput("a", "number", "endpoint", {"endpoint_input_name": "count"}, 3),
        ResolvedInput("b", "string", "environment_variable",
                      {"environment_variable_name": "B"}, "from-env"),
        ResolvedInput("f", "file", "endpoint",
                      {"endpoint_input_name": "upload", "is_required": True},
                      file_source=("upload", "upload")),
    ]


def test_deployment_mapped_inputs_are_refused_by_their_pipeline_names() -> None:
    mapping = [{"pipeline_input_name": "b", "environment_variable_name": "B"}]
    assert refusal(lambda: _deployment(mapping, {})) == bad(
        "Input 'b' is mapped to environment variable 'B', which is not defined")


def test_deployment_endpoint_default_value_applies_when_no_value_is_sent() -> None:
    mapping = {"pipeline_input_name": "a", "endpoint_input_name": "count", "default_value": 7,
               "is_required": True}
    record = {"endpoint_input_name": "count", "is_required": True, "default_value": 7}
    for body in ({}, {"count": None}):
        assert _deployment([mapping], body) == [
            ResolvedInput("a", "number", "endpoint", record, 7)]
    assert _deployment([mapping], {"count": 1}) == [
        ResolvedInput("a", "number", "endpoint", record, 1)]


def test_deployment_optional_endpoint_input_without_value_is_null() -> None:
    value = {"pipeline_input_name": "a", "endpoint_input_name": "count", "is_required": False}
    assert _deployment([value], {}) == [ResolvedInput(
        "a", "number", "endpoint", {"endpoint_input_name": "count", "is_required": False},
        None)]
    file = {"pipeline_input_name": "f", "endpoint_input_name": "upload", "is_required": False}
    assert _deployment([file], {}) == [ResolvedInput(
        "f", "file", "endpoint", {"endpoint_input_name": "upload", "is_required": False},
        None)]


def test_deployment_required_endpoint_inputs_are_missing_by_their_public_names() -> None:
    mappings = [{"pipeline_input_name": "a", "endpoint_input_name": "count"},
                {"pipeline_input_name": "f", "endpoint_input_name": "upload"}]
    with pytest.raises(InvalidInputs) as caught:
        _deployment(mappings, {})
    assert (caught.value.status_code, caught.value.name, caught.value.message) == bad(
        "Missing required input(s): count, upload")
    assert caught.value.additional_data == {"missing": ["count", "upload"]}


def test_deployment_input_refusals() -> None:
    mappings = [{"pipeline_input_name": "a", "endpoint_input_name": "count"},
                {"pipeline_input_name": "f", "endpoint_input_name": "upload"}]
    assert refusal(lambda: _deployment(mappings, {"count": 1, "a": 2}, {"zz"})) == bad(
        "Unknown input(s): a, zz (this endpoint takes: count, upload)")
    assert refusal(lambda: _deployment([], {"a": 2})) == bad(
        "Unknown input(s): a (this endpoint takes: no input)")
    assert refusal(lambda: _deployment(mappings, {"count": 1, "upload": "x"})) == bad(
        "Input 'upload' is a file: send it as a multipart file part")
    assert refusal(lambda: _deployment(mappings, {}, {"count", "upload"})) == bad(
        "Input 'count' is of type number: send it as a value")
    assert refusal(lambda: _deployment(mappings, {"count": "1"}, {"upload"})) == bad(
        "Input 'count' must be of type number, got str", "BadRequest")


def test_deployment_inputs_share_the_size_limit() -> None:
    declared = [{"name": "b", "data_type": "string"}]
    mapping = [{"pipeline_input_name": "b", "endpoint_input_name": "text"}]
    at_limit = _string_of_json_size(MAX_IO_BYTES)
    assert _deployment(mapping, {"text": at_limit}, declared=declared)[0].value == at_limit
    assert refusal(lambda: _deployment(mapping, {"text": at_limit + "x"},
                                       declared=declared))[1] == "InputsTooLarge"



def test_outputs_after_a_file_or_an_absent_null_output_are_still_checked() -> None:
    declared = [FILE, {"name": "gone", "data_type": "string"}, {"name": "a", "data_type": "number"}]
    plans = plan_outputs(declared, [{"pipeline_output_name": "gone", "is_null": True}])
    assert check_outputs(plans, {"a": 1}, {"f"}) == ({"a": 1}, None)
    assert check_outputs(plans, {}, {"f"}) == (
        {}, "Output 'a' is missing from the step function's result")


def test_inputs_after_a_mapped_one_are_still_resolved() -> None:
    declared = [*one("string"), NUMBER]
    assert resolve_inputs(declared, {"n": 1}, set(),
                          [{"pipeline_input_name": "x", "constant_value": "c"}], {}) == [
        ResolvedInput("x", "string", "constant", {"constant_value": "c"}, "c"),
        ResolvedInput("n", "number", "run", {"run_input_name": "n", "is_required": True}, 1),
    ]


def test_every_declared_input_is_resolved_in_order() -> None:
    declared = [FILE, NUMBER, *one("string", default_value="d"), *one("json")]
    declared[3] = {"name": "j", "data_type": "json", "is_required": False}
    assert resolve_inputs(declared, {"n": 1}, {"f"}, [], {}) == [
        ResolvedInput("f", "file", "run", {"run_input_name": "f", "is_required": True},
                      file_source=("upload", "f")),
        ResolvedInput("n", "number", "run", {"run_input_name": "n", "is_required": True}, 1),
        ResolvedInput("x", "string", "run",
                      {"run_input_name": "x", "is_required": True, "default_value": "d"}, "d"),
        ResolvedInput("j", "json", "run", {"run_input_name": "j", "is_required": False}),
    ]
