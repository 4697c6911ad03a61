"""The hand-off of shadow copies to the shadow runner (executions/shadow_runner.py,
shadow_frames.py): frames, bad input, and the bound on what waits. No process started."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gristmill_platform.executions import shadow_frames as frames
from gristmill_platform.executions.shadow_runner import BATCH_MAX, ShadowRunner
from gristmill_platform.settings import Settings
from gristmill_platform.telemetry.metrics import SHADOW_COPIES_DROPPED


def test_a_copy_frame_reads_back() -> None:
    data = frames.copy_frame("scorer", "scorer-v2", {"text": "é", "n": [1, 2]})
    size = frames.length(data[:frames.HEADER.size])
    assert size == len(data) - frames.HEADER.size
    copy = frames.read_copy(frames.document(data[frames.HEADER.size:]))
    assert copy == frames.Copy("scorer", "scorer-v2", {"text": "é", "n": [1, 2]})


@pytest.mark.parametrize("payload", [b"not json", b"[1, 2]", b'"text"', b"\xff\xfe"])
def test_a_payload_that_is_not_a_json_object_is_a_bad_frame(payload: bytes) -> None:
    with pytest.raises(frames.BadFrame):
        frames.document(payload)


@pytest.mark.parametrize("found", [{}, {"e": "x", "p": "y"}, {"e": 1, "p": "y", "b": {}},
                                   {"e": "x", "p": None, "b": {}}, {"e": "x", "p": "y",
                                                                   "b": [1]}])
def test_a_copy_without_its_fields_is_a_bad_frame(found: dict) -> None:
    with pytest.raises(frames.BadFrame):
        frames.read_copy(found)


def test_a_corrupt_length_is_refused_before_anything_is_read() -> None:
    with pytest.raises(frames.BadFrame):
        frames.length(frames.HEADER.pack(frames.MAX_FRAME + 1))


@pytest.mark.parametrize("counts", [{"done": [1]}, {"done": {"x": -1}},
                                    {"dropped": {"x": "1"}}, {"done": {"x": 1.5}}])
def test_bad_counts_are_refused(counts: dict) -> None:
    with pytest.raises(frames.BadFrame):
        frames.read_counts(counts, "done" if "done" in counts else "dropped")


def test_the_hand_off_is_bounded_and_refuses_what_it_cannot_encode(tmp_path) -> None:
    async def scenario() -> None:
        limit = [2]
        runner = ShadowRunner(Settings(data_dir=tmp_path), lambda: limit[0])
        # a body JSON cannot carry (a call's body always can: this is a guard)
        assert not runner.offer("ep", "dep", "v2", {"x": object()})
        assert runner.waiting == 0
        task = asyncio.get_running_loop().create_task(asyncio.sleep(3600))
        runner._task = task  # a runner "starting": copies wait for it, none is started
        assert runner.offer("ep", "dep", "v2", {"x": 1})
        assert runner.offer("ep", "dep", "v2", {"x": 2})
        assert runner.waiting == 2
        assert not runner.offer("ep", "dep", "v2", {"x": 3})  # over the bound
        limit[0] = 3
        assert runner.offer("ep", "dep", "v2", {"x": 3})
        task.cancel()

    asyncio.run(scenario())


def test_copies_a_stopped_runner_had_not_accounted_for_are_counted(tmp_path) -> None:
    runner = ShadowRunner(Settings(data_dir=tmp_path), lambda: 10)
    runner._names["ep-lost"] = "dep-lost"
    runner._sent = {"ep-lost": 3}
    runner._settle("ep-lost", 1)  # one it said had run
    before = SHADOW_COPIES_DROPPED.labels("dep-lost")._value.get()
    runner._stopped()
    assert SHADOW_COPIES_DROPPED.labels("dep-lost")._value.get() == before + 2
    assert (runner.lost, runner.waiting) == (2, 0)


class _Writer:
    """What the hand-off writes to the runner's socket, write by write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.eof = False

    def write(self, data: bytes) -> None:
        assert not self.eof
        self.writes.append(data)

    def write_eof(self) -> None:
        self.eof = True


def _copies(data: bytes) -> list[frames.Copy]:
    found = []
    while data:
        size = frames.length(data[:frames.HEADER.size])
        payload = data[frames.HEADER.size:frames.HEADER.size + size]
        found.append(frames.read_copy(frames.document(payload)))
        data = data[frames.HEADER.size + size:]
    return found


def _connected(tmp_path, **settings: object) -> tuple[ShadowRunner, _Writer]:
    runner = ShadowRunner(Settings(data_dir=tmp_path, **settings), lambda: 10_000)
    writer = _Writer()
    runner._writer = writer  # type: ignore[assignment]  # a runner already connected
    return runner, writer


def test_copies_are_written_in_one_batch_after_the_first(tmp_path) -> None:
    async def scenario() -> None:
        runner, writer = _connected(tmp_path, shadow_batch_ms=5)
        for n in range(3):
            assert runner.offer("ep", "dep", "v2", {"n": n})
        assert writer.writes == [] and runner.waiting == 3  # held: no write per call
        while not writer.writes:
            await asyncio.sleep(0.001)
        [batch] = writer.writes  # one write, so the runner wakes once for the three
        assert [c.body["n"] for c in _copies(batch)] == [0, 1, 2]
        assert runner.waiting == 3  # sent, not accounted for yet
        runner._settle("ep", 3)
        assert runner.waiting == 0
        assert runner.offer("ep", "dep", "v2", {"n": 3})  # the next batch
        while len(writer.writes) < 2:
            await asyncio.sleep(0.001)
        assert [c.body["n"] for c in _copies(writer.writes[1])] == [3]

    asyncio.run(scenario())


def test_without_batches_each_copy_is_written_at_once(tmp_path) -> None:
    async def scenario() -> None:
        runner, writer = _connected(tmp_path, shadow_batch_ms=0)
        for n in range(2):
            assert runner.offer("ep", "dep", "v2", {"n": n})
            assert len(writer.writes) == n + 1

    asyncio.run(scenario())


def test_a_full_batch_is_written_at_once(tmp_path) -> None:
    async def scenario() -> None:
        runner, writer = _connected(tmp_path, shadow_batch_ms=1000)
        for n in range(BATCH_MAX):
            assert runner.offer("ep", "dep", "v2", {"n": n})
        [batch] = writer.writes  # not waiting for the time: the batch is full
        assert len(_copies(batch)) == BATCH_MAX
        assert runner.waiting == BATCH_MAX

    asyncio.run(scenario())


def test_a_batch_not_written_yet_is_written_when_the_service_stops(tmp_path) -> None:
    async def scenario() -> None:
        runner, writer = _connected(tmp_path, shadow_batch_ms=1000)
        assert runner.offer("ep", "dep", "v2", {"n": 0})
        assert runner.offer("ep", "dep", "v2", {"n": 1})
        await runner.shutdown()
        [batch] = writer.writes  # handed over before the end of file, as any copy
        assert writer.eof and [c.body["n"] for c in _copies(batch)] == [0, 1]
        assert not runner.offer("ep", "dep", "v2", {"n": 2})  # stopping: none taken

    asyncio.run(scenario())


@pytest.mark.parametrize("value", ["-1", "1001", "soon"])
def test_a_bad_batch_delay_is_refused_at_start(value: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("GRISTMILL_SHADOW_BATCH_MS", value)
    with pytest.raises(ValidationError, match="shadow_batch_ms"):
        Settings(data_dir=tmp_path)
