"""`gristmill up` and `gristmill serve` listen where GRISTMILL_HOST / GRISTMILL_PORT say
(the control-service image sets them), unless --host / --port are given, and on the
settings' defaults otherwise (docs/configuration.md). Nothing is served here: the settings
handed to the server are captured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gristmill.cli.app import app

runner = CliRunner()


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The settings each command would serve with."""
    from gristmill_platform import bootstrap, server
    from gristmill_platform.db import migrate

    captured: list[Any] = []
    monkeypatch.setattr(server, "serve", captured.append)
    monkeypatch.setattr(migrate, "upgrade", lambda url: None)
    monkeypatch.setattr(bootstrap, "prepare_environment", lambda settings: bootstrap.Bootstrap(
        environment_url=settings.environment_url, admin_email=None, sdk_token=None,
        credentials_file=None))
    for name in ("GRISTMILL_HOST", "GRISTMILL_PORT", "GRISTMILL_PUBLIC_URL",
                 "GRISTMILL_DATABASE_URL", "GRISTMILL_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    return captured


def _invoke(command: str, data_dir: Path, *options: str) -> None:
    args = [command, "--data-dir", str(data_dir), *options]
    if command == "serve":
        args.append("--no-migrate")
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("command", ["up", "serve"])
def test_the_environment_sets_the_listen_address(command, served, tmp_path,
                                                 monkeypatch) -> None:
    monkeypatch.setenv("GRISTMILL_HOST", "0.0.0.0")
    monkeypatch.setenv("GRISTMILL_PORT", "8080")
    _invoke(command, tmp_path / "env")
    (settings,) = served
    assert (settings.host, settings.port) == ("0.0.0.0", 8080)
    assert settings.environment_url == "http://127.0.0.1:8080"


@pytest.mark.parametrize("command", ["up", "serve"])
def test_the_options_override_the_environment(command, served, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GRISTMILL_HOST", "0.0.0.0")
    monkeypatch.setenv("GRISTMILL_PORT", "8080")
    _invoke(command, tmp_path / "env", "--host", "127.0.0.2", "--port", "9123")
    (settings,) = served
    assert (settings.host, settings.port) == ("127.0.0.2", 9123)


@pytest.mark.parametrize("command", ["up", "serve"])
def test_without_either_the_settings_defaults_apply(command, served, tmp_path) -> None:
    _invoke(command, tmp_path / "env")
    (settings,) = served
    assert (settings.host, settings.port) == ("127.0.0.1", 8765)


@pytest.mark.parametrize("command", ["up", "serve"])
def test_the_help_tells_the_defaults_and_the_variables(command) -> None:
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for shown in ("GRISTMILL_HOST", "GRISTMILL_PORT", "127.0.0.1", "8765",
                  "GRISTMILL_DATA_DIR", "~/.gristmill"):
        assert shown in result.output, (shown, result.output)
