"""A step's code on disk: a client archive safely extracted, or a Git checkout narrowed to
the included folders; both held to the documented 5 MB limit."""

from __future__ import annotations

import os
import posixpath
import shutil
import tarfile
from pathlib import Path

from gristmill_platform.errors import BadRequest, PayloadTooLarge

MAX_CODE_BYTES = 5 * 1024 * 1024


class CodeError(BadRequest):
    name = "InvalidStepCode"


def _too_large(size: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The step's code is {size:,} bytes ({size / 1024 / 1024:.2f} MB); the limit is "
        f"5 MB ({MAX_CODE_BYTES:,} bytes) after "
        "included_folders selection. Narrow included_folders, or put large files in the "
        "data store and read them from the step.",
        name="StepCodeTooLarge",
    )


def _member_name(member: tarfile.TarInfo) -> str | None:
    """The member's normalised relative name; None for the root entry ("", "." or "./").
    Any ".." part is refused, even one that would stay inside."""
    raw = member.name.replace("\\", "/")
    if raw.startswith("/") or "/../" in f"/{raw}/":
        raise CodeError(f"The archive has an unsafe path {member.name!r}")
    name = posixpath.normpath(raw)
    return None if name == "." else name


def _link_leaves(name: str, target: str) -> bool:
    """The link ``name`` (relative to the step's folder) to ``target`` leads out of the
    folder by its text: an absolute target, or more ".." than folders ("..hidden" is a
    name, not a way out)."""
    lexical = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    return target.startswith("/") or lexical == ".." or lexical.startswith("../")


def check_archive_size(archive: Path, *, limit: int = MAX_CODE_BYTES) -> int:
    """Total size of the archive's files (each name counted once), read from the headers."""
    sizes: dict[str, int] = {}
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            for member in tar:
                name = _member_name(member)
                if name is not None and member.isfile():
                    sizes[name] = member.size
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise CodeError(f"The step archive could not be read: {exc}") from exc
    total = sum(sizes.values())
    if total > limit:
        raise _too_large(total)
    return total


def extract_archive(archive: Path, destination: Path, *, limit: int = MAX_CODE_BYTES) -> int:
    """Extract a gzip tar of step code; return the total size of its files.

    Handles what the client produces (an empty-named root entry, the same file twice) and
    refuses what it should never contain: paths escaping the folder, links pointing out,
    devices."""
    destination.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, int] = {}
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            wanted = []
            for member in tar.getmembers():
                name = _member_name(member)
                if name is None:
                    continue
                if member.isfile():
                    sizes[name] = member.size
                    if sum(sizes.values()) > limit:
                        raise _too_large(sum(sizes.values()))
                elif member.issym():
                    if _link_leaves(name, member.linkname):
                        raise CodeError(
                            f"The archive's link {member.name!r} points outside the folder")
                elif not member.isdir():
                    raise CodeError(f"The archive entry {member.name!r} is not a file, "
                                    "folder or link")
                member.name = name
                wanted.append(member)
            try:
                for member in wanted:
                    _extract(tar, member, destination)
            except BaseException:
                _empty(destination)  # nothing half-written
                raise
    except _FILTER_ERRORS as exc:
        raise _outside(exc.tarinfo.name, link=isinstance(
            exc, tarfile.LinkOutsideDestinationError)) from exc
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, PayloadTooLarge | CodeError):
            raise
        raise CodeError(f"The step archive could not be read: {exc}") from exc
    return sum(sizes.values())


# Extraction filters (PEP 706) came with Python 3.11.4 (3.10.12 for 3.10): Debian 12's
# system Python, 3.11.2, has none, and a step could not be created there.
HAS_EXTRACTION_FILTERS = hasattr(tarfile, "data_filter")
_FILTER_ERRORS: tuple[type[tarfile.FilterError], ...] = (
    (tarfile.FilterError,) if HAS_EXTRACTION_FILTERS else ())


