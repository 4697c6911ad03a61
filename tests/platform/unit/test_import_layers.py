"""The import graph of the product: the layers of .importlinter hold, and no module
imports itself back through others (docs/development.md#how-the-app-is-wired)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("gristmill", "gristmill_platform")


def test_the_layer_contracts_are_kept() -> None:
    # In a process of its own: import-linter's CLI configures logging with dictConfig,
    # which disables every logger already created in this one (later tests read them).
    lint = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")),
         "--config", str(ROOT / ".importlinter"), "--no-cache"],
        capture_output=True, text=True, cwd=ROOT, check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def import_loops(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    loops: list[list[str]] = []
    for start in sorted(graph.modules):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            module, imported = work[-1]
            following = next(imported, None)
            if following is not None:
                if following not in index:
                    index[following] = low[following] = len(index)
                    stack.append(following)
                    on_stack.add(following)
                    work.append((following, iter(sorted(
                        graph.find_modules_directly_imported_by(following)))))
                elif following in on_stack:
                    low[module] = min(low[module], index[following])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[module])
            if low[module] == index[module]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == module:
                        break
                if len(component) > 1:
                    loops.append(sorted(component))
    return loops


def test_no_module_of_the_product_is_in_an_import_loop() -> None:
    # lazy (function-level) and TYPE_CHECKING imports count: they are loops all the same
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    assert import_loops(graph) == []


def test_the_loop_finder_finds_a_loop() -> None:
    graph = grimp.ImportGraph()
    for module in ("a", "a.b", "a.c", "a.d"):
        graph.add_module(module)
    graph.add_import(importer="a.b", imported="a.c")
    graph.add_import(importer="a.c", imported="a.b")
    graph.add_import(importer="a.c", imported="a.d")
    assert import_loops(graph) == [["a.b", "a.c"]]
