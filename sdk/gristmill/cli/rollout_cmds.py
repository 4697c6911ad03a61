"""`gristmill rollout ...`: safe-rollout commands (docs/rollout.md), on the environment of
GRISTMILL_ENVIRONMENT_URL / GRISTMILL_SDK_TOKEN, as the SDK."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

# Only the export is a command; traffic rules and validations are set with the SDK or the
# REST API (docs/rollout.md).
app = typer.Typer(help="Safe rollout: export (a deployment's executions, to the data store)."
                       "\n\nTraffic rules and validations are set with the SDK or the REST "
                       "API (docs/rollout.md).",
                  no_args_is_help=True)


def _when(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 date and time") from None


@app.command("export")
def export(
    deployment: Annotated[str, typer.Argument(help="The deployment's name.")],
    datastore_path: Annotated[str, typer.Argument(help="Where in the data store.")],
    start: Annotated[str | None, typer.Option(help="Created at or after (ISO 8601).")] = None,
    end: Annotated[str | None, typer.Option(help="Created before (ISO 8601).")] = None,
    format: Annotated[str, typer.Option("--format", help="parquet or jsonl.")] = "parquet",
) -> None:
    """Export one row per execution of a deployment to the data store."""
    from gristmill.cli.connection import connected

    since, until = _when(start), _when(end)  # bad dates before any connection
    with connected() as client:
        result = client.export_deployment_executions(
            deployment, datastore_path, start=since, end=until, format=format)
    typer.echo(f"{result['rows']} rows written to {result['path']} ({result['format']})")
