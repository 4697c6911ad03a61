"""Environment variables against the real control service."""

from __future__ import annotations

import pytest

from gristmill import APIError, Gristmill, NotFoundError


def _as_dict(gm: Gristmill) -> dict[str, str]:
    return {v["name"]: v["value"] for v in gm.list_environment_variables()}


def test_upsert_list_delete(gm: Gristmill, unique: str) -> None:
    name = f"SDK_TEST_{unique.upper()}"
    assert gm.create_or_update_environment_variable(name, "first") is None
    assert _as_dict(gm)[name] == "first"

    gm.create_or_update_environment_variable(
        environment_variable_name=name, environment_variable_value="second"
    )
    variables = gm.list_environment_variables()
    assert [v for v in variables if v["name"] == name] == [{"name": name, "value": "second"}]

    assert gm.delete_environment_variable(name) == {"name": name, "value": "second"}
    assert name not in _as_dict(gm)


def test_numbers_are_stored_as_text(gm: Gristmill, unique: str) -> None:
    # The documentation's own example passes an int.
    name = f"SDK_NUM_{unique.upper()}"
    gm.create_or_update_environment_variable(
        environment_variable_name=name, environment_variable_value=6
    )  # type: ignore[arg-type]
    assert _as_dict(gm)[name] == "6"
    gm.delete_environment_variable(name)


def test_deleting_a_missing_variable_is_not_found(gm: Gristmill, unique: str) -> None:
    with pytest.raises(NotFoundError) as err:
        gm.delete_environment_variable(f"SDK_MISSING_{unique.upper()}")
    assert f"SDK_MISSING_{unique.upper()}" in err.value.message


def test_invalid_names_are_refused_with_the_server_message(gm: Gristmill) -> None:
    with pytest.raises(APIError) as err:
        gm.create_or_update_environment_variable("not a/valid name", "x")
    assert 400 <= err.value.status_code < 500
    assert "not a/valid name" in err.value.message


def test_names_are_escaped_in_the_url(gm: Gristmill) -> None:
    # "A B" reaches the delete route as one segment, which answers about that name.
    with pytest.raises(NotFoundError) as err:
        gm.delete_environment_variable("A B")
    assert "'A B'" in err.value.message
