"""Daily commands on an environment through its HTTP API: steps, pipelines, deployments,
executions, environment variables and the data store."""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from gristmill.cli.connection import connected
from gristmill.cli.output import Output, OutputFormat, fail, print_done, print_record, print_rows

steps_app = typer.Typer(help="Steps: list, get, delete.", no_args_is_help=True)
pipelines_app = typer.Typer(help="Pipelines: list, get, delete, run.", no_args_is_help=True)
deployments_app = typer.Typer(help="Deployments: list, get, delete, rotate-token.",
                              no_args_is_help=True)
executions_app = typer.Typer(help="Executions: list, get, delete, logs.", no_args_is_help=True)
env_app = typer.Typer(help="Environment variables: list, get, set, delete.",
                      no_args_is_help=True)
datastore_app = typer.Typer(help="Data store: ls, get, upload, download, rm.",
                            no_args_is_help=True)

TERMINAL_STATUSES = frozenset({"Succeeded", "Failed", "Cancelled"})
Force = Annotated[bool, typer.Option("--force", help="Delete what depends on it too")]


def _found(value: dict[str, Any] | None, what: str) -> dict[str, Any]:
    if value is None:
        raise fail(f"{what} not found.")
    return value


# -- steps --

@steps_app.command("list")
def steps_list(output: Output = OutputFormat.table) -> None:
    """List steps."""
    with connected() as client:
        print_rows(client.list_steps(), ("step_name", "status", "created_at", "updated_at"),
                   output)


@steps_app.command("get")
def steps_get(name: str, output: Output = OutputFormat.table) -> None:
    """Show a step."""
    with connected() as client:
        print_record(_found(client.get_step(name), f"Step {name!r}"), output)


@steps_app.command("delete")
def steps_delete(name: str, force: Force = False, output: Output = OutputFormat.table) -> None:
    """Delete a step (with --force, also the pipelines and deployments using it)."""
    with connected() as client:
        result = client.delete_step(name, force_dependents_deletion=force)
    print_done(f"Deleted step {name}.", output, result)


# -- pipelines --

@pipelines_app.command("list")
def pipelines_list(output: Output = OutputFormat.table) -> None:
    """List pipelines."""
    with connected() as client:
        print_rows(client.list_pipelines(),
                   ("pipeline_name", "status", "created_at", "updated_at"), output)


@pipelines_app.command("get")
def pipelines_get(name: str, output: Output = OutputFormat.table) -> None:
    """Show a pipeline."""
    with connected() as client:
        print_record(_found(client.get_pipeline(name), f"Pipeline {name!r}"), output)


@pipelines_app.command("delete")
def pipelines_delete(name: str, force: Force = False,
                     output: Output = OutputFormat.table) -> None:
    """Delete a pipeline (with --force, also its deployments)."""
    with connected() as client:
        result = client.delete_pipeline(name, force_deployments_deletion=force)
    print_done(f"Deleted pipeline {name}.", output, result)


def parse_inputs(pairs: list[str], inputs_file: Path | None) -> dict[str, Any]:
    """``--inputs-file`` (a JSON object) overridden by ``--input name=value`` pairs; a
    value is read as JSON when it parses (``n=3``, ``flag=true``, ``xs=[1,2]``), else kept
    as text (``name=Ada``). A file input takes a local path."""
    inputs: dict[str, Any] = {}
    if inputs_file is not None:
        try:
            loaded = json.loads(inputs_file.read_text())
        except (OSError, ValueError) as exc:
            raise fail(f"Cannot read --inputs-file {inputs_file}: {exc}", 2) from None
        if not isinstance(loaded, dict):
            raise fail(f"--inputs-file {inputs_file} must hold a JSON object.", 2)
        inputs.update(loaded)
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise fail(f"--input {pair!r} is not NAME=VALUE.", 2)
        try:
            inputs[name] = json.loads(raw)
        except ValueError:
            inputs[name] = raw
    return inputs


