"""What a forked elastic worker's kernel time is made of, on this machine.

`bench/elastic_run.py` reports the forked worker's CPU per execution and its kernel share,
which is most of it on some hosts (7 of 12 ms on the sixteenth machine) and far less on
others. A forked child shares every page of its fork server's memory until one of the two
writes to it; the first write to each such page is a copy-on-write fault, handled by the
kernel. The interpreter writes to objects it only reads in Python terms (reference counts,
the type attribute cache, the specializing interpreter's counters in code objects), so a
child running code its fork server imported takes such faults on every page it touches.

This bench forks from a parent prepared as the fork server is (the runner imported, the
execution-context module made, the heap frozen: sdk/gristmill/runtime/zygote.py) and
measures, per child, its user and kernel CPU and its minor faults:

  fork_and_exit   the child exits at once (os._exit): the floor of any forked execution
  write_pages     the child writes one byte to each of --pages pages of a buffer the parent
                  filled before forking: that many copy-on-write faults more, nothing else
  warm_path       the child runs a small piece of the runner's kind of work (JSON, paths,
                  logging, text streams), once with the parent having never run it, once
                  with the parent having run it 50 times before forking (the --warm half):
                  how much of a child's faults come from code its parent never ran

From the first two it derives the kernel time of one copy-on-write fault, the figure that
decides how much of an elastic execution's CPU the host's memory management takes. The
parent's own CPU and faults per fork (the page tables' copy; the pages its loop writes
again after each fork) are reported too. Each case runs in turns with the others
(--rounds of --children children each).

Then the real fork server (`python -m gristmill.runtime zygote`, as the local backend
starts it), asked for children of a module that exits at once: its own faults and kernel
time per fork, the cost of its loop beside the bare loop's above; with --baseline DIR, the
fork server of that source tree too, after it (--tree DIR2 runs this side from a source
tree as well). Writes bench/results/fork_faults.json.

    .venv/bin/python bench/fork_faults.py [--children 200] [--rounds 3] [--pages 1000]
        [--baseline DIR] [--tree DIR2]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import logging
import os
import pathlib
import platform
import resource
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "fork_faults.json"
PAGE = os.sysconf("SC_PAGE_SIZE")
WARM_RUNS = 50


def runner_kind_of_work() -> None:
    """A little of what the runner does on every execution, none of it step code."""
    for i in range(3):
        text = json.dumps({"a": [1, 2, {"b": "c"}], "x": "y" * 10, "n": i})
        json.loads(text)
        path = pathlib.Path("/tmp") / "a" / f"b{i}.txt"
        str(path.with_suffix(".json"))
        _ = path.name, path.parent
        logging.getLogger("gristmill.bench").debug("line %s", i)
        io.StringIO("abc").read()
        sorted({"z": 1, "a": 2}.items())


def prepare_as_the_fork_server() -> None:
    """What sdk/gristmill/runtime/zygote.py does before it serves: import the runner, make
    the execution-context module, freeze the heap."""
    from gristmill.runtime.runner import craft_context_module

    craft_context_module()


def per_child(body: Callable[[], None], children: int) -> dict[str, float]:
    """Fork `children` children one after the other, each running body then exiting;
    their CPU and faults (from the parent's reaped-children counters), and the parent's
    own CPU per fork."""
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    before_self = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(children):
        pid = os.fork()
        if pid == 0:
            try:
                body()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    after_self = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "user_ms": (after_children.ru_utime - before_children.ru_utime) / children * 1000,
        "kernel_ms": (after_children.ru_stime - before_children.ru_stime) / children * 1000,
        "minor_faults": (after_children.ru_minflt - before_children.ru_minflt) / children,
        "parent_kernel_ms": (after_self.ru_stime - before_self.ru_stime) / children * 1000,
        "parent_minor_faults": (after_self.ru_minflt - before_self.ru_minflt) / children,
    }


def merged(samples: list[dict[str, float]]) -> dict[str, float]:
    """The rounds' figures, each averaged (every round forked as many children)."""
    return {key: round(sum(s[key] for s in samples) / len(samples), 3) for key in samples[0]}


def fault_cost(floor: dict[str, float], written: dict[str, float]) -> dict[str, float]:
    """The kernel time of one copy-on-write fault: what writing to the pages added to the
    floor's kernel time, over the faults it added."""
    faults = written["minor_faults"] - floor["minor_faults"]
    if faults <= 0:
        raise ValueError("writing to the shared pages took no more faults than the floor")
    kernel_us = (written["kernel_ms"] - floor["kernel_ms"]) * 1000
    return {"faults_added": round(faults), "kernel_us_per_fault": round(kernel_us / faults, 2)}


def measure(children: int, rounds: int, pages: int) -> dict[str, Any]:
    prepare_as_the_fork_server()
    shared = bytearray(pages * PAGE)  # filled (zeroed) here: every page is the parent's
    for offset in range(0, len(shared), PAGE):
        shared[offset] = 1

    def write_pages() -> None:
        for offset in range(0, len(shared), PAGE):
            shared[offset] = 2

    gc.collect()
    gc.freeze()
    cases: dict[str, Callable[[], None]] = {
        "fork_and_exit": lambda: None, "write_pages": write_pages,
        "warm_path_cold_parent": runner_kind_of_work}
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
    for round_ in range(rounds):
        names = list(cases) if round_ % 2 == 0 else list(reversed(cases))
        for name in names:
            samples[name].append(per_child(cases[name], children))
    # The parent runs the work now, as a fork server that had run it would have: the
    # children of this half inherit its caches and its code's warm-up counters.
    for _ in range(WARM_RUNS):
        runner_kind_of_work()
    gc.collect()
    gc.freeze()
    samples["warm_path_warm_parent"] = [per_child(runner_kind_of_work, children)
                                        for _ in range(rounds)]
    figures = {name: merged(values) for name, values in samples.items()}
    return {"per_child": figures,
            "copy_on_write": fault_cost(figures["fork_and_exit"], figures["write_pages"])}


EXITS_AT_ONCE = "import os\nos._exit(0)\n"


async def fork_server_loop(name: str, extra_env: dict[str, str], module_dir: Path,
                           children: int, rounds: int) -> dict[str, float]:
    """The real fork server (`python -m gristmill.runtime zygote`, of this installation or
    of a source tree), started and asked as the local backend does (its Zygote client),
    for children of a module that exits at once: what its own loop costs per fork, in
    faults and kernel time, after 20 forks to warm it."""
    from _env import proc_counters  # type: ignore[import-not-found]

    from gristmill_platform.executors.zygotes import Zygote

    path = os.pathsep.join(filter(None, [extra_env.get("PYTHONPATH"), str(module_dir)]))
    zygote = Zygote(sys.executable, {**os.environ, **extra_env, "PYTHONPATH": path},
                    module_dir / name.replace(" ", "-").replace("/", "_"))
    await zygote.start()
    assert zygote.pid is not None

    async def fork_one() -> None:
        child = await zygote.fork("gristmill_bench_exits", [],
                                  {"PATH": os.environ.get("PATH", "")}, str(module_dir))
        if await child.wait() != 0:
            raise SystemExit(f"{name}: a child of the fork server did not exit with 0")

    samples: list[dict[str, float]] = []
    try:
        for _ in range(20):
            await fork_one()
        for _ in range(rounds):
            faults_before, _, kernel_before = proc_counters(zygote.pid)
            for _ in range(children):
                await fork_one()
            faults_after, _, kernel_after = proc_counters(zygote.pid)
            samples.append({"minor_faults": (faults_after - faults_before) / children,
                            "kernel_ms": (kernel_after - kernel_before) / children * 1000})
    finally:
        await zygote.stop()
    return merged(samples)


def fork_server_loops(children: int, rounds: int, baseline: Path | None,
                      tree: Path | None) -> dict[str, dict[str, float]]:
    """The real fork servers' own cost per fork, this side's, then --baseline's. Run
    after `measure`: what it imports (the platform's executor, httpx and psutil through
    the benches' _env) would make that parent larger than a fork server."""
    from _env import source_tree_env, tree_env  # type: ignore[import-not-found]

    with tempfile.TemporaryDirectory(prefix="gristmill-bench-") as work:
        module_dir = Path(work)
        (module_dir / "gristmill_bench_exits.py").write_text(EXITS_AT_ONCE)
        sides = [("this tree" if tree is None else f"tree ({tree})", tree_env(tree))]
        if baseline is not None:
            sides.append((f"baseline ({baseline})", source_tree_env(baseline)))
        return {name: asyncio.run(fork_server_loop(name, extra, module_dir, children, rounds))
                for name, extra in sides}


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return round(int(statm.read().split()[1]) * PAGE / 2**20, 1)


def kernel_setting(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another source tree: its fork server's loop is measured too")
    parser.add_argument("--tree", type=Path, default=None,
                        help="run this side's fork server from a source tree (PYTHONPATH)")
    args = parser.parse_args()
    for name in ("children", "rounds", "pages"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    figures = measure(args.children, args.rounds, args.pages)
    parent_rss_mib = rss_mib()
    loops = fork_server_loops(args.children, args.rounds, args.baseline, args.tree)
    results = {
        "method": {"children": args.children, "rounds": args.rounds, "pages": args.pages,
                   "page_size": PAGE},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "kernel": platform.release(), "parent_rss_mib": parent_rss_mib,
                    "transparent_hugepages": kernel_setting(
                        "/sys/kernel/mm/transparent_hugepage/enabled"),
                    "load_average_1m": round(os.getloadavg()[0], 2)},
        **figures,
        "fork_server_loop_per_fork": loops,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"forked children of a parent prepared as the fork server "
          f"({results['machine']['parent_rss_mib']} MiB resident), per child:")
    print(f"{'':<24}{'user ms':>9}{'kernel ms':>11}{'faults':>8}"
          f"{'parent kernel ms':>18}{'parent faults':>15}")
    for name, row in figures["per_child"].items():
        print(f"{name:<24}{row['user_ms']:>9.2f}{row['kernel_ms']:>11.2f}"
              f"{row['minor_faults']:>8.0f}{row['parent_kernel_ms']:>18.2f}"
              f"{row['parent_minor_faults']:>15.0f}")
    print("the fork server's own loop, per fork (a child that exits at once):")
    for name, row in loops.items():
        print(f"  {name:<40}{row['minor_faults']:>6.0f} faults{row['kernel_ms']:>8.2f} ms kernel")
    cow = figures["copy_on_write"]
    print(f"one copy-on-write fault: {cow['kernel_us_per_fault']} us of kernel time "
          f"({cow['faults_added']} faults added by writing {args.pages} pages)")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
