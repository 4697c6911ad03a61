"""A step archive's extraction, with the interpreter's extraction filters and without them
(Python before 3.11.4, such as Debian 12's 3.11.2, has none): the same files, modes and
refusals either way."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from gristmill_platform.steps import code
from gristmill_platform.steps.code import CodeError, extract_archive

Member = Callable[[tarfile.TarFile], None]


@pytest.fixture(params=["filters", "by-hand"])
def extraction(request, monkeypatch) -> str:
    if request.param == "filters":
        if not code.HAS_EXTRACTION_FILTERS:
            pytest.skip("this interpreter has no extraction filters (Python < 3.11.4)")
    else:
        monkeypatch.setattr(code, "HAS_EXTRACTION_FILTERS", False)
    return str(request.param)


def archive(tmp_path: Path, *members: Member) -> Path:
    path = tmp_path / "step.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for add in members:
            add(tar)
    return path


def file(name: str, data: bytes = b"x = 1\n", mode: int = 0o644, uid: int = 0) -> Member:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.uid, info.uname = len(data), mode, uid, "somebody"
        tar.addfile(info, io.BytesIO(data))
    return add


def entry(name: str, kind: bytes, linkname: str = "") -> Member:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, linkname
        tar.addfile(info)
    return add


def test_files_folders_and_inner_links_are_extracted(tmp_path, extraction) -> None:
    path = archive(tmp_path, entry("src", tarfile.DIRTYPE), file("src/main.py", b"print(1)\n"),
                   file("run.sh", b"#!/bin/sh\n", mode=0o755),
                   entry("main_link.py", tarfile.SYMTYPE, "src/main.py"))
    destination = tmp_path / "code"
    assert extract_archive(path, destination) == len(b"print(1)\n") + len(b"#!/bin/sh\n")
    assert (destination / "src" / "main.py").read_bytes() == b"print(1)\n"
    assert (destination / "main_link.py").read_bytes() == b"print(1)\n"
    assert stat.S_IMODE((destination / "run.sh").stat().st_mode) == 0o755


def test_dangerous_mode_bits_and_the_archive_owner_are_dropped(tmp_path, extraction) -> None:
    folder = tarfile.TarInfo("private")
    folder.type, folder.mode = tarfile.DIRTYPE, 0o1700
    path = archive(tmp_path, file("setuid.py", mode=0o6777, uid=12345),
                   file("unreadable.py", mode=0o000, uid=12345),
                   file("others_only.sh", mode=0o677), lambda tar: tar.addfile(folder))
    destination = tmp_path / "code"
    extract_archive(path, destination)

    def mode(name: str) -> int:
        return stat.S_IMODE((destination / name).stat().st_mode)

    assert mode("setuid.py") == 0o755
    assert mode("unreadable.py") == 0o600
    assert mode("others_only.sh") == 0o644  # executable only if by its owner
    umask = os.umask(0o022)
    os.umask(umask)
    assert mode("private") == 0o777 & ~umask  # a folder's mode is the default one
    for name in ("setuid.py", "unreadable.py"):
        assert (destination / name).stat().st_uid == os.geteuid()


def test_links_leading_out_through_other_links_are_refused_and_nothing_is_left(
        tmp_path, extraction) -> None:
    """Each link's text stays inside ("here" is ".", "up" is "here/.."), but followed they
    lead to the folder's parent: a file written through them would land outside."""
    path = archive(tmp_path, file("first.py"), entry("here", tarfile.SYMTYPE, "."),
                   entry("up", tarfile.SYMTYPE, "here/.."), file("up/escape.py"))
    destination = tmp_path / "code"
    with pytest.raises(CodeError, match=r"The archive's link 'up' points outside the folder"):
        extract_archive(path, destination)
    assert list(destination.iterdir()) == []  # first.py and "here" removed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["code", "step.tar.gz"]


@pytest.mark.parametrize(("members", "message"), [
    ([file("../escape.py")], "unsafe path"),
    ([file("/etc/escape.py")], "unsafe path"),
    ([entry("out", tarfile.SYMTYPE, "../../escape")], "points outside the folder"),
    ([entry("abs", tarfile.SYMTYPE, "/etc/passwd")], "points outside the folder"),
    ([file("main.py"), entry("hard", tarfile.LNKTYPE, "main.py")], "not a file, folder or link"),
    ([entry("device", tarfile.CHRTYPE)], "not a file, folder or link"),
    ([entry("pipe", tarfile.FIFOTYPE)], "not a file, folder or link"),
])
def test_unsafe_archives_are_refused_and_nothing_is_written(tmp_path, extraction, members,
                                                            message) -> None:
    path = archive(tmp_path, file("first.py"), *members)
    destination = tmp_path / "code"
    with pytest.raises(CodeError, match=message):
        extract_archive(path, destination)
    assert list(destination.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["code", "step.tar.gz"]
