"""An elastic worker's work folder is removed once it is cleaned up, whatever it holds:
the usual empty one by rmdir calls on the event loop, one with files left in it by
rmtree on a thread."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gristmill_platform.executors.base import LogLine
from gristmill_platform.executors.local import LocalExecutor
from gristmill_platform.executors.spec import PollResult


async def _ended(execution_id: str, outcome: PollResult, tail: Sequence[LogLine]) -> None:
    return None


def _work_dir(root: Path, execution_id: str) -> Path:
    work = root / execution_id
    (work / "io").mkdir(parents=True)
    (work / "tmp").mkdir()
    return work


async def test_an_empty_work_folder_is_removed(tmp_path: Path) -> None:
    executor = LocalExecutor(tmp_path, _ended)
    work = _work_dir(tmp_path, "e1")
    await executor.cleanup({"execution_id": "e1"})
    assert not work.exists()


async def test_a_work_folder_with_files_left_is_removed(tmp_path: Path) -> None:
    executor = LocalExecutor(tmp_path, _ended)
    work = _work_dir(tmp_path, "e2")
    (work / "tmp" / "nested").mkdir()
    (work / "tmp" / "nested" / "left.txt").write_text("left by the step")
    (work / "io" / "output.bin").write_bytes(b"\0" * 10)
    (work / "extra.log").write_text("a file beside io and tmp")
    await executor.cleanup({"execution_id": "e2"})
    assert not work.exists()


async def test_a_partly_made_or_missing_work_folder_is_fine(tmp_path: Path) -> None:
    executor = LocalExecutor(tmp_path, _ended)
    (tmp_path / "e3" / "io").mkdir(parents=True)  # no tmp: the submit failed between
    await executor.cleanup({"execution_id": "e3"})
    await executor.cleanup({"execution_id": "never-made"})
    assert not (tmp_path / "e3").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
