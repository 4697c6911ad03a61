"""Commands that run or administer an environment on this machine. They need the
control service (the ``platform`` extra), imported only when used so the
SDK alone stays light."""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from gristmill.cli.durations import parse_duration
from gristmill.service_requirements import service_python_problem

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")

DataDir = Annotated[
    Path | None,
    # the defaults as show_default strings: a "[default: ...]" in the help text would be
    # taken for Rich markup and vanish
    typer.Option("--data-dir", help="Where the environment keeps its data",
                 show_default="~/.gristmill", envvar="GRISTMILL_DATA_DIR", show_envvar=True),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="SQLite or PostgreSQL URL",
                 show_default="SQLite in data dir", envvar="GRISTMILL_DATABASE_URL",
                 show_envvar=False),
]

# No fixed default here: without the option, the control service's settings read
# GRISTMILL_HOST / GRISTMILL_PORT (the container image sets them), else their own
# defaults (docs/configuration.md).
Host = Annotated[
    str | None,
    typer.Option("--host", help="Address to listen on", show_default="127.0.0.1",
                 envvar="GRISTMILL_HOST", show_envvar=True),
]
Port = Annotated[
    int | None,
    typer.Option("--port", help="Port to listen on", show_default="8765",
                 envvar="GRISTMILL_PORT", show_envvar=True),
]


def require_service() -> None:
    """The commands that run or administer an environment need the control service's
    package and its dependencies, on a Python it runs on: said plainly, with exit code
    2, not with an import's traceback."""
    problem = service_python_problem()
    if problem is None:
        try:
            import gristmill_platform.settings  # noqa: F401  (pydantic-settings among others)
        except ImportError as exc:
            missing = f" ({exc.name} is missing)" if exc.name else ""
            problem = ("The Gristmill control service is not installed" + missing + ". "
                       "Install it from the clone with: pip install '.[platform]'")
    if problem is not None:
        err_console.print(escape(problem), style="red")
        raise typer.Exit(2)


def _settings(**values: Any) -> Any:
    """For the commands above, each of which calls require_service first."""
    from gristmill_platform.settings import Settings

    return Settings(**{k: v for k, v in values.items() if v is not None})


def _admin_settings(data_dir: Path | None, database_url: str | None) -> Any:
    """Settings for a command that administers a data directory. Without --data-dir (or
    GRISTMILL_DATA_DIR) nor a database URL, the default directory must already hold an
    environment: a typo or a forgotten option must not silently create an empty one."""
    settings = _settings(data_dir=data_dir, database_url=database_url)
    if data_dir is None and settings.database_url is None \
            and not settings.data_dir.expanduser().exists():
        err_console.print(
            f"[red]Error:[/red] no environment in {settings.data_dir} (nothing was created). "
            "Pass the data directory of your environment with --data-dir DIR (or set "
            "GRISTMILL_DATA_DIR), or start one there with `gristmill up`.")
        raise typer.Exit(1)
    return settings


def _run(coro: Coroutine[Any, Any, T]) -> T:
    from gristmill_platform.errors import AppError

    try:
        return asyncio.run(coro)
    except AppError as exc:
        err_console.print(f"[red]Error:[/red] {exc.message}")
        raise typer.Exit(1) from None


def _print_credentials(environment_url: str, token: str, title: str) -> None:
    from gristmill_platform.bootstrap import export_lines

    console.print(Panel(
        f"Environment URL: [bold]{environment_url}[/bold]\n"
        "Copy the lines below into your shell to use the SDK.\n"
        "The token is shown only once: keep it secret.",
        title=title, expand=False,
    ))
    # plain output, never wrapped, so the lines copy and paste as they are
    typer.echo("\n".join(export_lines(environment_url, token)))


