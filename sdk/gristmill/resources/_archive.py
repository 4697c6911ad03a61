"""The ``step_file`` archive of a step created from a local folder (contract §2.1).

A gzip tar, built in memory, of the entries of ``included_folders`` (default ``["/"]``,
the whole folder) plus ``requirements_path`` plus ``function_path``, with member names
relative to the folder: the same members craft-ai-sdk sends (duplicates included, and
symlinks stored as symlinks). Unlike craft-ai-sdk, the 5 MB limit is checked here, before
anything is compressed or uploaded, with the largest files named.
"""

from __future__ import annotations

import io
import os
import posixpath
import stat
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from gristmill.errors import StepCodeError

# The platform's limit: the files of the archive, each name counted once.
MAX_CODE_BYTES = 5 * 1024 * 1024
_LARGEST_SHOWN = 5


def archive_entries(wire_config: Mapping[str, Any], function_path: str | None) -> list[str]:
    """Paths to archive, relative to the local folder, leading ``/`` removed."""
    included = wire_config.get("included_folders")
    # NULL (explicitly no included folders) would leave the step without its code:
    # send the whole folder, as when the key is absent.
    entries: list[Any] = list(included) if included else ["/"]
    entries.append(wire_config.get("requirements_path"))
    entries.append(function_path)
    return [str(entry).lstrip("/") for entry in entries if entry]


def build_step_archive(
    local_folder: str | os.PathLike[str],
    entries: Iterable[str],
    *,
    limit: int = MAX_CODE_BYTES,
) -> bytes:
    """The ``step_file`` bytes. Raises ``StepCodeError`` for a missing folder or entry,
    an entry outside the folder, or more than ``limit`` bytes of files."""
    root = Path(local_folder).expanduser().absolute()
    if not root.is_dir():
        raise StepCodeError(
            f"container_config['local_folder'] must be an existing folder; {str(root)!r} is not."
        )
    entries = list(entries)
    sizes: dict[str, int] = {}
    for entry in entries:
        _check_inside(entry)
        path = root / entry if entry else root
        if not os.path.lexists(path):
            raise StepCodeError(
                f"{entry!r} does not exist in the local folder {str(root)!r}. Paths in "
                "function_path, requirements_path and included_folders are relative to "
                "local_folder."
            )
        _collect_sizes(path, entry, sizes)
    total = sum(sizes.values())
    if total > limit:
        raise StepCodeError(_too_large_message(total, limit, sizes))

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for entry in entries:
            tar.add(str(root / entry) if entry else str(root), arcname=entry)
    return buffer.getvalue()


def _check_inside(entry: str) -> None:
    normalised = posixpath.normpath(entry.replace("\\", "/")) if entry else "."
    if normalised == ".." or normalised.startswith("../"):
        raise StepCodeError(
            f"{entry!r} points outside the local folder; only files inside it can be sent."
        )


def _collect_sizes(path: Path, arcname: str, sizes: dict[str, int]) -> None:
    """Sizes of the regular files ``tarfile.add`` stores for ``path`` (same walk: no
    symlink followed), keyed by member name."""
    info = os.lstat(path)
    if stat.S_ISREG(info.st_mode):
        sizes[posixpath.normpath(arcname) if arcname else arcname] = info.st_size
    elif stat.S_ISDIR(info.st_mode):
        for child in sorted(os.listdir(path)):
            _collect_sizes(path / child, os.path.join(arcname, child), sizes)


def _too_large_message(total: int, limit: int, sizes: dict[str, int]) -> str:
    largest = sorted(sizes.items(), key=lambda item: item[1], reverse=True)[:_LARGEST_SHOWN]
    listing = "\n".join(f"  {size / 1024 / 1024:8.2f} MB  {name}" for name, size in largest)
    return (
        f"The step's code is {total / 1024 / 1024:.2f} MB ({total:,} bytes); the platform "
        f"accepts at most {limit / 1024 / 1024:.0f} MB ({limit:,} bytes). Nothing was sent.\n"
        f"Largest files:\n{listing}\n"
        "Select what the step needs with container_config['included_folders'] (e.g. "
        "['src', 'requirements.txt']), and put large files such as data or models in the "
        "data store."
    )