@pipelines_app.command("run")
def pipelines_run(
    name: str,
    input_pairs: Annotated[list[str] | None, typer.Option(
        "--input", "-i", help="NAME=VALUE (JSON when it parses, else text); repeatable")] = None,
    inputs_file: Annotated[Path | None, typer.Option(
        "--inputs-file", help="A JSON object of inputs")] = None,
    output: Output = OutputFormat.table,
) -> None:
    """Run a pipeline, wait for it and print its execution id and outputs."""
    inputs = parse_inputs(input_pairs or [], inputs_file)
    with connected() as client:
        result = client.run_pipeline(name, inputs)
    if output is OutputFormat.json:
        print_done("", output, result)
        return
    typer.echo(f"execution_id\t{result.get('execution_id')}")
    for key, value in (result.get("outputs") or {}).items():
        print_record({f"output.{key}": value}, output)


# -- deployments --

@deployments_app.command("list")
def deployments_list(output: Output = OutputFormat.table) -> None:
    """List deployments."""
    with connected() as client:
        print_rows(client.list_deployments(),
                   ("name", "pipeline_name", "execution_rule", "mode", "status", "is_enabled",
                    "created_at"), output)


@deployments_app.command("get")
def deployments_get(name: str, output: Output = OutputFormat.table) -> None:
    """Show a deployment."""
    with connected() as client:
        print_record(client.get_deployment(name), output)


@deployments_app.command("delete")
def deployments_delete(name: str, output: Output = OutputFormat.table) -> None:
    """Delete a deployment and its executions."""
    with connected() as client:
        result = client.delete_deployment(name)
    print_done(f"Deleted deployment {name}.", output, result)


@deployments_app.command("rotate-token")
def deployments_rotate_token(name: str, output: Output = OutputFormat.table) -> None:
    """Give an endpoint a new token; the previous one stops working at once."""
    with connected() as client:
        result = client.generate_new_endpoint_token(name)
    if output is OutputFormat.json:
        print_done("", output, result)
    else:
        typer.echo(result.get("endpoint_token"))


# -- executions --

@executions_app.command("list")
def executions_list(
    pipeline: Annotated[str | None, typer.Option(
        "--pipeline", "-p", help="Only this pipeline's",
        show_default="every pipeline's")] = None,
    output: Output = OutputFormat.table,
) -> None:
    """List executions, newest first."""
    with connected() as client:
        names = [pipeline] if pipeline else [p["pipeline_name"] for p in client.list_pipelines()]
        rows = [row for n in names for row in client.list_pipeline_executions(n)]
    rows.sort(key=lambda row: str(row.get("created_at") or ""), reverse=True)
    print_rows(rows, ("execution_id", "pipeline_name", "status", "deployment_name",
                      "created_at", "end_date"), output)


@executions_app.command("get")
def executions_get(execution_id: str, output: Output = OutputFormat.table) -> None:
    """Show an execution, with its inputs and outputs."""
    with connected() as client:
        print_record(client.get_pipeline_execution(execution_id), output)


@executions_app.command("delete")
def executions_delete(execution_id: str, output: Output = OutputFormat.table) -> None:
    """Delete an execution."""
    with connected() as client:
        result = client.delete_pipeline_execution(execution_id)
    print_done(f"Deleted execution {execution_id}.", output, result)


def _log_key(line: dict[str, Any]) -> tuple[str, str]:
    return str(line.get("timestamp")), str(line.get("message"))


def follow_logs(fetch: Callable[[datetime | None], list[dict[str, Any]]],
                finished: Callable[[], bool], emit: Callable[[dict[str, Any]], None],
                poll_s: float) -> None:
    """Print lines as they come until the execution ends. Each poll asks from the last
    line's time (inclusive), so a line is fetched again while it shares that time: within
    a batch, the n-th copy of a (time, message) is new only if fewer were printed."""
    printed: Counter[tuple[str, str]] = Counter()
    since: datetime | None = None
    while True:
        done = finished()  # read before fetching: lines written before the end are fetched
        batch: Counter[tuple[str, str]] = Counter()
        for line in fetch(since):
            key = _log_key(line)
            batch[key] += 1
            if batch[key] <= printed[key]:
                continue
            printed[key] += 1
            emit(line)
            stamp = line.get("timestamp")
            if isinstance(stamp, str):
                with contextlib.suppress(ValueError):  # an odd stamp: ask from the last one
                    since = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        if done:
            return
        time.sleep(poll_s)


