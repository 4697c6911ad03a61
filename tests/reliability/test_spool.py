"""The spool of ended low-latency executions (executions/spool.py): appended before the
answer leaves, rotated per batch, removed once written, replayed after a crash."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from gristmill_platform.executions.spool import Spool, orphaned_spools, read_spool

WHEN = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)


def test_rows_round_trip_and_rotate(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append({"id": "a", "ended_at": WHEN, "outputs": [{"value": 1.5}]})
    spool.append({"id": "b", "ended_at": None, "outputs": []})
    first = spool.rotate()
    assert len(first) == 1
    spool.append({"id": "c", "ended_at": WHEN, "outputs": []})
    rows = list(read_spool(first[0], frozenset({"ended_at"})))
    assert rows == [{"id": "a", "ended_at": WHEN, "outputs": [{"value": 1.5}]},
                    {"id": "b", "ended_at": None, "outputs": []}]
    spool.written(first)
    assert not first[0].exists()
    # the live file belongs to this process: not an orphan
    assert orphaned_spools(tmp_path) == []
    assert spool.rotate() and spool.rotate() == []
    spool.close()


def test_files_of_gone_processes_are_orphans_and_torn_lines_skipped(tmp_path: Path) -> None:
    dead = tmp_path / "spool-999999999-12345-0.jsonl"
    dead.write_bytes(b'{"id":"x","ended_at":"2026-12-05T10:00:00+00:00"}\n{"id":"y","end')
    live = tmp_path / f"spool-{os.getpid()}-1-0.jsonl"  # same pid, another start time
    live.write_bytes(b"")
    assert set(orphaned_spools(tmp_path)) == {dead, live}
    assert list(read_spool(dead, frozenset({"ended_at"}))) == [{"id": "x", "ended_at": WHEN}]