def up(
    data_dir: DataDir = None,
    host: Host = None,
    port: Port = None,
    database_url: DatabaseUrl = None,
    public_url: Annotated[str | None, typer.Option(help="URL users reach it at")] = None,
) -> None:
    """Start an embedded environment on this machine (SQLite, local data store, local
    workers). The first start creates the admin user and prints its SDK token."""
    require_service()
    from gristmill_platform.bootstrap import prepare_environment
    from gristmill_platform.server import serve
    from gristmill_platform.settings import resolve_settings

    settings = resolve_settings(_settings(data_dir=data_dir, host=host, port=port,
                                          database_url=database_url, public_url=public_url))
    with console.status("Preparing the environment (migrations, admin user)..."):
        boot = prepare_environment(settings)
    if boot.sdk_token:
        _print_credentials(boot.environment_url, boot.sdk_token,
                           "Gristmill environment created")
        console.print(f"These lines are also saved (mode 600) in {boot.credentials_file}")
    else:
        console.print(
            f"Gristmill environment at [bold]{boot.environment_url}[/bold] "
            f"(data in {settings.data_dir}).\n"
            f"Need an SDK token? [bold]{_token_create_command(settings, database_url)}[/bold]",
            soft_wrap=True,  # one line, to copy and paste as it is
        )
    # the web console: sign in there with the SDK token
    console.print(f"Web console: [bold]{boot.environment_url}/[/bold] (sign in with an SDK "
                  "token)")
    console.print("Press Ctrl+C to stop.")
    serve(settings)


def _token_create_command(settings: Any, database_url: str | None) -> str:
    """The command that mints a token for this very environment, whatever directory,
    database and user it was started with."""
    from gristmill_platform.settings import default_data_dir

    command = "gristmill token create"
    if settings.data_dir != default_data_dir().expanduser().resolve():
        command += f" --data-dir {shlex.quote(str(settings.data_dir))}"
    if database_url:
        # the URL may hold a password: name the variable rather than print it
        command += ' --database-url "$GRISTMILL_DATABASE_URL"'
    return command


def serve_cmd(
    data_dir: DataDir = None,
    host: Host = None,
    port: Port = None,
    database_url: DatabaseUrl = None,
    migrate_on_start: Annotated[bool, typer.Option(
        "--migrate/--no-migrate", envvar="GRISTMILL_MIGRATE_ON_START",
        help="Apply the schema migrations before serving. With several replicas, turn it off "
             "and run `gristmill db upgrade` once per upgrade (a Kubernetes Job) instead.",
    )] = True,
) -> None:
    """Run the control service (for containers: prints no credentials)."""
    require_service()
    from gristmill_platform.db import migrate
    from gristmill_platform.server import serve
    from gristmill_platform.settings import resolve_settings

    settings = resolve_settings(_settings(data_dir=data_dir, host=host, port=port,
                                          database_url=database_url))
    assert settings.database_url
    if migrate_on_start:
        migrate.upgrade(settings.database_url)
    serve(settings)


db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
db_app.callback()(require_service)


@db_app.command("upgrade")
def db_upgrade(
    data_dir: DataDir = None, database_url: DatabaseUrl = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list the migrations that "
                                                            "would be applied")] = False,
) -> None:
    """Apply the schema migrations."""
    from gristmill_platform.db import migrate
    from gristmill_platform.settings import resolve_settings

    settings = resolve_settings(_settings(data_dir=data_dir, database_url=database_url))
    assert settings.database_url
    if dry_run:
        steps = migrate.pending(settings.database_url)
        current = migrate.current_revision(settings.database_url)
        where = f"Database at revision {current}" if current else "Empty database"
        if not steps:
            console.print(f"{where}: up to date, nothing to apply.")
            return
        console.print(f"{where}: {len(steps)} migrations would be applied:")
        for step in steps:
            # plain text, one per line: scripts and reviewers read it
            typer.echo(f"  {step.revision}  {step.description}")
        return
    migrate.upgrade(settings.database_url)
    console.print("Database schema is up to date.")


users_app = typer.Typer(help="Manage users.", no_args_is_help=True)
users_app.callback()(require_service)


@users_app.command("create")
def users_create(
    name: str, email: str,
    admin: Annotated[bool, typer.Option("--admin", help="Same as --role admin")] = False,
    role: Annotated[str, typer.Option(
        help="admin, member (reads all, changes what they own) or viewer (reads only)")
    ] = "member",
    data_dir: DataDir = None, database_url: DatabaseUrl = None,
) -> None:
    """Create a user (then give them a token with `gristmill token create --user EMAIL`)."""
    from gristmill_platform.admin import AdminConsole

    if role not in ("admin", "member", "viewer"):
        raise typer.BadParameter("--role must be admin, member or viewer")

    async def go() -> Any:
        async with AdminConsole(_admin_settings(data_dir, database_url)) as c:
            return await c.create_user(name, email, is_admin=admin or role == "admin",
                                       is_viewer=role == "viewer" and not admin)

    user = _run(go())
    console.print(f"Created {_role(user)} {user.email} (id {user.id}).")


