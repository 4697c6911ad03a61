"""`gristmill rollout --help` names the commands it has (export only) and says where
traffic rules and validations are set instead (docs/rollout.md)."""

from __future__ import annotations

from typer.testing import CliRunner

from gristmill.cli.app import app
from gristmill.cli.rollout_cmds import app as rollout_app

runner = CliRunner()


def test_rollout_help_says_what_exists_and_where_the_rest_is() -> None:
    commands = {command.name for command in rollout_app.registered_commands}
    assert commands == {"export"}
    result = runner.invoke(app, ["rollout", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "export" in result.output
    assert "with the SDK or the REST API" in result.output
    assert "docs/rollout.md" in result.output
    # the top-level list does not promise rollout commands that do not exist
    top = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    rollout_line = next(line for line in top.output.splitlines() if " rollout " in line)
    assert "traffic rules" not in rollout_line.lower()
