"""The build context of a step image: the step's code (and the generated Dockerfile) as
the gzipped tar the build Job fetches and BuildKit builds from, plus the digest of what it holds.

The archive is reproducible: entries sorted, times, owners and permissions normalised,
gzip without a timestamp. The same code therefore always gives the same digest, which
names the image: identical steps share one build and one image.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

# Where the step's code sits in a context with a generated Dockerfile: a file of the
# step's own called "Dockerfile" must not meet the generated one.
CODE_DIR = "code"
GENERATED_DOCKERFILE = "Dockerfile"


def pack_context(code: Path, target: Path, generated_dockerfile: str | None) -> str:
    """Write the context of ``code`` to ``target`` (tar.gz); return its sha256 digest.

    With ``generated_dockerfile``, the context is that Dockerfile at the root and the code
    under ``code/``; without (the step brings its own Dockerfile), the code is the context.
    """
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        prefix = ""
        if generated_dockerfile is not None:
            _add_bytes(tar, GENERATED_DOCKERFILE, generated_dockerfile.encode())
            _add_directory(tar, CODE_DIR)
            prefix = CODE_DIR + "/"
        for path in _walk(code):
            _add_path(tar, path, prefix + path.relative_to(code).as_posix())
    data = raw.getvalue()
    with target.open("wb") as out, gzip.GzipFile(
        filename="", mode="wb", fileobj=out, mtime=0
    ) as compressed:
        compressed.write(data)
    return hashlib.sha256(data).hexdigest()


def _walk(root: Path) -> list[Path]:
    found: list[Path] = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        base = Path(folder)
        # a symlink to a folder is listed in dirs but not followed: keep it as a link
        found += [base / name for name in dirs]
        found += [base / name for name in sorted(files)]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _normalised(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = _normalised(tarfile.TarInfo(name))
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _add_directory(tar: tarfile.TarFile, name: str) -> None:
    info = _normalised(tarfile.TarInfo(name))
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    tar.addfile(info)


def _add_path(tar: tarfile.TarFile, path: Path, name: str) -> None:
    if path.is_symlink():
        info = _normalised(tarfile.TarInfo(name))
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(path)
        info.mode = 0o777
        tar.addfile(info)
    elif path.is_dir():
        _add_directory(tar, name)
    elif path.is_file():
        info = _normalised(tarfile.TarInfo(name))
        stat = path.stat()
        info.size = stat.st_size
        # only the executable bit matters to a build; the rest would differ between
        # machines (umask) and change the digest for nothing
        info.mode = 0o755 if stat.st_mode & 0o111 else 0o644
        with path.open("rb") as content:
            tar.addfile(info, content)
    # sockets, devices and fifos have no place in an image's code: left out
