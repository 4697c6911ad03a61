"""Where a warm call's time goes in the control service, phase by phase, beside the floor.

Three servers in turns, sequential calls from one keep-alive client each (as
bench/endpoints.py's sequential blocks): the bare FastAPI echo (the floor), a low-latency
endpoint on `gristmill up` (its p50 is the figure), and the same endpoint on a second
`gristmill up` whose fast path notes when each call enters and leaves the steps it goes
through (bench/_phases_serve.py wraps them; the product is not changed). The phases are
the median time between two consecutive notes over the calls that took the usual path,
and the same over the slowest 1 % of them (where the tail's time goes); what the wrappers
add (about a microsecond each) is in them, not in the p50 above. Each call the client
timed is also matched with the service's notes of it (both read the system's monotonic
clock), to split the client's time into before the first note (the way in), the notes,
and after the last (the way out), for all calls and for the client's slowest 1 %; and,
for each kind of the service's background work (bench/_phases_serve.py notes its
stretches), the share of all calls and of the slowest 1 % that overlapped it.

"worker round trip" runs from the request's write to the worker's answer: on these
machines the worker, woken by the write, usually runs on the writing CPU before the write
returns, so the time is the worker's whole turn whichever side of the write it falls.
--pin-apart (2 CPUs or more) puts the control services on the first CPU and their
workers and this process on the others (bench/_env.pin_apart), once the workers run.
Writes bench/results/warm_phases.json.

    .venv/bin/python bench/warm_phases.py [--calls 500] [--rounds 6] [--pin-apart]
        [--tree DIR]
"""

from __future__ import annotations

import argparse
import bisect
import collections
import json
import os
import platform
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from _env import (  # type: ignore[import-not-found]
    add_tree_option,
    pin_apart,
    start_env,
    tree_env,
)
from endpoints import (  # type: ignore[import-not-found]
    BARE_APP,
    Target,
    deploy,
    free_port,
    gristmill_target,
    latency,
    sequential,
    server,
)

HERE = Path(__file__).parent
RESULTS = HERE / "results" / "warm_phases.json"


def usual_path(calls: list[list[list[Any]]]) -> list[str]:
    """The sequence of notes most calls went through."""
    counts = collections.Counter(tuple(event for event, _ in call) for call in calls)
    return list(counts.most_common(1)[0][0])