def _role(user: Any) -> str:
    return "admin" if user.is_admin else "viewer" if user.is_viewer else "member"


@users_app.command("list")
def users_list(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """List users."""
    from gristmill_platform.admin import AdminConsole

    async def go() -> Any:
        async with AdminConsole(_admin_settings(data_dir, database_url)) as c:
            return await c.list_users()

    table = Table("id", "name", "email", "role", "created")
    for user in _run(go()):
        table.add_row(user.id, user.name, user.email, _role(user),
                      user.created_at.strftime("%Y-%m-%d %H:%M"))
    console.print(table)


@users_app.command("delete")
def users_delete(
    user: str,
    transfer_to: Annotated[str | None, typer.Option(
        "--transfer-to", help="Hand everything the user owns (deployments, pipelines, steps, "
        "executions) to this user (email or id); needed when they own deployments")] = None,
    data_dir: DataDir = None, database_url: DatabaseUrl = None,
) -> None:
    """Delete a user (by id or email) and their tokens."""
    from gristmill_platform.admin import AdminConsole

    async def go() -> Any:
        async with AdminConsole(_admin_settings(data_dir, database_url)) as c:
            return await c.delete_user(user, transfer_to=transfer_to)

    deleted = _run(go())
    console.print(f"Deleted user {deleted.user.email}.")
    if deleted.transferred_to is not None and deleted.owned.anything:
        owned = deleted.owned
        console.print(f"{deleted.transferred_to.email} now owns their "
                      f"{len(owned.deployments)} deployment(s), {owned.pipelines} pipeline(s), "
                      f"{owned.steps} step(s) and {owned.executions} execution(s).")


token_app = typer.Typer(help="Manage SDK tokens.", no_args_is_help=True)
token_app.callback()(require_service)


@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Option(help="Owner, by email or id")] = "admin@localhost",
    name: Annotated[str, typer.Option(help="A label to recognise it")] = "",
    expires_in: Annotated[str | None, typer.Option(help="Lifetime, e.g. 90d, 12h")] = None,
    data_dir: DataDir = None, database_url: DatabaseUrl = None,
) -> None:
    """Create an SDK token; it is printed once and stored only as a hash."""
    from gristmill_platform.admin import AdminConsole

    try:
        lifetime: timedelta | None = parse_duration(expires_in) if expires_in else None
    except ValueError as exc:
        err_console.print(f"[red]Error:[/red] {exc}")
        raise typer.Exit(2) from None
    settings = _admin_settings(data_dir, database_url)

    async def go() -> Any:
        async with AdminConsole(settings) as c:
            return c.environment_url, await c.create_token(
                user, name=name, expires_in=lifetime)

    environment_url, created = _run(go())
    _print_credentials(environment_url, created.plaintext, f"SDK token {created.token.id}")


@token_app.command("list")
def token_list(
    user: Annotated[str | None, typer.Option(help="Only this user's (email or id)")] = None,
    data_dir: DataDir = None, database_url: DatabaseUrl = None,
) -> None:
    """List SDK tokens (never their secrets)."""
    from gristmill_platform.admin import AdminConsole

    async def go() -> Any:
        async with AdminConsole(_admin_settings(data_dir, database_url)) as c:
            return await c.list_tokens(user)

    table = Table("id", "user", "name", "created", "expires", "last used", "status")

    def when(value: Any) -> str:
        return value.strftime("%Y-%m-%d %H:%M") if value else "-"

    for token, owner in _run(go()):
        table.add_row(token.id, owner.email, token.name, when(token.created_at),
                      when(token.expires_at), when(token.last_used_at),
                      "revoked" if token.revoked_at else "active")
    console.print(table)


@token_app.command("revoke")
def token_revoke(token_id: str, data_dir: DataDir = None,
                 database_url: DatabaseUrl = None) -> None:
    """Revoke an SDK token: it stops working at once, with its access tokens."""
    from gristmill_platform.admin import AdminConsole

    async def go() -> Any:
        async with AdminConsole(_admin_settings(data_dir, database_url)) as c:
            return await c.revoke_token(token_id)

    _run(go())
    console.print(f"Revoked SDK token {token_id}.")
