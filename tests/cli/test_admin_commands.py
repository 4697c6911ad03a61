from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from gristmill.cli.app import app

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path):
    return str(tmp_path / "env")


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_users_and_tokens_lifecycle(data_dir) -> None:
    created = run("users", "create", "Ada Lovelace", "Ada@Example.com", "--data-dir", data_dir)
    assert created.exit_code == 0 and "ada@example.com" in created.stdout
    listed = run("users", "list", "--data-dir", data_dir)
    assert "ada@example.com" in listed.stdout

    token = run("token", "create", "--user", "ada@example.com", "--name", "laptop",
                "--expires-in", "30d", "--data-dir", data_dir)
    assert token.exit_code == 0
    exported = re.search(r"export GRISTMILL_SDK_TOKEN=(\S+)", token.stdout)
    assert exported and exported.group(1).startswith("gm_")
    assert "export CRAFT_AI_CONTROL_URL=" in token.stdout
    token_id = exported.group(1).split("_")[1]

    tokens = run("token", "list", "--data-dir", data_dir)
    assert token_id[:8] in tokens.stdout and "active" in tokens.stdout
    assert exported.group(1).split("_", 2)[2] not in tokens.stdout  # never the secret

    assert run("token", "revoke", token_id, "--data-dir", data_dir).exit_code == 0
    assert "revoked" in run("token", "list", "--data-dir", data_dir).stdout

    assert run("users", "delete", "ada@example.com", "--data-dir", data_dir).exit_code == 0
    assert "ada@example.com" not in run("users", "list", "--data-dir", data_dir).stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("token", "create", "--expires-in", "3x"), "Invalid duration"),
        # beyond the ten years an SDK token may live (3000000d overflowed a date: a crash)
        (("token", "create", "--expires-in", "3000000d"), "at most 3650 days"),
        (("token", "create", "--expires-in", "3651d"), "at most 3650 days"),
        # beyond what a timedelta holds: the duration's own parser overflowed
        (("token", "create", "--expires-in", "99999999999999999999d"), "too long"),
        (("token", "create", "--expires-in", "1000000000w"), "too long"),
        (("token", "create", "--user", "nobody@example.com"), "not found"),
        (("token", "revoke", "0000"), "not found"),
        (("users", "create", "X", "not-an-email"), "Invalid email"),
        (("users", "delete", "nobody@example.com"), "not found"),
    ],
)
def test_bad_input_is_a_clear_error(data_dir, args, message) -> None:
    result = run(*args, "--data-dir", data_dir)
    assert result.exit_code != 0
    assert message in result.stderr


def test_a_token_lifetime_beyond_ten_years_is_refused_creating_nothing(data_dir) -> None:
    run("users", "create", "Ada", "ada@example.com", "--data-dir", data_dir)
    # 3000000 days overflowed the expiry date: an OverflowError out of the command
    for lifetime in ("3000000d", "522w", "3651d"):
        result = run("token", "create", "--user", "ada@example.com", "--expires-in",
                     lifetime, "--data-dir", data_dir)
        assert result.exit_code == 1 and "at most 3650 days" in result.stderr
    assert "ada@example.com" not in run("token", "list", "--data-dir", data_dir).stdout
    assert run("token", "create", "--user", "ada@example.com", "--expires-in", "3650d",
               "--data-dir", data_dir).exit_code == 0


def test_duplicate_user_is_refused(data_dir) -> None:
    run("users", "create", "A", "a@example.com", "--data-dir", data_dir)
    result = run("users", "create", "A again", "a@example.com", "--data-dir", data_dir)
    assert result.exit_code == 1 and "already exists" in result.stderr


def test_roles_and_transfer_options(data_dir) -> None:
    created = run("users", "create", "Vi", "vi@example.com", "--role", "viewer",
                  "--data-dir", data_dir)
    assert created.exit_code == 0 and "Created viewer vi@example.com" in created.stdout
    run("users", "create", "Mo", "mo@example.com", "--data-dir", data_dir)
    listed = run("users", "list", "--data-dir", data_dir).stdout
    assert re.search(r"vi@example\.com\s.*viewer", listed)
    assert re.search(r"mo@example\.com\s.*member", listed)
    bad_role = run("users", "create", "X", "x@example.com", "--role", "owner",
                   "--data-dir", data_dir)
    assert bad_role.exit_code != 0
    # a viewer may not inherit resources; a member owning nothing is deleted at once
    to_viewer = run("users", "delete", "mo@example.com", "--transfer-to", "vi@example.com",
                    "--data-dir", data_dir)
    assert to_viewer.exit_code == 1 and "viewer" in to_viewer.stderr
    assert run("users", "delete", "mo@example.com", "--data-dir", data_dir).exit_code == 0


@pytest.mark.parametrize("args", [("users", "list"), ("token", "list"), ("token", "create"),
                                  ("users", "create", "A", "a@example.com")])
def test_without_data_dir_nothing_is_created_in_home(tmp_path, monkeypatch, args) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("GRISTMILL_DATA_DIR", raising=False)
    monkeypatch.delenv("GRISTMILL_DATABASE_URL", raising=False)
    result = run(*args)
    assert result.exit_code == 1
    assert "no environment in" in result.stderr and "--data-dir" in result.stderr
    assert not (tmp_path / ".gristmill").exists()


def test_token_create_prints_the_url_the_environment_was_started_at(data_dir) -> None:
    from pathlib import Path

    from gristmill_platform.bootstrap import prepare_environment
    from gristmill_platform.settings import Settings, resolve_settings

    prepare_environment(resolve_settings(Settings(data_dir=Path(data_dir), port=9321)))
    token = run("token", "create", "--data-dir", data_dir)
    assert token.exit_code == 0
    assert "export GRISTMILL_ENVIRONMENT_URL=http://127.0.0.1:9321" in token.stdout
    assert "8765" not in token.stdout
