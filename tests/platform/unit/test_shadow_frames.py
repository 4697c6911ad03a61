"""The hand-off of shadow copies to the shadow runner (executions/shadow_runner.py,
shadow_frames.py, shadow_release.py): frames, bad input, the bound on what waits, and when
copies go (a quiet moment of the calls, a chunk at a time, or late). No process started."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gristmill_platform.executions import shadow_frames as frames
from gristmill_platform.executions import shadow_release
from gristmill_platform.executions.shadow_release import CHUNK, HIGH_WATER
from gristmill_platform.executions.shadow_runner import ShadowRunner
from gristmill_platform.settings import Settings
from gristmill_platform.telemetry.metrics import SHADOW_COPIES_DROPPED
from gristmill_platform.traffic import Traffic


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
        runner = ShadowRunner(Settings(data_dir=tmp_path), lambda: limit[0], Traffic())
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
    runner = ShadowRunner(Settings(data_dir=tmp_path), lambda: 10, Traffic())
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


def _connected(tmp_path, traffic: Traffic, **settings: object
               ) -> tuple[ShadowRunner, _Writer]:
    runner = ShadowRunner(Settings(data_dir=tmp_path, **settings), lambda: 10_000, traffic)
    writer = _Writer()
    runner._writer = writer  # type: ignore[assignment]  # a runner already connected
    return runner, writer


def _accounts(counts: dict) -> asyncio.StreamReader:
    """What a runner tells back, then its end of file."""
    reader = asyncio.StreamReader()
    reader.feed_data(frames.frame(counts))
    reader.feed_eof()
    return reader


def test_copies_wait_for_a_quiet_moment_and_go_a_chunk_at_a_time(tmp_path) -> None:
    async def scenario() -> None:
        traffic = Traffic()
        runner, writer = _connected(tmp_path, traffic, shadow_quiet_ms=20)
        traffic.enter()  # a call in flight
        for n in range(CHUNK + 3):
            assert runner.offer("ep", "dep", "v2", {"n": n})
        await asyncio.sleep(0.08)
        assert writer.writes == [] and runner.waiting == CHUNK + 3  # held: a call is on
        traffic.leave()
        while not writer.writes:
            await asyncio.sleep(0.002)
        [chunk] = writer.writes  # one write, so the runner wakes once for the chunk
        assert [c.body["n"] for c in _copies(chunk)] == list(range(CHUNK))
        assert runner.unwritten == 3 and runner.waiting == CHUNK + 3
        await asyncio.sleep(0.05)
        assert len(writer.writes) == 1  # the next chunk waits for the runner's accounts
        await runner._read_accounts(_accounts({"done": {"ep": CHUNK}}))
        [_, rest] = writer.writes
        assert [c.body["n"] for c in _copies(rest)] == [CHUNK, CHUNK + 1, CHUNK + 2]
        assert (runner.unwritten, runner.waiting) == (0, 3)

    asyncio.run(scenario())


def test_copies_go_after_the_longest_delay_when_the_calls_never_pause(tmp_path) -> None:
    async def scenario() -> None:
        traffic = Traffic()
        runner, writer = _connected(tmp_path, traffic, shadow_quiet_ms=20,
                                    shadow_max_delay_ms=100)
        traffic.enter()  # calls all along
        started = asyncio.get_running_loop().time()
        for n in range(CHUNK + 5):
            assert runner.offer("ep", "dep", "v2", {"n": n})
        while not writer.writes:
            await asyncio.sleep(0.002)
        assert asyncio.get_running_loop().time() - started >= 0.1
        [batch] = writer.writes  # all of them: late, not lost, not a chunk at a time
        assert len(_copies(batch)) == CHUNK + 5 and runner.unwritten == 0

    asyncio.run(scenario())


def test_too_many_copies_waiting_go_at_once(tmp_path) -> None:
    async def scenario() -> None:
        traffic = Traffic()
        runner, writer = _connected(tmp_path, traffic, shadow_max_delay_ms=60_000)
        traffic.enter()
        for n in range(HIGH_WATER):
            assert runner.offer("ep", "dep", "v2", {"n": n})
        [batch] = writer.writes  # not waiting for a quiet moment nor for the delay
        assert len(_copies(batch)) == HIGH_WATER and runner.waiting == HIGH_WATER

    asyncio.run(scenario())


def test_without_a_quiet_time_each_copy_is_written_at_once(tmp_path) -> None:
    async def scenario() -> None:
        traffic = Traffic()
        runner, writer = _connected(tmp_path, traffic, shadow_quiet_ms=0)
        traffic.enter()
        for n in range(2):
            assert runner.offer("ep", "dep", "v2", {"n": n})
            assert len(writer.writes) == n + 1

    asyncio.run(scenario())


def test_copies_still_waiting_are_written_when_the_service_stops(tmp_path) -> None:
    async def scenario() -> None:
        traffic = Traffic()
        runner, writer = _connected(tmp_path, traffic, shadow_max_delay_ms=60_000)
        traffic.enter()
        assert runner.offer("ep", "dep", "v2", {"n": 0})
        assert runner.offer("ep", "dep", "v2", {"n": 1})
        await runner.shutdown()
        [batch] = writer.writes  # handed over before the end of file, as any copy
        assert writer.eof and [c.body["n"] for c in _copies(batch)] == [0, 1]
        assert not runner.offer("ep", "dep", "v2", {"n": 2})  # stopping: none taken

    asyncio.run(scenario())


R = shadow_release.Release


@pytest.mark.parametrize(("state", "expected"), [
    ({"waiting": 0}, R(0, None)),
    ({"quiet_s": 0.0}, R(40, None)),  # no quiet time: everything at once
    ({"oldest_wait_s": 2.0}, R(40, None)),  # overdue: everything, quiet or not
    ({"waiting": HIGH_WATER}, R(HIGH_WATER, None)),
    ({"quiet_for_s": 0.0}, R(0, 0.02)),  # a call in flight: look again a quiet time later
    ({"quiet_for_s": 0.015}, R(0, pytest.approx(0.005))),
    ({"quiet_for_s": 0.0, "oldest_wait_s": 1.99}, R(0, pytest.approx(0.01))),  # or sooner
    ({"in_runner": 3}, R(0, pytest.approx(1.5))),  # quiet, runner busy: its accounts
    ({}, R(CHUNK, pytest.approx(1.5))),  # quiet: a chunk, the rest on the accounts
    ({"waiting": 5}, R(5, None)),
])
def test_what_is_released(state: dict, expected: shadow_release.Release) -> None:
    given = {"waiting": 40, "oldest_wait_s": 0.5, "quiet_for_s": 0.05, "in_runner": 0,
             "quiet_s": 0.02, "max_delay_s": 2.0, **state}
    assert shadow_release.release(**given) == expected


@pytest.mark.parametrize(("name", "value"), [
    ("shadow_quiet_ms", "-1"), ("shadow_quiet_ms", "1001"), ("shadow_quiet_ms", "soon"),
    ("shadow_max_delay_ms", "0"), ("shadow_max_delay_ms", "60001"),
    ("shadow_max_delay_ms", "later")])
def test_a_bad_shadow_timing_is_refused_at_start(name: str, value: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv(f"GRISTMILL_{name.upper()}", value)
    with pytest.raises(ValidationError, match=name):
        Settings(data_dir=tmp_path)
