from __future__ import annotations

import pytest

from gristmill_platform.errors import BadRequest
from gristmill_platform.http.forms import parse_bool, revive_json_leaves, unflatten


def test_contract_example_is_rebuilt() -> None:
    pairs = [
        ("step_name", "s1"),
        ("container_config[language]", "python:3.10-slim"),
        ("container_config[included_folders][0]", "src"),
        ("container_config[included_folders][1]", "/README.md"),
        ("container_config[repository_deploy_key]", ""),
        ("inputs[0][name]", "a"), ("inputs[0][data_type]", "string"),
        ("inputs[0][is_required]", "True"),
        ("inputs[1][name]", "n"), ("inputs[1][default_value]", "3"),
        ("inputs[3][name]", "j"),
        ("inputs[3][default_value][k][0]", "1"), ("inputs[3][default_value][k][1]", "2"),
    ]
    data = unflatten(pairs)
    assert data["container_config"]["included_folders"] == ["src", "/README.md"]
    assert data["container_config"]["repository_deploy_key"] == ""
    assert [i["name"] for i in data["inputs"]] == ["a", "n", "j"]  # gaps closed, order kept
    assert data["inputs"][2]["default_value"] == {"k": ["1", "2"]}


def test_indices_sort_numerically() -> None:
    pairs = [(f"x[{i}]", str(i)) for i in (10, 2, 1)]
    assert unflatten(pairs)["x"] == ["1", "2", "10"]


@pytest.mark.parametrize("key", ["a[", "a]b", "[a]", "a[b]c", "a[]"])
def test_malformed_keys_are_rejected(key: str) -> None:
    with pytest.raises(BadRequest):
        unflatten([(key, "v")])


def test_conflicting_fields_are_rejected() -> None:
    with pytest.raises(BadRequest, match="conflicts"):
        unflatten([("a", "1"), ("a[b]", "2")])
    with pytest.raises(BadRequest, match="conflicts"):
        unflatten([("a[b]", "2"), ("a", "1")])


def test_booleans_and_json_leaves() -> None:
    assert parse_bool("TRUE", "x") is True and parse_bool("false", "x") is False
    with pytest.raises(BadRequest, match="boolean"):
        parse_bool("maybe", "is_required")
    assert revive_json_leaves({"k": ["1", "2.5", "True", "x"]}) == {"k": [1, 2.5, True, "x"]}
