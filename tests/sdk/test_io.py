"""gristmill.io: the same constructors and to_dict() as craft-ai-sdk 0.50.1 (contract §7)."""

from __future__ import annotations

import warnings

import pytest

import gristmill
from gristmill.io import (
    CREATION_PARAMETER_VALUE,
    INPUT_OUTPUT_TYPES,
    STEP_PARAMETER,
    Input,
    InputSource,
    Output,
    OutputDestination,
)


def test_types_are_their_strings() -> None:
    assert [t.value for t in INPUT_OUTPUT_TYPES] == [
        "string",
        "number",
        "boolean",
        "json",
        "array",
        "file",
    ]
    assert INPUT_OUTPUT_TYPES.FILE == "file"
    assert str(INPUT_OUTPUT_TYPES.JSON) == "json"
    assert f"{INPUT_OUTPUT_TYPES.NUMBER}" == "number"


def test_input_to_dict_order_and_none_left_out() -> None:
    full = Input("a", "json", description="d", is_required=True, default_value={"k": 1})
    assert list(full.to_dict().items()) == [
        ("name", "a"),
        ("data_type", "json"),
        ("description", "d"),
        ("is_required", True),
        ("default_value", {"k": 1}),
    ]
    assert Input("b", INPUT_OUTPUT_TYPES.FILE).to_dict() == {"name": "b", "data_type": "file"}
    # Falsy values are values: only None is left out.
    assert Input("c", "boolean", description="", is_required=False, default_value=0).to_dict() == {
        "name": "c",
        "data_type": "boolean",
        "description": "",
        "is_required": False,
        "default_value": 0,
    }


def test_output_to_dict() -> None:
    assert list(Output("r", "string", "res").to_dict().items()) == [
        ("name", "r"),
        ("data_type", "string"),
        ("description", "res"),
    ]
    assert Output("r", "file").to_dict() == {"name": "r", "data_type": "file"}


def test_input_source_to_dict() -> None:
    source = InputSource(
        pipeline_input_name="a",
        endpoint_input_name="in_a",
        is_required=True,
        default_value="z",
    )
    assert list(source.to_dict()) == [
        "pipeline_input_name",
        "endpoint_input_name",
        "is_required",
        "default_value",
    ]
    assert InputSource(pipeline_input_name="c", constant_value=5).to_dict() == {
        "pipeline_input_name": "c",
        "constant_value": 5,
    }
    assert InputSource(pipeline_input_name="g", is_null=True).to_dict() == {
        "pipeline_input_name": "g",
        "is_null": True,
    }
    assert InputSource(pipeline_input_name="z", constant_value=0).to_dict()["constant_value"] == 0
    every = InputSource("p", "e", "v", True, "d", "c", True, "ds/x.csv").to_dict()
    assert list(every) == [
        "pipeline_input_name",
        "endpoint_input_name",
        "environment_variable_name",
        "is_required",
        "default_value",
        "constant_value",
        "is_null",
        "datastore_path",
    ]


def test_input_source_names() -> None:
    with pytest.raises(ValueError, match="pipeline_input_name"):
        InputSource(constant_value=1)
    with pytest.raises(ValueError, match="Both"):
        InputSource(pipeline_input_name="a", step_input_name="a")
    with pytest.warns(FutureWarning, match="step_input_name"):
        old = InputSource(step_input_name="a", constant_value=1)
    # The deprecated alias is sent under its own key, as craft-ai-sdk does.
    assert old.to_dict() == {"constant_value": 1, "step_input_name": "a"}


def test_output_destination() -> None:
    with warnings.catch_warnings():
        # The current name must not warn (craft-ai-sdk 0.50.1 wrongly does).
        warnings.simplefilter("error")
        dest = OutputDestination(pipeline_output_name="r", datastore_path="out/{execution_id}.txt")
    assert dest.to_dict() == {
        "pipeline_output_name": "r",
        "datastore_path": "out/{execution_id}.txt",
    }
    assert list(OutputDestination("r", "out_r", True, "p").to_dict()) == [
        "pipeline_output_name",
        "endpoint_output_name",
        "is_null",
        "datastore_path",
    ]
    with pytest.warns(FutureWarning):
        assert OutputDestination(step_output_name="r", is_null=True).to_dict() == {
            "is_null": True,
            "step_output_name": "r",
        }
    with pytest.raises(ValueError):
        OutputDestination()


def test_creation_parameter_value_and_exports() -> None:
    assert STEP_PARAMETER is CREATION_PARAMETER_VALUE
    assert {m.name for m in CREATION_PARAMETER_VALUE} == {"FALLBACK_PROJECT", "NULL"}
    for name in ("Input", "Output", "InputSource", "OutputDestination", "INPUT_OUTPUT_TYPES"):
        assert getattr(gristmill, name) is getattr(gristmill.io, name)
    assert gristmill.CREATION_PARAMETER_VALUE is CREATION_PARAMETER_VALUE