@executions_app.command("logs")
def executions_logs(
    execution_id: str,
    follow: Annotated[bool, typer.Option("--follow", "-f",
                                         help="Keep printing until the execution ends")] = False,
    output: Output = OutputFormat.table,
) -> None:
    """Print an execution's log lines (JSON: one object per line)."""

    def emit(line: dict[str, Any]) -> None:
        if output is OutputFormat.json:
            typer.echo(json.dumps(line, ensure_ascii=False))
        else:
            typer.echo(f"{line.get('timestamp')}  {line.get('message')}")

    with connected() as client:
        if not follow:
            for line in client.get_pipeline_execution_logs(execution_id):
                emit(line)
            return
        follow_logs(
            lambda since: client.get_pipeline_execution_logs(execution_id, from_datetime=since),
            lambda: client.get_pipeline_execution(execution_id).get("status")
            in TERMINAL_STATUSES,
            emit, poll_s=1.0)


# -- environment variables --

@env_app.command("list")
def env_list(output: Output = OutputFormat.table) -> None:
    """List environment variables."""
    with connected() as client:
        print_rows(client.list_environment_variables(), ("name", "value"), output)


@env_app.command("get")
def env_get(name: str, output: Output = OutputFormat.table) -> None:
    """Print one environment variable's value."""
    with connected() as client:
        found = [v for v in client.list_environment_variables() if v.get("name") == name]
    if not found:
        raise fail(f"Environment variable {name!r} not found.")
    if output is OutputFormat.json:
        print_done("", output, found[0])
    else:
        typer.echo(found[0].get("value"))


@env_app.command("set")
def env_set(name: str, value: str, output: Output = OutputFormat.table) -> None:
    """Create or update an environment variable."""
    with connected() as client:
        client.create_or_update_environment_variable(name, value)
    print_done(f"Set {name}.", output, {"name": name, "value": value})


@env_app.command("delete")
def env_delete(name: str, output: Output = OutputFormat.table) -> None:
    """Delete an environment variable."""
    with connected() as client:
        result = client.delete_environment_variable(name)
    print_done(f"Deleted {name}.", output, result)


# -- data store --

@datastore_app.command("ls")
def datastore_ls(prefix: Annotated[str, typer.Argument(help="Only paths starting so")] = "",
                 output: Output = OutputFormat.table) -> None:
    """List objects (path, size in bytes, last modified)."""
    with connected() as client:
        rows = [o for o in client.iter_data_store_objects()
                if str(o.get("path", "")).startswith(prefix)]
    print_rows(rows, ("path", "size", "last_modified"), output)


datastore_app.command("list", hidden=True)(datastore_ls)


@datastore_app.command("get")
def datastore_get(path: str, output: Output = OutputFormat.table) -> None:
    """Show an object's information (size, last modified)."""
    with connected() as client:
        print_record(client.get_data_store_object_information(path), output)


@datastore_app.command("upload")
def datastore_upload(local: Path, path: str, output: Output = OutputFormat.table) -> None:
    """Upload a local file to PATH in the data store."""
    if not local.is_file():
        raise fail(f"{local} is not a file.", 2)
    with connected() as client:
        client.upload_data_store_object(str(local), path)
    print_done(f"Uploaded {local} to {path}.", output, {"path": path,
                                                         "size": local.stat().st_size})


@datastore_app.command("download")
def datastore_download(path: str, local: Path, output: Output = OutputFormat.table) -> None:
    """Download PATH from the data store to a local file."""
    with connected() as client:
        client.download_data_store_object(path, str(local))
    print_done(f"Downloaded {path} to {local}.", output,
               {"path": path, "file": str(local), "size": local.stat().st_size})


@datastore_app.command("rm")
def datastore_rm(path: str, output: Output = OutputFormat.table) -> None:
    """Delete an object."""
    with connected() as client:
        result = client.delete_data_store_object(path)
    print_done(f"Deleted {path}.", output, result)


datastore_app.command("delete", hidden=True)(datastore_rm)
