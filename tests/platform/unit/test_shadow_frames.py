"""The hand-off of shadow copies to the shadow runner (executions/shadow_runner.py,
shadow_frames.py): frames, bad input, and the bound on what waits. No process started."""

from __future__ import annotations

import asyncio

import pytest

from gristmill_platform.executions import shadow_frames as frames
from gristmill_platform.executions.shadow_runner import ShadowRunner
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
