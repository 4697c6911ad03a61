from __future__ import annotations

import pytest

from gristmill.config import (
    DEFAULT_MULTIPART_PART_SIZE_B,
    DEFAULT_MULTIPART_THRESHOLD_B,
    resolve_settings,
)

URL = "https://env.example.com"


def test_arguments_win_over_every_variable() -> None:
    env = {
        "GRISTMILL_ENVIRONMENT_URL": "https://gm.example.com",
        "GRISTMILL_SDK_TOKEN": "gm-token",
        "CRAFT_AI_ENVIRONMENT_URL": "https://craft.example.com",
        "CRAFT_AI_SDK_TOKEN": "craft-token",
    }
    s = resolve_settings("https://arg.example.com/", "arg-token", environ=env)
    assert s.environment_url == "https://arg.example.com"
    assert s.sdk_token == "arg-token"


def test_gristmill_variables_win_over_craft_ai_ones() -> None:
    env = {
        "GRISTMILL_ENVIRONMENT_URL": "https://gm.example.com",
        "GRISTMILL_SDK_TOKEN": "gm-token",
        "GRISTMILL_CONTROL_URL": "https://gm-ctl.example.com",
        "CRAFT_AI_ENVIRONMENT_URL": "https://craft.example.com",
        "CRAFT_AI_SDK_TOKEN": "craft-token",
        "CRAFT_AI_CONTROL_URL": "https://craft-ctl.example.com",
    }
    s = resolve_settings(environ=env)
    assert (s.environment_url, s.sdk_token, s.control_url) == (
        "https://gm.example.com",
        "gm-token",
        "https://gm-ctl.example.com",
    )


def test_craft_ai_variables_are_honoured() -> None:
    env = {
        "CRAFT_AI_ENVIRONMENT_URL": "https://craft.example.com/prefix/",
        "CRAFT_AI_SDK_TOKEN": "craft-token",
        "CRAFT_AI_CONTROL_URL": "https://craft-ctl.example.com",
    }
    s = resolve_settings(environ=env)
    assert s.environment_url == "https://craft.example.com/prefix"
    assert s.environment_api_url == "https://craft.example.com/prefix/api/v1"
    assert s.sdk_token == "craft-token"
    assert s.control_api_url == "https://craft-ctl.example.com/api/v1"


def test_blank_variables_fall_through_to_the_next_one() -> None:
    env = {"GRISTMILL_SDK_TOKEN": "  ", "CRAFT_AI_SDK_TOKEN": "craft-token"}
    assert resolve_settings(URL, environ=env).sdk_token == "craft-token"


def test_control_url_defaults_to_the_environment_url_never_a_saas() -> None:
    s = resolve_settings(URL, "t", environ={})
    assert s.control_url == URL
    assert "craft.ai" not in s.control_api_url


def test_missing_environment_url_names_the_variables() -> None:
    with pytest.raises(ValueError) as err:
        resolve_settings(sdk_token="t", environ={})
    assert "GRISTMILL_ENVIRONMENT_URL" in str(err.value)
    assert "CRAFT_AI_ENVIRONMENT_URL" in str(err.value)


def test_missing_token_names_the_variables() -> None:
    with pytest.raises(ValueError) as err:
        resolve_settings(URL, environ={})
    assert "GRISTMILL_SDK_TOKEN" in str(err.value)
    assert "CRAFT_AI_SDK_TOKEN" in str(err.value)


def test_a_url_without_scheme_is_refused_with_its_source() -> None:
    with pytest.raises(ValueError, match="GRISTMILL_ENVIRONMENT_URL"):
        resolve_settings(
            environ={"GRISTMILL_ENVIRONMENT_URL": "env.example.com", "GRISTMILL_SDK_TOKEN": "t"}
        )


def test_token_is_not_in_the_repr() -> None:
    s = resolve_settings(URL, "very-secret-token", environ={})
    assert "very-secret-token" not in repr(s)


def test_defaults() -> None:
    s = resolve_settings(URL, "t", environ={})
    assert s.progress is None
    assert s.multipart_threshold == DEFAULT_MULTIPART_THRESHOLD_B == 100_000_000
    assert s.multipart_part_size == DEFAULT_MULTIPART_PART_SIZE_B == 64 * 1024 * 1024
    assert s.max_retries == 2
    assert s.timeout == 60.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", False), ("false", False), ("off", False), ("1", True), ("TRUE", True), ("yes", True)],
)
def test_progress_variable(value: str, expected: bool) -> None:
    assert resolve_settings(URL, "t", environ={"GRISTMILL_PROGRESS": value}).progress is expected


def test_progress_argument_wins_over_variable() -> None:
    env = {"GRISTMILL_PROGRESS": "1"}
    assert resolve_settings(URL, "t", progress=False, environ=env).progress is False


def test_bad_progress_value_is_explained() -> None:
    with pytest.raises(ValueError, match="GRISTMILL_PROGRESS"):
        resolve_settings(URL, "t", environ={"GRISTMILL_PROGRESS": "maybe"})


def test_multipart_variables_both_spellings() -> None:
    craft = {"CRAFT_AI__MULTIPART_THRESHOLD__B": "1_000", "CRAFT_AI__MULTIPART_PART_SIZE__B": "300"}
    s = resolve_settings(URL, "t", environ=craft)
    assert (s.multipart_threshold, s.multipart_part_size) == (1000, 300)
    both = {
        **craft,
        "GRISTMILL_MULTIPART_THRESHOLD_B": "2000",
        "GRISTMILL_MULTIPART_PART_SIZE_B": "500",
    }
    s = resolve_settings(URL, "t", environ=both)
    assert (s.multipart_threshold, s.multipart_part_size) == (2000, 500)
    s = resolve_settings(URL, "t", multipart_threshold=10, multipart_part_size=5, environ=both)
    assert (s.multipart_threshold, s.multipart_part_size) == (10, 5)


def test_timeout_and_retries_from_variables() -> None:
    env = {"GRISTMILL_TIMEOUT_S": "2.5", "GRISTMILL_MAX_RETRIES": "0"}
    s = resolve_settings(URL, "t", environ=env)
    assert (s.timeout, s.max_retries) == (2.5, 0)


@pytest.mark.parametrize(
    "env",
    [
        {"GRISTMILL_MAX_RETRIES": "-1"},
        {"GRISTMILL_MAX_RETRIES": "x"},
        {"GRISTMILL_TIMEOUT_S": "0"},
        {"GRISTMILL_TIMEOUT_S": "soon"},
        {"GRISTMILL_MULTIPART_PART_SIZE_B": "0"},
    ],
)
def test_bad_numbers_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=next(iter(env))):
        resolve_settings(URL, "t", environ=env)
