"""Backup and restore of an embedded environment (SQLite and the local data store) while
it runs: `gristmill backup --to FILE` and `gristmill restore FILE --data-dir DIR`.

A backup is a tar archive: the database copied with SQLite's online backup API (one
consistent snapshot, taken while the service keeps writing: WAL readers do not block
writers), then the files that snapshot refers to (data-store blobs, step code, built
Python environments) and the signing key, then ``MANIFEST.json`` with every file's size
and SHA-256. Files are written once under fresh names and only ever removed after the
row that stops pointing at them commits, so a file the snapshot refers to can vanish only
if it was replaced after the snapshot: the backup then takes a new snapshot.

PostgreSQL and S3 have their own, better tools (pg_dump, bucket versioning); the commands
refuse those environments and point at docs/operations.md."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy.engine import make_url

import gristmill_platform
from gristmill_platform.db.urls import sqlite_file
from gristmill_platform.settings import Settings
from gristmill_platform.steps.environments import READY_MARK

FORMAT = "gristmill-backup"
FORMAT_VERSION = 1
MANIFEST = "MANIFEST.json"
DATABASE = "gristmill.sqlite3"
SECRET_KEY = "secret.key"  # noqa: S105 (a file name)
CREDENTIALS = "credentials.env"
DOCS = "docs/operations.md#backup-and-restore"
# the data dir's entries a restore writes (and `--force` replaces)
RESTORED = (DATABASE, f"{DATABASE}-wal", f"{DATABASE}-shm", SECRET_KEY, CREDENTIALS,
            "datastore", "steps", "venvs", "workers", "low-latency", "runtime")
SNAPSHOT_ATTEMPTS = 5
CHUNK = 1024 * 1024


class BackupError(Exception):
    """A backup or restore that cannot be made; the message says why and what to do."""


@dataclass(frozen=True)
class BackupSummary:
    path: Path
    files: int
    bytes: int
    revision: str | None


def _refuse_external(settings: Settings) -> None:
    assert settings.database_url
    if make_url(settings.database_url).get_backend_name() != "sqlite":
        raise BackupError(
            "This environment keeps its data in PostgreSQL: back it up with PostgreSQL's "
            "own tools (pg_dump --format=custom, or your provider's snapshots) and the data "
            f"store with its bucket's versioning; see {DOCS}")
    if settings.datastore_backend != "local":
        raise BackupError(
            "This environment keeps its objects in S3: protect them with bucket versioning "
            f"(and replication), and back the database up with its own tools; see {DOCS}")


def _database_path(settings: Settings) -> Path:
    assert settings.database_url
    database = sqlite_file(settings.database_url)
    if database is None:
        raise BackupError("an in-memory database cannot be backed up")
    return Path(database)


def _snapshot_database(source: Path, target: Path) -> None:
    """One consistent copy, taken in a single step of the online backup API."""
    if not source.exists():
        raise BackupError(f"no database at {source}: is this the environment's data dir?")
    with contextlib.closing(sqlite3.connect(source, timeout=30)) as live, \
            contextlib.closing(sqlite3.connect(target)) as copy:
        live.execute("PRAGMA busy_timeout=30000")
        live.backup(copy)
        # the archive holds one self-contained file, not a WAL to replay
        copy.execute("PRAGMA journal_mode=DELETE")
        # an upload in progress cannot be resumed from a backup: its blob is half-written
        tables = {row[0] for row in copy.execute(
            "SELECT name FROM sqlite_master WHERE type='table'")}
        if "datastore_multipart_uploads" in tables:
            copy.execute("DELETE FROM datastore_multipart_parts")
            copy.execute("DELETE FROM datastore_multipart_uploads")
        copy.commit()


@dataclass(frozen=True)
class _Referenced:
    revision: str | None
    blobs: list[str]
    step_ids: list[str]
    environments: list[str]


def _referenced(snapshot: Path) -> _Referenced:
    with contextlib.closing(sqlite3.connect(snapshot)) as db:
        tables = {row[0] for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type='table'")}

        def column(query: str, table: str) -> list[str]:
            return [row[0] for row in db.execute(query) if row[0]] if table in tables else []

        revisions = column("SELECT version_num FROM alembic_version", "alembic_version")
        return _Referenced(
            revision=revisions[0] if revisions else None,
            blobs=column("SELECT blob FROM datastore_objects", "datastore_objects"),
            step_ids=column("SELECT id FROM steps", "steps"),
            environments=sorted(set(column(
                "SELECT environment_key FROM steps WHERE environment_key IS NOT NULL",
                "steps"))),
        )


def _tree(root: Path) -> Iterator[Path]:
    """Every file and symlink under root, in a stable order."""
    for directory, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(directory)
        for name in sorted(filenames):
            yield base / name
        for name in dirnames:
            if (base / name).is_symlink():
                yield base / name


@dataclass(frozen=True)
class _Source:
    """A file to archive: its path on disk and its name in the archive."""
    path: Path
    name: str


def _files(settings: Settings, snapshot: Path) -> tuple[_Referenced, list[_Source]] | None:
    """The files the snapshot refers to; None if one vanished since (take a new one)."""
    assert settings.datastore_root
    refs = _referenced(snapshot)
    data_dir = settings.data_dir
    sources: list[_Source] = []
    blobs = settings.datastore_root / "blobs"
    for blob in refs.blobs:
        path = blobs / blob[:2] / blob
        if not path.is_file():
            return None
        sources.append(_Source(path, f"datastore/blobs/{blob[:2]}/{blob}"))
    for step_id in refs.step_ids:
        # a step whose code never reached the disk (a failed creation) has none to keep
        for path in _tree(data_dir / "steps" / step_id):
            sources.append(_Source(path, path.relative_to(data_dir).as_posix()))
    for key in refs.environments:
        venv = data_dir / "venvs" / key
        # one still building has no mark yet: it is rebuilt from the step after a restore
        if (venv / READY_MARK).is_file():
            for path in _tree(venv):
                sources.append(_Source(path, path.relative_to(data_dir).as_posix()))
    for name in (SECRET_KEY, CREDENTIALS):
        if (data_dir / name).is_file():
            sources.append(_Source(data_dir / name, name))
    return refs, sources


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _open_archive(path: Path, target: Path) -> tarfile.TarFile:
    if target.name.endswith((".gz", ".tgz")):
        return tarfile.open(path, "w:gz")
    return tarfile.open(path, "w")


def create_backup(settings: Settings, target: Path) -> BackupSummary:
    """Snapshot the environment into ``target`` (written to a temporary name first, so
    an interrupted backup never looks like a finished one)."""
    settings = settings.resolve()
    _refuse_external(settings)
    source = _database_path(settings)
    target = target.expanduser().resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gristmill-backup-") as scratch:
        snapshot = Path(scratch) / DATABASE
        partial = target.with_name(f".{target.name}.partial")
        try:
            for _ in range(SNAPSHOT_ATTEMPTS):
                snapshot.unlink(missing_ok=True)
                _snapshot_database(source, snapshot)
                collected = _files(settings, snapshot)
                if collected is None:
                    continue
                refs, sources = collected
                written = _write_archive(settings, partial, target, refs,
                                         [_Source(snapshot, DATABASE), *sources])
                if written is not None:
                    break
            else:
                raise BackupError("the data store kept changing under the backup; try again "
                                  "at a quieter moment")
            entries, total = written
            os.chmod(partial, 0o600)  # it holds the signing key and every token's hash
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
    return BackupSummary(target, len(entries), total, refs.revision)


def _write_archive(settings: Settings, partial: Path, target: Path, refs: _Referenced,
                   sources: list[_Source]) -> tuple[dict[str, dict[str, Any]], int] | None:
    """The archive of one snapshot: (its manifest's entries, their bytes), or None when a
    data store file the snapshot refers to was deleted before it was copied (an object
    overwritten or deleted meanwhile): the snapshot is then stale, and taken again."""
    entries: dict[str, dict[str, Any]] = {}
    total = 0
    with _open_archive(partial, target) as archive:
        for item in sources:
            entry = _add(archive, item)
            if entry is None:
                if item.name.startswith("datastore/"):
                    return None
                # a file under steps/ or venvs/ replaced meanwhile: the snapshot is what
                # counts, and a rebuild restores it
                continue
            entries[item.name] = entry
            total += int(entry.get("size", 0))
        manifest = {
            "format": FORMAT, "version": FORMAT_VERSION,
            "gristmill_version": gristmill_platform.__version__,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "alembic_revision": refs.revision,
            "source_data_dir": str(settings.data_dir),
            "secret_key": "file" if (settings.data_dir / SECRET_KEY).is_file() else "settings",
            "files": entries,
        }
        raw = json.dumps(manifest, indent=1, sort_keys=True).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(raw)
        info.mode = 0o600
        archive.addfile(info, io.BytesIO(raw))
    return entries, total


def _add(archive: tarfile.TarFile, item: _Source) -> dict[str, Any] | None:
    try:
        if item.path.is_symlink():
            link = os.readlink(item.path)
            info = tarfile.TarInfo(item.name)
            info.type = tarfile.SYMTYPE
            info.linkname = link
            archive.addfile(info)
            return {"symlink": link}
        digest = _sha256(item.path)
        info = archive.gettarinfo(str(item.path), arcname=item.name)
        with item.path.open("rb") as handle:
            archive.addfile(info, handle)
        return {"sha256": digest, "size": info.size, "mode": info.mode & 0o777}
    except FileNotFoundError:
        return None


# -- restore ----------------------------------------------------------------------------------


def _safe_name(name: str) -> bool:
    path = PurePosixPath(name)
    return (not path.is_absolute() and ".." not in path.parts and bool(path.parts)
            and path.parts[0] in (*RESTORED, MANIFEST))


def read_manifest(archive: tarfile.TarFile) -> dict[str, Any]:
    try:
        member = archive.getmember(MANIFEST)
    except KeyError:
        raise BackupError("not a Gristmill backup: it has no MANIFEST.json") from None
    handle = archive.extractfile(member)
    if handle is None:
        raise BackupError("the backup's MANIFEST.json is not a file: nothing was restored")
    try:
        manifest = json.loads(handle.read())
    except ValueError:
        raise BackupError("the backup's MANIFEST.json is not valid JSON (damaged or "
                          "edited): nothing was restored") from None
    if not isinstance(manifest, dict):
        raise BackupError("the backup's MANIFEST.json is not a Gristmill manifest")
    if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
        raise BackupError(f"not a Gristmill backup this version can read "
                          f"(format {manifest.get('format')!r} {manifest.get('version')!r})")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
            isinstance(entry, dict) and ("symlink" in entry or "sha256" in entry)
            for entry in files.values()):
        raise BackupError("the backup's manifest lists no files, or lists them without "
                          "their checksums (damaged or edited): nothing was restored")
    return dict(manifest)


def _refuse_through_links(into: Path, target: Path, name: str) -> None:
    """Nothing is written through a link: a link the archive made (an environment's
    bin/python -> the interpreter, legitimately absolute) must not be a folder a later
    entry is written into, nor be overwritten, or a crafted archive writes outside the
    directory it is restored into."""
    if target.is_symlink() or target.exists():
        raise BackupError(f"the archive holds {name!r} twice: refusing to restore it")
    for parent in target.relative_to(into).parents:
        if parent != Path(".") and (into / parent).is_symlink():
            raise BackupError(f"the archive writes {name!r} through the link {parent}: "
                              "refusing to restore it")


def _extract_verified(archive: tarfile.TarFile, manifest: dict[str, Any], into: Path) -> None:
    files: dict[str, dict[str, Any]] = manifest["files"]
    seen = set()
    for member in archive:
        if member.name == MANIFEST:
            continue
        entry = files.get(member.name)
        if entry is None or not _safe_name(member.name):
            raise BackupError(f"the archive holds {member.name!r}, which its manifest does "
                              "not list: refusing to restore it")
        target = into / member.name
        _refuse_through_links(into, target, member.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        if "symlink" in entry:
            # only Python environments link out (bin/python -> the interpreter)
            if not (member.issym() and member.name.startswith("venvs/")
                    and member.linkname == entry["symlink"]):
                raise BackupError(f"unexpected link {member.name!r} in the archive")
            target.symlink_to(member.linkname)
        else:
            if not member.isfile():
                raise BackupError(f"{member.name!r} is not a regular file in the archive")
            handle = archive.extractfile(member)
            assert handle is not None
            digest = hashlib.sha256()
            with target.open("wb") as out:
                while chunk := handle.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != entry["sha256"]:
                raise BackupError(f"checksum mismatch for {member.name}: the backup is "
                                  "damaged, nothing was restored")
            os.chmod(target, int(entry.get("mode", 0o600)))
        seen.add(member.name)
    missing = set(files) - seen
    if missing:
        raise BackupError(f"the backup is incomplete ({len(missing)} files missing, e.g. "
                          f"{sorted(missing)[0]}); nothing was restored")


def _relocate_environments(data_dir: Path, source_data_dir: str) -> None:
    """Python environments point at the runtime site by absolute path (a .pth line)."""
    for pth in (data_dir / "venvs").glob("*/lib/python*/site-packages/gristmill-runtime.pth"):
        text = pth.read_text()
        if text.startswith(source_data_dir):
            pth.write_text(str(data_dir) + text[len(source_data_dir):])


def restore_backup(archive_path: Path, data_dir: Path, *, force: bool = False
                   ) -> dict[str, Any]:
    """Verify every checksum in a scratch directory beside ``data_dir``, then move the
    files in: a damaged archive leaves ``data_dir`` as it was."""
    data_dir = data_dir.expanduser().resolve()
    if data_dir.exists() and any(data_dir.iterdir()) and not force:
        raise BackupError(f"{data_dir} is not empty: restore into a new directory, or pass "
                          "--force to replace its environment (stop the service that uses "
                          "it first)")
    if not archive_path.is_file():
        raise BackupError(f"no backup at {archive_path}")
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        archive = tarfile.open(archive_path, "r:*")  # noqa: SIM115 (closed by the with below)
    except tarfile.TarError as exc:
        raise BackupError(f"{archive_path} is not a readable backup: {exc}") from None
    with archive, tempfile.TemporaryDirectory(prefix=".gristmill-restore-",
                                              dir=data_dir.parent) as scratch:
        try:
            manifest = read_manifest(archive)
            _extract_verified(archive, manifest, Path(scratch))
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise BackupError(f"the backup could not be read ({exc}); nothing was "
                              "restored") from None
        data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(data_dir, 0o700)
        if force:
            for name in RESTORED:
                entry = data_dir / name
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink(missing_ok=True)
        for entry in Path(scratch).iterdir():
            entry.replace(data_dir / entry.name)
    _relocate_environments(data_dir, str(manifest.get("source_data_dir", "")))
    return manifest

