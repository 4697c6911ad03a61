"""The runner's log threads: one thread reads both redirected descriptors, and the
shipper's thread starts only once it has something to do (its first heartbeat is due, or
a full batch waits), so that a short execution that prints little starts one thread, not
three, and its lines ride on finish."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from gristmill.runtime._logs import (
    LineAssembler,
    LogBuffer,
    LogLine,
    LogShipper,
    _DescriptorPump,
    _PumpThread,
)


def _shipper(buffer: LogBuffer, sent: list[list[LogLine]], interval_s: float,
             batch_lines: int = 1000) -> LogShipper:
    return LogShipper(buffer, sent.append, interval_s, on_gone=lambda error: None,
                      is_gone=lambda error: False, report=lambda message: None,
                      batch_lines=batch_lines)


def _eventually(condition: Any, timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return bool(condition())


def _pump_threads() -> int:
    return sum(t.name == "gristmill-fd-pump" for t in threading.enumerate())


def _shipper_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "gristmill-logs"]


def test_the_shipper_does_not_start_before_it_is_due() -> None:
    buffer, sent = LogBuffer(), []
    shipper = _shipper(buffer, sent, interval_s=60)
    buffer.add("stdout", "a line")
    shipper.start_when_due()
    assert _shipper_threads() == []
    shipper.stop()  # never started: nothing to join, nothing sent
    assert sent == [] and buffer.pending() == 1


def test_the_shipper_starts_at_its_first_heartbeat_and_sends_at_once() -> None:
    buffer, sent = LogBuffer(), []
    shipper = _shipper(buffer, sent, interval_s=0.05)
    buffer.add("stdout", "a line")
    time.sleep(0.06)
    shipper.start_when_due()
    assert _eventually(lambda: bool(sent))
    shipper.stop()
    assert [line["message"] for line in sent[0]] == ["a line"]
    assert _shipper_threads() == []


def test_the_shipper_starts_early_for_a_full_batch() -> None:
    buffer, sent = LogBuffer(batch_lines=3), []
    shipper = _shipper(buffer, sent, interval_s=60, batch_lines=3)
    for i in range(3):
        buffer.add("stdout", f"line {i}")
    shipper.start_when_due()
    assert _eventually(lambda: bool(sent))
    shipper.stop()
    assert [line["message"] for line in sent[0]] == ["line 0", "line 1", "line 2"]


def test_a_stopped_shipper_never_starts() -> None:
    buffer, sent = LogBuffer(), []
    shipper = _shipper(buffer, sent, interval_s=0)
    shipper.stop()
    shipper.start_when_due()
    shipper.start()
    assert _shipper_threads() == [] and sent == []


class _Lines:
    def __init__(self) -> None:
        self.buffer = LogBuffer()

    def messages(self) -> list[tuple[str, str]]:
        return [(line["stream"], line["message"]) for line in self.buffer.take()]


def _pipe_pump(name: str, lines: _Lines) -> tuple[_DescriptorPump, int, int]:
    read_fd, write_fd = os.pipe()
    echo_read, echo_write = os.pipe()
    return (_DescriptorPump(read_fd, echo_write, LineAssembler(name, lines.buffer)),
            write_fd, echo_read)


def test_one_thread_reads_both_descriptors_and_ticks() -> None:
    lines = _Lines()
    out, out_w, out_echo = _pipe_pump("stdout", lines)
    err, err_w, err_echo = _pipe_pump("stderr", lines)
    ticks: list[float] = []
    thread = _PumpThread([out, err], lambda: ticks.append(time.monotonic()), print)
    before = _pump_threads()
    thread.start()
    assert _pump_threads() == before + 1  # one for both descriptors
    os.write(out_w, b"to stdout\n")
    os.write(err_w, b"to stderr\n")
    os.close(err_w)  # every writer of one pipe gone: the other is still read, ticks go on
    assert _eventually(lambda: lines.buffer.pending() == 2)
    os.write(out_w, b"after the other closed\n")
    # read by the thread, not by close() below
    assert _eventually(lambda: lines.buffer.pending() == 3)
    assert _eventually(lambda: len(ticks) >= 4)  # ticks every TICK_S while it runs
    thread.stop()
    for pump in (out, err):
        pump.close()
    os.close(out_w)
    assert sorted(lines.messages()) == sorted([("stdout", "to stdout"),
                                               ("stderr", "to stderr"),
                                               ("stdout", "after the other closed")])
    assert os.read(out_echo, 1000) == b"to stdout\nafter the other closed\n"
    assert os.read(err_echo, 1000) == b"to stderr\n"


def test_ticks_go_on_when_the_step_closed_both_descriptors() -> None:
    lines = _Lines()
    out, out_w, _ = _pipe_pump("stdout", lines)
    err, err_w, _ = _pipe_pump("stderr", lines)
    os.close(out_w)
    os.close(err_w)
    ticks: list[Any] = []
    thread = _PumpThread([out, err], lambda: ticks.append(1), print)
    thread.start()
    ticking = _eventually(lambda: len(ticks) >= 3)
    thread.stop()
    for pump in (out, err):
        pump.close()
    assert ticking


def test_a_failing_tick_stops_the_ticks_not_the_reading() -> None:
    lines = _Lines()
    out, out_w, _ = _pipe_pump("stdout", lines)
    reports: list[str] = []
    calls: list[int] = []

    def tick() -> None:
        calls.append(1)
        raise RuntimeError("can't start new thread")

    thread = _PumpThread([out], tick, reports.append)
    thread.start()
    assert _eventually(lambda: bool(calls))
    os.write(out_w, b"still read\n")
    read_by_the_thread = _eventually(lambda: lines.buffer.pending() == 1)
    time.sleep(0.2)  # ticks would have come meanwhile
    thread.stop()
    out.close()
    os.close(out_w)
    assert read_by_the_thread
    assert lines.messages() == [("stdout", "still read")]
    assert calls == [1]
    assert len(reports) == 1 and "can't start new thread" in reports[0]