def phases(calls: list[list[list[Any]]]) -> tuple[list[dict[str, Any]], int]:
    """Per step between two consecutive notes, over the calls that took the usual path:
    the median µs, and the median µs over the slowest 1 % of those calls (by the time from
    the first note to the last): which steps the tail's calls spend longer in. Also how
    many calls took the usual path."""
    path = usual_path(calls)
    taken = [call for call in calls if [event for event, _ in call] == path]
    taken.sort(key=lambda call: call[-1][1] - call[0][1])
    slowest = taken[-max(1, len(taken) // 100):]
    rows = []
    for index in range(1, len(path)):
        def gap(call: list[list[Any]], index: int = index) -> float:
            return float((call[index][1] - call[index - 1][1]) * 1e6)
        rows.append({"from": path[index - 1], "to": path[index],
                     "median_us": round(statistics.median(gap(c) for c in taken), 1),
                     "slowest_1pct_median_us": round(
                         statistics.median(gap(c) for c in slowest), 1)})
    return rows, len(taken)


def around(samples: list[float], starts: list[float], calls: list[dict[str, Any]]
           ) -> dict[str, Any]:
    """The client's calls, each matched with the service's call whose first note falls
    within it (both clocks are the system's monotonic one): median µs from the client's
    start to the first note (the way in: the client, the kernel, uvicorn, an event loop
    busy with other work), from the first note to the last, and from the last to the
    client's end (the way out), over all matched calls and over the slowest 1 % of them
    by the client's time."""
    service = sorted((call["start"], call["notes"][-1][1]) for call in calls)
    firsts = [first for first, _ in service]
    matched: list[tuple[float, float, float, float]] = []
    for start, took in zip(starts, samples, strict=True):
        index = bisect.bisect_left(firsts, start)
        if index < len(firsts) and firsts[index] <= start + took:
            first, span = service[index]
            matched.append((took, first - start, span, start + took - first - span))
    matched.sort()

    def medians(rows: list[tuple[float, float, float, float]]) -> dict[str, float]:
        return {name: round(statistics.median(row[column] for row in rows) * 1e6, 1)
                for column, name in enumerate(("client_us", "before_first_note_us",
                                               "first_to_last_note_us",
                                               "after_last_note_us"))}

    slowest = matched[-max(1, len(matched) // 100):]
    return {"matched": len(matched), "of": len(samples), "all": medians(matched),
            "slowest_1pct": medians(slowest)}


def overlaps(samples: list[float], starts: list[float],
             stretches: list[tuple[str, float, float]]) -> list[dict[str, Any]]:
    """For each kind of the service's background work: the share of the client's calls
    that overlapped a stretch of it, over all calls and over the slowest 1 % (a kind
    much more often under the slowest than under all is where the tail comes from), and
    its stretches' count and median length."""
    calls = sorted(zip(samples, starts, strict=True))
    slowest = calls[-max(1, len(calls) // 100):]
    kinds: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    for kind, start, end in stretches:
        kinds[kind].append((start, end))
    rows = []
    for kind, spans in sorted(kinds.items()):
        spans.sort()
        begins = [start for start, _ in spans]
        latest_end: list[float] = []  # the latest end among the stretches up to each
        for _, end in spans:
            latest_end.append(max(end, latest_end[-1]) if latest_end else end)

        def share(group: list[tuple[float, float]], begins: list[float] = begins,
                  latest_end: list[float] = latest_end) -> float:
            hit = 0
            for took, start in group:
                last = bisect.bisect_left(begins, start + took) - 1
                hit += last >= 0 and latest_end[last] > start
            return round(100 * hit / len(group), 1)

        rows.append({"background": kind, "stretches": len(spans),
                     "median_ms": round(statistics.median(e - s for s, e in spans) * 1e3, 3),
                     "all_calls_pct": share(calls), "slowest_1pct_pct": share(slowest)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500, help="calls per block")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--pin-apart", action="store_true",
                        help="control services on the first CPU, the rest on the others")
    add_tree_option(parser)
    args = parser.parse_args()
    if args.pin_apart and len(os.sched_getaffinity(0)) < 2:
        parser.error("--pin-apart needs 2 CPUs or more")

    with tempfile.TemporaryDirectory(prefix="gristmill-bench-") as scratch, \
            ExitStack() as stack:
        work = Path(scratch)
        (work / "bare_app.py").write_text(BARE_APP)
        port = free_port()
        bare = stack.enter_context(server(
            [sys.executable, "-m", "uvicorn", "bare_app:app", "--port", str(port),
             "--log-level", "warning", "--no-access-log"], work,
            f"http://127.0.0.1:{port}/echo", "bare_fastapi"))
        source = tree_env(args.tree)
        plain_env = start_env(work / "plain", extra_env=source)
        stack.callback(plain_env.stop)
        notes_file = work / "phases.jsonl"
        phased_env = start_env(work / "phased", module="_phases_serve", extra_env={
            **source, "GRISTMILL_PHASES_OUT": str(notes_file),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE),
                                                         source.get("PYTHONPATH")]))})
        stack.callback(phased_env.stop)
        targets: list[Target] = [bare]
        for env, label in ((plain_env, "gristmill_low_latency"),
                           (phased_env, "gristmill_phases_noted")):
            _, tokens = deploy(env, only=frozenset({"low"}))
            targets.append(gristmill_target(env, tokens, "low", label))
        pinned = (pin_apart([plain_env.process.pid, phased_env.process.pid])
                  if args.pin_apart else None)
        for round_ in range(args.rounds):
            shift = round_ % len(targets)
            for target in targets[shift:] + targets[:shift]:
                sequential(target, args.calls)
        phased_env.stop()  # its notes are written at exit
        calls = [json.loads(line) for line in notes_file.read_text().splitlines()]
        background_file = notes_file.with_name(notes_file.name + ".background")
        stretches = ([tuple(json.loads(line)) for line in
                      background_file.read_text().splitlines()]
                     if background_file.exists() else [])

    rows, on_path = phases([call["notes"] for call in calls])
    by_name = {target.name: target for target in targets}
    noted = by_name["gristmill_phases_noted"]
    spans = around(noted.samples, noted.starts, calls)
    behind = overlaps(noted.samples, noted.starts, stretches)
    p50 = {name: statistics.median(target.samples) * 1e3 for name, target in by_name.items()}
    results = {
        "method": {"calls_per_block": args.calls, "rounds": args.rounds,
                   "tree": str(args.tree) if args.tree else None, "pinned": pinned},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_1m": round(os.getloadavg()[0], 2)},
        "sequential": {name: latency(target.samples) for name, target in by_name.items()},
        "p50_over_bare": round(p50["gristmill_low_latency"] / p50["bare_fastapi"], 2),
        "phases": {"calls": len(calls), "on_the_usual_path": on_path, "steps": rows,
                   "sum_us": round(sum(row["median_us"] for row in rows), 1),
                   "slowest_1pct_sum_us": round(
                       sum(row["slowest_1pct_median_us"] for row in rows), 1),
                   "around_the_notes": spans, "background_work": behind},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    for name in by_name:
        print(f"{name:<24} p50 {p50[name]:.3f} ms")
    print(f"low-latency p50 / bare FastAPI p50: {results['p50_over_bare']}x")
    print(f"\nphases of the noted environment's calls ({on_path} of {len(calls)} calls on "
          "the usual path), µs: median, and median over the slowest 1 % of them:")
    for row in rows:
        print(f"  {row['from']:<30} -> {row['to']:<30} {row['median_us']:>7.1f} "
              f"{row['slowest_1pct_median_us']:>8.1f}")
    print(f"  {'sums':<64} {results['phases']['sum_us']:>7.1f} "
          f"{results['phases']['slowest_1pct_sum_us']:>8.1f}")
    print(f"\nthe client's calls to the noted environment ({spans['matched']} of "
          f"{spans['of']} matched), µs: median, and median over the slowest 1 %:")
    for key, label in (("client_us", "as the client measured it"),
                       ("before_first_note_us", "before the first note"),
                       ("first_to_last_note_us", "first note to last"),
                       ("after_last_note_us", "after the last note")):
        print(f"  {label:<64} {spans['all'][key]:>7.1f} {spans['slowest_1pct'][key]:>8.1f}")
    print("\nthe service's background work: calls it overlapped, % of all and of the "
          "slowest 1 %")
    for row in behind:
        print(f"  {row['background']:<36} {row['stretches']:>6} stretches, median "
              f"{row['median_ms']:>7.3f} ms {row['all_calls_pct']:>7.1f} "
              f"{row['slowest_1pct_pct']:>7.1f}")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
