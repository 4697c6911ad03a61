from __future__ import annotations

import pytest

from tests.platform.test_auth import assert_error


def test_upsert_list_update_delete(api, unique) -> None:
    name = f"VAR_{unique}"
    response = api.put("/environment-variables",
                       json={"environment_variables": {name: "one", f"{name}_B": "b"}})
    assert response.status_code == 200
    assert {v["name"]: v["created"] for v in response.json()["environment_variables"]} == {
        name: True, f"{name}_B": True}
    api.put("/environment-variables", json={"environment_variables": {name: "two"}})
    listed = {v["name"]: v["value"] for v in api.get("/environment-variables").json()}
    assert listed[name] == "two" and listed[f"{name}_B"] == "b"
    assert api.delete(f"/environment-variables/{name}").json() == {"name": name, "value": "two"}
    assert name not in {v["name"] for v in api.get("/environment-variables").json()}
    assert_error(api.delete(f"/environment-variables/{name}"), 404, "not found")


@pytest.mark.parametrize(
    ("variables", "status", "fragment"),
    [
        ({"1BAD": "x"}, 400, "Invalid environment variable name"),
        ({"HAS-DASH": "x"}, 400, "Invalid environment variable name"),
        ({"CRAFT_AI_SDK_TOKEN": "x"}, 400, "reserved"),
        ({"gristmill_x": "x"}, 400, "reserved"),
        ({"BIG": "x" * (64 * 1024 + 1)}, 400, "too long"),
        ({"OBJ": {"a": 1}}, 422, "environment_variables"),
        ({"NULL": None}, 422, "environment_variables"),
    ],
)
def test_rejections_write_nothing(api, unique, variables, status, fragment) -> None:
    good = f"GOOD_{unique}"
    response = api.put("/environment-variables",
                       json={"environment_variables": {good: "kept?", **variables}})
    assert_error(response, status, fragment)
    assert good not in {v["name"] for v in api.get("/environment-variables").json()}


def test_malformed_body_gets_422_with_a_readable_message(api) -> None:
    response = api.put("/environment-variables", json={"wrong": {}})
    body = assert_error(response, 422, "environment_variables")
    assert body["name"] == "ValidationError"


def test_empty_upsert_is_refused(api) -> None:
    assert_error(api.put("/environment-variables", json={"environment_variables": {}}), 400,
                 "No environment variable")


def test_numbers_and_booleans_are_stored_as_text(api, unique) -> None:
    api.put("/environment-variables", json={"environment_variables": {
        f"N_{unique}": 6, f"F_{unique}": 0.5, f"B_{unique}": True}}).raise_for_status()
    listed = {v["name"]: v["value"] for v in api.get("/environment-variables").json()}
    assert (listed[f"N_{unique}"], listed[f"F_{unique}"], listed[f"B_{unique}"]) == (
        "6", "0.5", "true")


def test_a_write_is_visible_to_the_very_next_request(api, unique) -> None:
    """The transaction commits before the response goes out."""
    for i in range(30):
        name = f"RACE_{unique}_{i}"
        api.put("/environment-variables", json={"environment_variables": {name: "v"}})
        assert name in {v["name"] for v in api.get("/environment-variables").json()}
