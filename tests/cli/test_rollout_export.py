"""`gristmill rollout export` ends like every other daily command on an error: the
error's name and message on stderr, exit code 1, no traceback (docs/cli.md)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gristmill.cli.app import app
from tests.conftest import GristmillEnv

_VARIABLES = ("GRISTMILL_ENVIRONMENT_URL", "GRISTMILL_SDK_TOKEN", "CRAFT_AI_ENVIRONMENT_URL",
              "CRAFT_AI_SDK_TOKEN", "CRAFT_AI_CONTROL_URL", "GRISTMILL_CONTROL_URL",
              "GRISTMILL_MAX_RETRIES")


@pytest.fixture
def export(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    for var in _VARIABLES:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    runner = CliRunner()

    def run(*args: str, code: int):
        # catch_exceptions=False: an exception escaping the command fails the test
        result = runner.invoke(app, ["rollout", "export", *args], catch_exceptions=False)
        assert result.exit_code == code, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        if code == 1:  # one "Error: ..." line, not rich's boxed exception
            assert result.stderr.startswith("Error: ") and "│" not in result.stderr
        return result

    return run


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unknown_deployment_prints_the_api_error(
    export, gristmill_env: GristmillEnv, monkeypatch: pytest.MonkeyPatch, unique: str
) -> None:
    monkeypatch.setenv("GRISTMILL_ENVIRONMENT_URL", gristmill_env.url)
    monkeypatch.setenv("GRISTMILL_SDK_TOKEN", gristmill_env.sdk_token)
    result = export(f"nope-{unique}", "exports/x.parquet", code=1)
    assert result.stderr.startswith("Error: [404 ")
    assert f"nope-{unique}" in result.stderr


def test_an_unreachable_platform_prints_the_connection_error(
    export, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRISTMILL_ENVIRONMENT_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("GRISTMILL_SDK_TOKEN", "gm_x")
    monkeypatch.setenv("GRISTMILL_MAX_RETRIES", "0")
    result = export("scorer", "x.parquet", code=1)
    assert result.stderr.startswith("Error: Could not reach the platform")


def test_a_missing_token_says_what_to_set(export, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRISTMILL_ENVIRONMENT_URL", "http://127.0.0.1:1")
    result = export("scorer", "x.parquet", code=1)
    assert "GRISTMILL_SDK_TOKEN" in result.stderr
    assert "To configure the CLI" in result.stderr


def test_a_bad_date_is_a_usage_error(export) -> None:
    result = export("scorer", "x.parquet", "--start", "yesterday", code=2)
    assert "ISO 8601" in result.stderr
