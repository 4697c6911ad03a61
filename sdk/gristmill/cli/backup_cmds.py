"""`gristmill backup` and `gristmill restore`: an embedded environment's data (database,
data store, step code and environments, signing key) to one archive and back
(docs/operations.md#backup-and-restore)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gristmill.cli.platform_cmds import (
    DatabaseUrl,
    DataDir,
    _settings,
    console,
    err_console,
    require_service,
)


def backup(
    to: Annotated[Path, typer.Option("--to", help="Archive to write (.tar, or .tar.gz to "
                                                  "compress)")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Back up an embedded environment while it runs (a consistent snapshot)."""
    require_service()
    from gristmill_platform.backup import BackupError, create_backup

    settings = _settings(data_dir=data_dir, database_url=database_url)
    try:
        with console.status("Backing up..."):
            summary = create_backup(settings, to)
    except BackupError as exc:
        err_console.print(f"[red]Error:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(f"Backed up {summary.files} files ({summary.bytes} bytes, schema "
                  f"{summary.revision}) to {summary.path}.\n"
                  "It holds the signing key and token hashes: store it like a secret.")


def restore(
    archive: Annotated[Path, typer.Argument(help="A backup made by `gristmill backup`")],
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Directory to restore into "
                                                              "(new or empty)")],
    force: Annotated[bool, typer.Option("--force", help="Replace the environment in a "
                                                        "non-empty directory")] = False,
) -> None:
    """Restore a backup into a data directory; every checksum is verified first."""
    require_service()
    from gristmill_platform.backup import BackupError, restore_backup

    try:
        with console.status("Restoring..."):
            manifest = restore_backup(archive, data_dir, force=force)
    except BackupError as exc:
        err_console.print(f"[red]Error:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(f"Restored the backup of {manifest['created_at']} ({len(manifest['files'])} "
                  f"files) into {data_dir}.\n"
                  f"Start it with: gristmill up --data-dir {data_dir}")