def _outside(name: str, *, link: bool) -> CodeError:
    if link:
        return CodeError(f"The archive's link {name!r} points outside the folder")
    return CodeError(f"The archive's entry {name!r} leads outside the folder")


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, destination: Path) -> None:
    """One member, checked beforehand by name (extract_archive: no unsafe name, no link
    pointing out by its text, only files, folders and links), with the "data" filter
    where the interpreter has it. Without it, what that filter does beyond those checks,
    by hand: the entry, and a link's target, must lead inside the folder once the links
    extracted before it are followed (a link to "." and another to "that/.." lead out,
    which their text does not show); no set-id, sticky or group- and other-writable bits;
    files readable and writable by their owner, executable only if by their owner;
    folders with the default mode; no owner taken from the archive (by number or name)."""
    if HAS_EXTRACTION_FILTERS:
        tar.extract(member, destination, filter="data")
        return
    root = os.path.realpath(destination)
    if not _leads_inside(root, os.path.join(root, member.name)):
        raise _outside(member.name, link=False)
    if member.issym() and not _leads_inside(
            root, os.path.join(root, os.path.dirname(member.name), member.linkname)):
        raise _outside(member.name, link=True)
    if member.isdir():
        # the default mode, as the filter gives folders (tarfile would apply the archive's)
        (destination / member.name).mkdir(parents=True, exist_ok=True)
        return
    if member.isfile():
        member.mode &= 0o755
        if not member.mode & 0o100:
            member.mode &= ~0o111
        member.mode |= 0o600
    # as root, tarfile gives the file the archive's owner (by name first): the service's
    member.uid, member.gid = os.geteuid(), os.getegid()
    tar.extract(member, destination, numeric_owner=True)


def _leads_inside(root: str, path: str) -> bool:
    return os.path.commonpath([os.path.realpath(path), root]) == root


def _empty(folder: Path) -> None:
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def folder_size(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for file in files:
            path = Path(dirpath) / file
            if not path.is_symlink():
                total += path.stat().st_size
    return total


def select_included(source: Path, destination: Path, included: list[str],
                    extra_files: list[str], *, limit: int = MAX_CODE_BYTES) -> int:
    """Copy the included folders/files (plus e.g. requirements and the function file) of
    a checkout into the step's code folder, as the client does for local folders.

    Only the repository's own files: an entry reached through a link that leads out of
    the checkout is refused (a link ``data -> /var/lib`` would otherwise copy the
    service's own files into the step), and so is a link copied along that points out of
    the step's folder, as in an uploaded archive. A refusal leaves the folder empty."""
    destination.mkdir(parents=True, exist_ok=True)
    root = source.resolve()
    wanted = included or ["/"]
    try:
        for entry in [*wanted, *extra_files]:
            relative = entry.strip("/")
            origin = source / relative  # the checkout itself for ""
            if not origin.exists():
                raise CodeError(f"{entry!r} does not exist in the repository")
            if not origin.resolve().is_relative_to(root):
                raise CodeError(f"{entry!r} leads outside the repository through a link: "
                                "only the repository's own files can be included")
            if origin.is_dir():
                shutil.copytree(origin, destination / relative,
                                symlinks=True, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns(".git"))
            else:
                (destination / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, destination / relative, follow_symlinks=False)
        _check_links(destination)
        size = folder_size(destination)
        if size > limit:
            raise _too_large(size)
    except BaseException:
        _empty(destination)
        raise
    return size


def _check_links(folder: Path) -> None:
    """Every link in ``folder`` leads inside it, by its text (the rule for archives)."""
    for directory, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            path = Path(directory) / name
            if not path.is_symlink():
                continue
            relative = path.relative_to(folder).as_posix()
            if _link_leaves(relative, os.readlink(path)):
                raise CodeError(f"The repository's link {relative!r} points outside the "
                                "step's folder")


def function_defined(source: str, name: str) -> bool | None:
    """Whether the module ``source`` defines ``name`` at top level, read with ``ast``
    (user code is never imported by the control service). ``None`` when it cannot tell:
    a syntax this Python does not parse (the step may target a newer one), a star import
    or a module ``__getattr__``."""
    import ast

    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    names: set[str] = set()
    unknowable = False

    def visit(statements: list[ast.stmt]) -> None:
        nonlocal unknowable
        for node in statements:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
                continue  # what a function or class body defines is not module level
            elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names.update(n.id for t in targets for n in ast.walk(t)
                             if isinstance(n, ast.Name))
            elif isinstance(node, ast.Import | ast.ImportFrom):
                for alias in node.names:
                    if alias.name == "*":
                        unknowable = True
                    names.add(alias.asname or alias.name.split(".")[0])
            # definitions under `if`, `try`, `with` and loops are module level too
            for field in ("body", "orelse", "finalbody"):
                visit(getattr(node, field, None) or [])
            for handler in getattr(node, "handlers", None) or []:
                visit(handler.body)
            for case in getattr(node, "cases", None) or []:
                visit(case.body)

    visit(tree.body)
    if name in names:
        return True
    if unknowable or "__getattr__" in names:
        return None
    return False
