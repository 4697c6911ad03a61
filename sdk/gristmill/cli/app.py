from __future__ import annotations

import typer

import gristmill
from gristmill.cli import api_cmds, backup_cmds, platform_cmds

app = typer.Typer(
    name="gristmill",
    help="Gristmill: turn Python functions into pipelines, run and deploy them.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold tokens
)
app.command("up")(platform_cmds.up)
app.command("serve")(platform_cmds.serve_cmd)
app.add_typer(platform_cmds.db_app, name="db")
app.add_typer(platform_cmds.users_app, name="users")
app.add_typer(platform_cmds.token_app, name="token")
# daily work, through the HTTP API of the environment GRISTMILL_ENVIRONMENT_URL points at
app.add_typer(api_cmds.steps_app, name="steps")
app.add_typer(api_cmds.pipelines_app, name="pipelines")
app.add_typer(api_cmds.deployments_app, name="deployments")
app.add_typer(api_cmds.executions_app, name="executions")
app.add_typer(api_cmds.env_app, name="env")
app.add_typer(api_cmds.datastore_app, name="datastore")
app.command("backup")(backup_cmds.backup)
app.command("restore")(backup_cmds.restore)


@app.command()
def version() -> None:
    """Print the SDK version."""
    typer.echo(gristmill.__version__)
