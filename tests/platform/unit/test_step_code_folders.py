"""A Git step's code taken from its checkout (select_included), an uploaded archive's size
read from its headers (check_archive_size), and the names an archive may hold: only the
step's own files, within the documented 5 MB."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from gristmill_platform.errors import PayloadTooLarge
from gristmill_platform.steps.code import (
    MAX_CODE_BYTES,
    CodeError,
    check_archive_size,
    folder_size,
    select_included,
)
from tests.platform.stepkit import write_folder as write


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    return write(tmp_path / "checkout", {
        "src/main.py": "def run(): ...\n", "src/util/helpers.py": "X = 1\n",
        "docs/guide.md": "# guide\n", "requirements.txt": "numpy\n",
        "Xtra/data.csv": "a,b\n", "config/deep/settings.toml": "k = 1\n",
        ".git/HEAD": "ref: refs/heads/main\n", "src/.git/config": "[core]\n"})


def files_in(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): p.read_text()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def test_included_folders_and_extra_files_are_copied_without_git(repository, tmp_path
                                                                  ) -> None:
    destination = tmp_path / "new" / "code"
    size = select_included(repository, destination, ["src"], ["requirements.txt"])
    assert files_in(destination) == {"requirements.txt": "numpy\n",
                                     "src/main.py": "def run(): ...\n",
                                     "src/util/helpers.py": "X = 1\n"}
    assert size == len("numpy\n") + len("def run(): ...\n") + len("X = 1\n")


def test_the_whole_repository_when_nothing_is_included(repository, tmp_path) -> None:
    for included in ([], ["/"]):
        destination = tmp_path / f"code-{len(included)}"
        select_included(repository, destination, included, [])
        assert sorted(files_in(destination)) == [
            "Xtra/data.csv", "config/deep/settings.toml", "docs/guide.md",
            "requirements.txt", "src/main.py", "src/util/helpers.py"]


def test_an_existing_code_folder_is_filled(repository, tmp_path) -> None:
    destination = tmp_path / "code"
    destination.mkdir()
    select_included(repository, destination, ["src/util", "/Xtra/"],
                    ["/requirements.txt", "config/deep/settings.toml"])
    assert sorted(files_in(destination)) == ["Xtra/data.csv", "config/deep/settings.toml",
                                             "requirements.txt", "src/util/helpers.py"]


def test_an_extra_file_that_is_a_link_inside_is_copied_as_a_link(repository, tmp_path
                                                                 ) -> None:
    (repository / "req.txt").symlink_to("requirements.txt")
    destination = tmp_path / "code"
    select_included(repository, destination, ["src"], ["req.txt", "requirements.txt"])
    assert os.readlink(destination / "req.txt") == "requirements.txt"


def test_links_inside_the_step_are_kept_as_links(repository, tmp_path) -> None:
    (repository / "src" / "alias.py").symlink_to("main.py")
    (repository / "src" / "util" / "up.py").symlink_to("../main.py")
    (repository / "linked_src").symlink_to("src")  # a folder linked inside: its files
    destination = tmp_path / "code"
    select_included(repository, destination, ["src", "linked_src"], [])
    assert os.readlink(destination / "src" / "alias.py") == "main.py"
    assert (destination / "src" / "util" / "up.py").read_text() == "def run(): ...\n"
    assert (destination / "linked_src" / "main.py").read_text() == "def run(): ...\n"
    # links are not counted twice in the size
    assert folder_size(destination) == 2 * (len("def run(): ...\n") + len("X = 1\n"))


@pytest.mark.parametrize(("link", "target", "included", "extra", "message"), [
    ("leak", "OUTSIDE", ["leak"], [],
     "'leak' leads outside the repository through a link: only the repository's own "
     "files can be included"),
    ("via", "OUTSIDE", ["via/key"], [], "'via/key' leads outside the repository"),
    ("req.txt", "OUTSIDE/key", ["src"], ["req.txt"], "'req.txt' leads outside the repository"),
    ("src/abs", "/etc/hostname", ["src"], [],
     "The repository's link 'src/abs' points outside the step's folder"),
    ("src/util/up", "../../../elsewhere", ["src"], [],
     "The repository's link 'src/util/up' points outside the step's folder"),
])
def test_what_leads_out_of_the_repository_or_the_step_is_refused_and_nothing_is_left(
        repository, tmp_path, link, target, included, extra, message) -> None:
    outside = write(tmp_path / "service-data", {"key": "SECRET\n"})
    (repository / link).symlink_to(target.replace("OUTSIDE", str(outside)))
    destination = tmp_path / "code"
    with pytest.raises(CodeError, match=message):
        select_included(repository, destination, ["docs", *included], extra)
    assert list(destination.iterdir()) == []


def test_a_missing_entry_is_named(repository, tmp_path) -> None:
    for included, extra in ((["nope"], []), (["src"], ["missing.txt"])):
        with pytest.raises(CodeError, match=f"'{(included + extra)[-1]}' does not exist in "
                                            "the repository"):
            select_included(repository, tmp_path / "code", included, extra)


def test_the_size_limit_applies_after_selection(repository, tmp_path) -> None:
    selected = len("def run(): ...\n") + len("X = 1\n")
    assert select_included(repository, tmp_path / "at", ["src"], [], limit=selected) == \
        selected
    with pytest.raises(PayloadTooLarge) as refused:
        select_included(repository, tmp_path / "over", ["src"], [], limit=selected - 1)
    assert refused.value.name == "StepCodeTooLarge"
    assert list((tmp_path / "over").iterdir()) == []


def test_the_too_large_message_says_how_much_and_what_to_do() -> None:
    with pytest.raises(PayloadTooLarge) as refused:
        select_included_of_size(6 * 1024 * 1024)
    assert refused.value.message == (
        "The step's code is 6,291,456 bytes (6.00 MB); the limit is 5 MB (5,242,880 bytes) "
        "after included_folders selection. Narrow included_folders, or put large files in "
        "the data store and read them from the step.")


def select_included_of_size(size: int) -> None:
    from gristmill_platform.steps.code import _too_large

    raise _too_large(size)


def archive_of(tmp_path: Path, members: list[tuple[str, bytes]]) -> Path:
    path = tmp_path / "step.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_an_archive_size_counts_each_file_once_from_the_headers(tmp_path) -> None:
    path = archive_of(tmp_path, [("a.py", b"12345"), ("a.py", b"1234567"), ("b.py", b"12")])
    assert check_archive_size(path, limit=9) == 9
    with pytest.raises(PayloadTooLarge, match="The step's code is 9 bytes"):
        check_archive_size(path, limit=8)
    assert check_archive_size(path) == 9 <= MAX_CODE_BYTES


def test_an_archive_size_check_refuses_unsafe_names_and_unreadable_archives(tmp_path
                                                                           ) -> None:
    with pytest.raises(CodeError, match="The archive has an unsafe path '../x.py'"):
        check_archive_size(archive_of(tmp_path, [("../x.py", b"1")]))
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"not gzip")
    with pytest.raises(CodeError, match="The step archive could not be read: "):
        check_archive_size(broken)


@pytest.mark.parametrize("name", ["", ".", "./"])
def test_root_entries_count_nothing(tmp_path, name) -> None:
    path = tmp_path / "step.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        root = tarfile.TarInfo(name)
        root.type = tarfile.DIRTYPE
        tar.addfile(root)
        info = tarfile.TarInfo("main.py")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    assert check_archive_size(path) == 3


@pytest.mark.parametrize("name", [
    "../x.py", "/abs.py", "a/../../x.py", "a/../..", "..", "a\\..\\..\\x.py", "..\\x.py",
    "a/b/../../../x.py",
    "a/../b.py"])  # any ".." part, even one that stays inside
def test_names_leading_out_are_refused(tmp_path, name) -> None:
    with pytest.raises(CodeError, match="The archive has an unsafe path "):
        check_archive_size(archive_of(tmp_path, [(name, b"1")]))


@pytest.mark.parametrize(("name", "kept"), [
    ("a\\b.py", "a/b.py"), ("./main.py", "main.py"), ("a/./b.py", "a/b.py"),
    ("a..b.py", "a..b.py"), ("..hidden/x.py", "..hidden/x.py"), ("a/..b/c.py", "a/..b/c.py")])
def test_names_inside_are_normalised(tmp_path, name, kept) -> None:
    from gristmill_platform.steps.code import extract_archive

    destination = tmp_path / "code"
    assert extract_archive(archive_of(tmp_path, [(name, b"1")]), destination) == 1
    assert files_in(destination) == {kept: "1"}


@pytest.mark.parametrize(("value", "kept"), [
    ("src", "src"), ("/src/", "src"), (" src/models ", "src/models"), ("src/./a", "src/a"),
    ("a/../b", "b"), ("..hidden", "..hidden"), ("/", ""), ("requirements.txt",
                                                            "requirements.txt")])
def test_step_paths_inside_the_folder_are_kept_normalised(value, kept) -> None:
    from gristmill_platform.steps.spec import relative_path

    assert relative_path(value, "included_folders entry") == kept


@pytest.mark.parametrize(("value", "message"), [
    ("..", "must stay inside the step's folder"), ("../x", "must stay inside"),
    ("/../x", "must stay inside"), ("a/../../x", "must stay inside"),
    ("a\\b", "must stay inside"), ("a\x00b", "must stay inside"),
    ("", "must be a non-empty path"), ("   ", "must be a non-empty path"),
    (3, "must be a non-empty path"), (None, "must be a non-empty path")])
def test_step_paths_leading_out_are_refused(value, message) -> None:
    from gristmill_platform.errors import BadRequest
    from gristmill_platform.steps.spec import relative_path

    with pytest.raises(BadRequest, match=f"included_folders entry .*{message}|"
                                         f"included_folders entry {message}"):
        relative_path(value, "included_folders entry")
