"""A step archive's extraction, with the interpreter's extraction filters and without them
(Python before 3.11.4, such as Debian 12's 3.11.2, has none): the same files, modes and
refusals either way, and nothing left behind by a refusal."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from gristmill_platform.errors import PayloadTooLarge
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


def file(name: str, data: bytes = b"x = 1\n", mode: int = 0o644, uid: int = 0,
         uname: str = "somebody") -> Member:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.uid, info.gid = len(data), mode, uid, uid
        info.uname = info.gname = uname
        tar.addfile(info, io.BytesIO(data))
    return add


def entry(name: str, kind: bytes, linkname: str = "", mode: int = 0o755) -> Member:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.mode = kind, linkname, mode
        tar.addfile(info)
    return add


def default_folder_mode() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o777 & ~umask


def test_files_folders_and_inner_links_are_extracted(tmp_path, extraction) -> None:
    path = archive(
        tmp_path,
        entry("", tarfile.DIRTYPE),  # the root entry the client writes first: skipped
        file("lib/deep/util.py", b"u = 2\n"),  # its folders made on the way
        entry("lib/deep", tarfile.DIRTYPE),  # then listed: already there
        entry("other/nested", tarfile.DIRTYPE),  # its parent never listed
        file("src/main.py", b"print(1)\n"),
        file("src/main.py", b"print(2)\n"),  # the same file twice: the last one, once
        file("run.sh", b"#!/bin/sh\n", mode=0o755),
        entry("main_link.py", tarfile.SYMTYPE, "src/main.py"),
        entry("src/up_link.sh", tarfile.SYMTYPE, "../run.sh"))  # relative to its folder
    destination = tmp_path / "missing" / "code"  # its parent made too
    assert extract_archive(path, destination) == 6 + 9 + 10
    assert (destination / "lib" / "deep" / "util.py").read_bytes() == b"u = 2\n"
    assert (destination / "other" / "nested").is_dir()
    assert (destination / "src" / "main.py").read_bytes() == b"print(2)\n"
    assert (destination / "main_link.py").read_bytes() == b"print(2)\n"
    assert (destination / "src" / "up_link.sh").read_bytes() == b"#!/bin/sh\n"
    assert stat.S_IMODE((destination / "run.sh").stat().st_mode) == 0o755


def test_an_existing_empty_folder_is_extracted_into(tmp_path, extraction) -> None:
    destination = tmp_path / "code"
    destination.mkdir()
    extract_archive(archive(tmp_path, file("main.py")), destination)
    assert (destination / "main.py").is_file()


def test_dangerous_mode_bits_and_the_archive_owner_are_dropped(tmp_path, extraction) -> None:
    path = archive(tmp_path, file("setuid.py", mode=0o6777, uid=12345),
                   file("unreadable.py", mode=0o000, uid=12345),
                   # an owner named as one of this machine's (as root, tarfile would take
                   # the name's uid)
                   file("nobody.py", uid=12345, uname="nobody"),
                   file("others_only.sh", mode=0o677),
                   entry("private", tarfile.DIRTYPE, mode=0o1700),
                   entry("shared", tarfile.DIRTYPE, mode=0o777))
    destination = tmp_path / "code"
    extract_archive(path, destination)

    def mode(name: str) -> int:
        return stat.S_IMODE((destination / name).stat().st_mode)

    assert mode("setuid.py") == 0o755
    assert mode("unreadable.py") == 0o600
    assert mode("others_only.sh") == 0o644  # executable only if by its owner
    # a folder's mode is the default one, whatever the archive says
    assert mode("private") == mode("shared") == default_folder_mode()
    for name in ("setuid.py", "unreadable.py", "nobody.py"):
        assert (destination / name).stat().st_uid == os.geteuid()
        assert (destination / name).stat().st_gid == os.getegid()


def test_the_size_limit_counts_each_file_once(tmp_path, extraction) -> None:
    ten = b"0123456789"
    at_limit = archive(tmp_path, file("a.py", ten), file("a.py", ten), file("b.py", ten))
    assert extract_archive(at_limit, tmp_path / "ok", limit=20) == 20
    over = archive(tmp_path, file("a.py", ten), file("b.py", ten + b"!"))
    with pytest.raises(PayloadTooLarge, match=r"The step's code is 21 bytes") as refused:
        extract_archive(over, tmp_path / "over", limit=20)
    assert refused.value.name == "StepCodeTooLarge"
    assert list((tmp_path / "over").iterdir()) == []


def test_an_unreadable_archive_is_refused(tmp_path, extraction) -> None:
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"\x1f\x8b not a gzip stream")
    with pytest.raises(CodeError, match="The step archive could not be read: "):
        extract_archive(broken, tmp_path / "code")


@pytest.mark.parametrize(("members", "message"), [
    ([file("../escape.py")], "unsafe path '../escape.py'"),
    ([file("/etc/escape.py")], "unsafe path '/etc/escape.py'"),
    ([entry("out", tarfile.SYMTYPE, "../../escape")], "link 'out' points outside"),
    ([entry("up", tarfile.SYMTYPE, "..")], "link 'up' points outside"),
    ([entry("sub/out", tarfile.SYMTYPE, "../../escape")], "link 'sub/out' points outside"),
    ([entry("abs", tarfile.SYMTYPE, "/etc/passwd")], "link 'abs' points outside"),
    ([file("main.py"), entry("hard", tarfile.LNKTYPE, "main.py")],
     "entry 'hard' is not a file, folder or link"),
    ([entry("device", tarfile.CHRTYPE)], "entry 'device' is not a file, folder or link"),
    ([entry("pipe", tarfile.FIFOTYPE)], "entry 'pipe' is not a file, folder or link"),
])
def test_unsafe_archives_are_refused_before_anything_is_written(
        tmp_path, monkeypatch, extraction, members, message) -> None:
    """What the members' names, types and link texts show is refused before the first
    member is extracted (not extracted, then removed)."""
    extracted: list[str] = []
    extract = code._extract
    monkeypatch.setattr(code, "_extract", lambda tar, member, destination: (
        extracted.append(member.name), extract(tar, member, destination)))
    path = archive(tmp_path, file("first.py"), *members)
    destination = tmp_path / "code"
    with pytest.raises(CodeError, match=message):
        extract_archive(path, destination)
    assert extracted == []
    assert list(destination.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["code", "step.tar.gz"]


@pytest.mark.parametrize(("members", "message"), [
    # "here" is ".", "up" is "here/..": followed, the folder's parent
    ([entry("here", tarfile.SYMTYPE, "."), entry("up", tarfile.SYMTYPE, "here/.."),
      file("up/escape.py")], "The archive's link 'up' points outside the folder"),
    # "up" is "later/.." while "later" does not exist yet (inside then); "later" then
    # becomes "." and "up" the parent: only the file written through it shows it
    ([entry("up", tarfile.SYMTYPE, "later/.."), entry("later", tarfile.SYMTYPE, "."),
      file("up/escape.py")], "The archive's entry 'up/escape.py' leads outside the folder"),
])
def test_links_leading_out_through_other_links_are_refused_and_nothing_is_left(
        tmp_path, extraction, members, message) -> None:
    """Each link's text stays inside; followed, they lead to the folder's parent. What was
    extracted before the refusal, files, folders and links, is removed."""
    path = archive(tmp_path, file("first.py"), entry("made", tarfile.DIRTYPE),
                   file("made/inner.py"), *members)
    destination = tmp_path / "code"
    with pytest.raises(CodeError, match=message):
        extract_archive(path, destination)
    assert list(destination.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["code", "step.tar.gz"]
