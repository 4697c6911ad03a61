"""Where a warm call's time goes in the control service, phase by phase, beside the floor.

Three servers in turns, sequential calls from one keep-alive client each (as
bench/endpoints.py's sequential blocks): the bare FastAPI echo (the floor), a low-latency
endpoint on `gristmill up` (its p50 is the figure), and the same endpoint on a second
`gristmill up` whose fast path notes when each call enters and leaves the steps it goes
through (bench/_phases_serve.py wraps them; the product is not changed). The phases are
the median time between two consecutive notes over the calls that took the usual path;
what the wrappers add (about a microsecond each) is in them, not in the p50 above.

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
    """Median µs between consecutive notes of the calls on the usual path, and how many
    calls that is."""
    path = usual_path(calls)
    taken = [call for call in calls if [event for event, _ in call] == path]
    rows = []
    for index in range(1, len(path)):
        gaps = [(call[index][1] - call[index - 1][1]) * 1e6 for call in taken]
        rows.append({"from": path[index - 1], "to": path[index],
                     "median_us": round(statistics.median(gaps), 1)})
    return rows, len(taken)


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

    rows, on_path = phases(calls)
    by_name = {target.name: target for target in targets}
    p50 = {name: statistics.median(target.samples) * 1e3 for name, target in by_name.items()}
    results = {
        "method": {"calls_per_block": args.calls, "rounds": args.rounds,
                   "tree": str(args.tree) if args.tree else None, "pinned": pinned},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_1m": round(os.getloadavg()[0], 2)},
        "sequential": {name: latency(target.samples) for name, target in by_name.items()},
        "p50_over_bare": round(p50["gristmill_low_latency"] / p50["bare_fastapi"], 2),
        "phases": {"calls": len(calls), "on_the_usual_path": on_path, "steps": rows,
                   "sum_us": round(sum(row["median_us"] for row in rows), 1)},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    for name in by_name:
        print(f"{name:<24} p50 {p50[name]:.3f} ms")
    print(f"low-latency p50 / bare FastAPI p50: {results['p50_over_bare']}x")
    print(f"\nphases of the noted environment's calls (median µs, {on_path} of "
          f"{len(calls)} calls on the usual path):")
    for row in rows:
        print(f"  {row['from']:<30} -> {row['to']:<30} {row['median_us']:>7.1f}")
    print(f"  {'sum of the medians':<64} {results['phases']['sum_us']:>7.1f}")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
