"""The worker's environment: a pre-minted access token is the launcher's alone."""

from __future__ import annotations

from gristmill_platform.executions.runner_env import runner_env


def test_the_given_access_token_is_passed() -> None:
    env = runner_env("http://cs", "sdk", "e-1", "/code", None, {}, access_token="jwt")
    assert env["GRISTMILL_ACCESS_TOKEN"] == "jwt"
    assert env["GRISTMILL_SDK_TOKEN"] == "sdk"


def test_a_variable_never_stands_in_for_the_access_token() -> None:
    variables = {"GRISTMILL_ACCESS_TOKEN": "from a user", "OTHER": "kept"}
    assert "GRISTMILL_ACCESS_TOKEN" not in runner_env("http://cs", "sdk", "e-1", "/code",
                                                      None, variables)
    env = runner_env("http://cs", "sdk", "e-1", "/code", None, variables, access_token="jwt")
    assert env["GRISTMILL_ACCESS_TOKEN"] == "jwt" and env["OTHER"] == "kept"
