"""bench/warm_phases.py and the control service it starts (bench/_phases_serve.py): a
call's notes are taken around the wrapped steps, sync or async, raising or not, and only
inside a call; they are written relative to the call's start; every step the bench names
still exists in the product (a renamed one would silently drop its phase); the phases are
medians over the calls that took the usual path, and over the slowest 1 % of them; the
client's calls are split around the service's notes, and the background work they
overlapped is counted; --pin-apart on one CPU is refused."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.scripts._bench_modules import ROOT, bench_module, run_on_one_cpu


def serve_module() -> ModuleType:
    return bench_module("_phases_serve")


def test_a_wrapped_step_is_noted_on_entry_and_exit_even_when_it_raises() -> None:
    serve = serve_module()

    def fails() -> None:
        raise ValueError("no")

    async def waits(value: int) -> int:
        await asyncio.sleep(0)
        return value * 2

    timed_fails, timed_waits = serve.timed("fails", fails), serve.timed("waits", waits)
    assert timed_fails.__wrapped__ is fails and timed_waits.__wrapped__ is waits

    async def answer() -> int:
        with pytest.raises(ValueError):
            timed_fails()
        return int(await timed_waits(21))

    assert asyncio.run(serve.call_root(lambda: answer())()) == 42
    (notes,) = serve._ended
    assert [event for event, _ in notes] == ["call+", "fails+", "fails-", "waits+",
                                             "waits-", "call-"]
    times = [at for _, at in notes]
    assert times == sorted(times)


def test_nothing_is_noted_outside_a_call() -> None:
    serve = serve_module()
    assert serve.timed("alone", lambda: 7)() == 7
    assert serve._ended == [] and serve._notes.get() is None


def test_notes_are_written_relative_to_the_calls_start_and_then_forgotten(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    serve = serve_module()
    out = tmp_path / "notes.jsonl"
    monkeypatch.setenv("GRISTMILL_PHASES_OUT", str(out))
    serve._ended.extend([[("call+", 10.0), ("a+", 10.25), ("call-", 10.5)],
                         [("call+", 20.0), ("call-", 20.125)]])
    serve.flush()
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines == [{"start": 10.0, "notes": [["call+", 0.0], ["a+", 0.25], ["call-", 0.5]]},
                     {"start": 20.0, "notes": [["call+", 0.0], ["call-", 0.125]]}]
    assert serve._ended == []
    serve.flush()  # nothing more to write: the file is left as it is
    assert len(out.read_text().splitlines()) == 2


def test_every_step_the_bench_wraps_still_exists_in_the_product() -> None:
    """In a process of its own: install() replaces the product's functions, and fails on
    one the product no longer has."""
    script = (
        "import _phases_serve as s\n"
        "from gristmill_platform.deployments import fast_path\n"
        "print(s.install(), hasattr(fast_path.EndpointFastPath._answer, '__wrapped__'),\n"
        "      hasattr(fast_path.read_body, '__wrapped__'))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT / "bench")})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["24", "True", "True"]


def test_phases_are_medians_over_the_calls_on_the_usual_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "bench"))  # it imports _env, endpoints by name
    bench = bench_module("warm_phases")
    usual = [[["call+", 0.0], ["a+", 0.000010], ["call-", 0.000030]],
             [["call+", 0.0], ["a+", 0.000020], ["call-", 0.000050]],
             [["call+", 0.0], ["a+", 0.000030], ["call-", 0.000040]]]
    other = [[["call+", 0.0], ["call-", 0.009]]]  # an error answered early, say
    rows, on_path = bench.phases(usual + other)
    assert on_path == 3
    # the slowest 1 % of three calls is the slowest one: 20 + 30 µs
    assert rows == [{"from": "call+", "to": "a+", "median_us": 20.0,
                     "slowest_1pct_median_us": 20.0},
                    {"from": "a+", "to": "call-", "median_us": 20.0,
                     "slowest_1pct_median_us": 30.0}]


def test_pin_apart_on_one_cpu_is_refused_before_anything_starts() -> None:
    refused = run_on_one_cpu("warm_phases.py", "--pin-apart")
    assert refused.returncode == 2
    assert "--pin-apart needs 2 CPUs or more" in refused.stderr


def test_the_clients_calls_are_split_around_the_services_notes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    bench = bench_module("warm_phases")
    # the service's notes of three calls (first note at start, last at start + span) and
    # of a warm-up call the client did not time (at 5.0)
    calls = [{"start": start, "notes": [["call+", 0.0], ["call-", span]]}
             for start, span in ((5.0, 0.0001), (1.0001, 0.0005), (2.0002, 0.0005),
                                 (3.0010, 0.0005))]
    starts, samples = [1.0, 2.0, 3.0, 4.0], [0.0010, 0.0010, 0.0020, 0.0010]
    spans = bench.around(samples, starts, calls)
    assert spans["matched"] == 3 and spans["of"] == 4  # nothing noted within the 4th
    # the slowest: 2,000 µs at the client, 1,000 before the first note, 500 to the last
    assert spans["slowest_1pct"] == {"client_us": 2000.0, "before_first_note_us": 1000.0,
                                     "first_to_last_note_us": 500.0,
                                     "after_last_note_us": 500.0}
    assert spans["all"]["client_us"] == 1000.0
    assert spans["all"]["before_first_note_us"] == 200.0


def test_background_work_is_counted_on_the_calls_it_overlapped(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    bench = bench_module("warm_phases")
    # 200 calls of 1 ms each second; the two slowest (the 1 %) take 5 ms
    starts = [float(i) for i in range(200)]
    samples = [0.001] * 198 + [0.005, 0.005]
    stretches = [("batch", 198.004, 198.006), ("batch", 199.002, 199.003),
                 ("batch", 10.0005, 10.0006),  # within an ordinary call
                 ("batch", 50.5, 51.0),  # between calls: none
                 ("checkpoint", 100.0, 150.0000001)]  # a long one ending in a call
    rows = {row["background"]: row for row in bench.overlaps(samples, starts, stretches)}
    assert rows["batch"]["stretches"] == 4
    assert rows["batch"]["slowest_1pct_pct"] == 100.0  # both slow calls
    assert rows["batch"]["all_calls_pct"] == 1.5  # 3 calls of 200
    assert rows["checkpoint"]["all_calls_pct"] == 25.5  # calls 100 to 150: 51 of 200
    assert rows["checkpoint"]["slowest_1pct_pct"] == 0.0


def test_a_background_stretch_is_noted_in_or_out_of_a_call() -> None:
    serve = serve_module()

    async def reload() -> str:
        await asyncio.sleep(0)
        return "done"

    assert serve.background("sync", lambda: 1)() == 1
    assert asyncio.run(serve.background("async", reload)()) == "done"
    serve.collection("start", {"generation": 2})
    serve.collection("stop", {"generation": 2})
    assert [kind for kind, _, _ in serve._background] == ["sync", "async", "gc generation 2"]
    assert all(start <= end for _, start, end in serve._background)
