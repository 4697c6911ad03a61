"""Mutation testing of the security- and data-critical modules, with mutmut 3.

mutmut 3 expects the code it mutates under ``./``, ``src/`` or ``source/`` and derives a
mutant's module name from its path, while this repository keeps the control service under
``platform/``. Rather than bend the repository, each run stages a copy laid out the way
mutmut wants (``.mutation/work/src/gristmill_platform``, ``tests/``, ``pyproject.toml`` with
a generated ``[tool.mutmut]`` section), runs ``mutmut run`` there, then reads mutmut's
results files and prints a per-module report that takes the equivalent mutants listed in
``tests/mutation/equivalent.toml`` out of the score.

An equivalent mutant is keyed by module, function, and the source line text before and
after the mutation, never by mutmut's mutant number (numbers shift when code is edited).
"""

from __future__ import annotations

import ast
import difflib
import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
# GRISTMILL_MUTATION_DIR lets two runs (say, a full one and a bounded one) coexist.
STAGE = Path(os.environ.get("GRISTMILL_MUTATION_DIR", ROOT / ".mutation"))
WORK = STAGE / "work"
# The package roots, as mutmut wants them: src/<package>.
PACKAGE_DIRS = {"gristmill_platform": ROOT / "platform" / "gristmill_platform"}

KILLED = {1: "killed", 3: "killed", 36: "timeout", 24: "timeout", -24: "timeout",
          152: "timeout", 255: "timeout", -11: "segfault", -9: "segfault", 37: "type check"}
# Everything else that was checked (survived, no tests, suspicious) counts as not killed.
NOT_CHECKED = None
SKIPPED = 34


@dataclass(frozen=True)
class Module:
    name: str
    path: str  # relative to the repository root
    tests: tuple[str, ...]

    @property
    def dotted(self) -> str:
        parts = Path(self.path).with_suffix("").parts
        return ".".join(parts[1:])  # platform/gristmill_platform/x.py -> gristmill_platform.x

    @property
    def staged(self) -> Path:
        return Path("src", *Path(self.path).parts[1:])


@dataclass(frozen=True)
class Config:
    min_score: float
    modules: tuple[Module, ...]


@dataclass(frozen=True)
class MutantKey:
    """What identifies a mutant across edits: where it is and what it changes."""

    module: str
    function: str
    original: str
    mutated: str


@dataclass(frozen=True)
class Equivalent:
    key: MutantKey
    reason: str


@dataclass
class Mutant:
    name: str
    key: MutantKey
    status: str  # killed | survived | no tests | timeout | ... | not checked


@dataclass
class ModuleReport:
    module: Module
    mutants: list[Mutant] = field(default_factory=list)
    equivalent: list[Mutant] = field(default_factory=list)

    @property
    def checked(self) -> list[Mutant]:
        return [m for m in self.mutants if m.status not in ("not checked", "skipped")]

    @property
    def killed(self) -> list[Mutant]:
        return [m for m in self.checked if m.status in set(KILLED.values())]

    @property
    def survived(self) -> list[Mutant]:
        return [m for m in self.checked if m.status not in set(KILLED.values())]

    @property
    def score(self) -> float | None:
        total = len(self.checked)
        return len(self.killed) / total if total else None


# -- configuration ---------------------------------------------------------------------------

def load_config(path: Path = HERE / "modules.toml") -> Config:
    data = tomllib.loads(path.read_text())
    modules = tuple(Module(m["name"], m["path"], tuple(m["tests"])) for m in data["module"])
    return Config(float(data.get("min_score", 0.95)), modules)


def load_equivalents(path: Path = HERE / "equivalent.toml") -> list[Equivalent]:
    if not path.exists():
        return []
    data = tomllib.loads(path.read_text())
    found = []
    for entry in data.get("mutant", []):
        missing = {"module", "function", "original", "mutated", "reason"} - set(entry)
        if missing or not str(entry.get("reason", "")).strip():
            lacks = ", ".join(sorted(missing)) or "a reason"
            raise SystemExit(f"{path}: entry {entry} lacks {lacks}")
        found.append(Equivalent(MutantKey(entry["module"], entry["function"],
                                          entry["original"], entry["mutated"]),
                                entry["reason"]))
    return found


# -- mutant keys -----------------------------------------------------------------------------

_MANGLED = re.compile(r"^(?:x_(?P<func>.+)|xǁ(?P<cls>[^ǁ]+)ǁ(?P<meth>.+))__mutmut_(?P<n>\d+|orig)$")


def function_of(mangled: str) -> str:
    """``x_verify__mutmut_3`` -> ``verify``; ``xǁUrlSignerǁverify__mutmut_3`` ->
    ``UrlSigner.verify``."""
    match = _MANGLED.match(mangled)
    if match is None:
        raise ValueError(f"not a mutmut mutant name: {mangled}")
    if match["func"] is not None:
        return match["func"]
    return f"{match['cls']}.{match['meth']}"


def mangled_prefix(function: str) -> str:
    """The inverse of function_of without the mutant number: what mutmut globs match."""
    if "." in function:
        cls, meth = function.split(".", 1)
        return f"xǁ{cls}ǁ{meth}"
    return f"x_{function}"


def _function_bodies(mutated_source: str) -> dict[str, list[str]]:
    """Each generated function (originals and mutants) -> its lines after the def line."""
    tree = ast.parse(mutated_source)
    lines = mutated_source.splitlines()
    bodies: dict[str, list[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and "__mutmut_" in node.name:
            # The signature may carry the mutation too (a default value): keep it, minus
            # the name, which differs between every variant by construction.
            start, end = node.lineno - 1, node.end_lineno or node.lineno
            text = lines[start:end]
            text[0] = text[0].replace(node.name, "<f>", 1)
            bodies[node.name] = text
    return bodies


def _side(lines: Iterable[str]) -> str:
    return " / ".join(line.strip() for line in lines if line.strip())


def mutant_keys(module: str, mutated_source: str, names: Iterable[str]) -> dict[str, MutantKey]:
    """The key of each mutant (``module.mangled__mutmut_N``) of one mutated file."""
    bodies = _function_bodies(mutated_source)
    keys: dict[str, MutantKey] = {}
    for name in names:
        mangled = name.rsplit(".", 1)[1]
        orig = bodies.get(mangled.rsplit("__mutmut_", 1)[0] + "__mutmut_orig")
        mutant = bodies.get(mangled)
        if orig is None or mutant is None:
            raise RuntimeError(f"mutant {name} not found in its mutated file")
        before: list[str] = []
        after: list[str] = []
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=orig, b=mutant,
                                                            autojunk=False).get_opcodes():
            if tag != "equal":
                before += orig[i1:i2]
                after += mutant[j1:j2]
        keys[name] = MutantKey(module, function_of(mangled), _side(before), _side(after))
    return keys


# -- staging and running ---------------------------------------------------------------------

def _mutmut_section(config: Config) -> str:
    tests = sorted({t for m in config.modules for t in m.tests})
    only = [str(m.staged) for m in config.modules]
    return ("\n[tool.mutmut]\n"
            'source_paths = ["src"]\n'
            f"only_mutate = {json.dumps(only)}\n"
            f"pytest_add_cli_args_test_selection = {json.dumps(tests)}\n"
            # the copied tests would otherwise be re-collected from the project's testpaths
            'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]\n')


def stage(config: Config) -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package, source in PACKAGE_DIRS.items():
        shutil.copytree(source, WORK / "src" / package, ignore=ignore)
    shutil.copytree(ROOT / "tests", WORK / "tests", ignore=ignore)
    (WORK / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text()
                                         + _mutmut_section(config))


def run_mutmut(names: Sequence[str], *, max_children: int, log: Path,
               max_seconds: float | None) -> tuple[int, bool]:
    """mutmut's exit code, and whether the time cap stopped it. mutmut saves each result
    as it comes and stops cleanly on SIGINT, so a capped run reports what it checked."""
    mutmut = Path(sys.executable).with_name("mutmut")
    command = [str(mutmut), "run", "--max-children", str(max_children), *names]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=WORK, stdout=out, stderr=subprocess.STDOUT,
                                   env=env)
        try:
            return process.wait(timeout=max_seconds), False
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            return 0, True


def status_of(exit_code: int | None) -> str:
    if exit_code is NOT_CHECKED:
        return "not checked"
    if exit_code == SKIPPED:
        return "skipped"
    if exit_code in KILLED:
        return KILLED[exit_code]
    return {0: "survived", 5: "no tests", 33: "no tests", 2: "interrupted"}.get(
        exit_code, "suspicious")


def collect(config: Config, equivalents: Sequence[Equivalent]) -> list[ModuleReport]:
    listed = {e.key for e in equivalents}
    reports = []
    for module in config.modules:
        mutated = WORK / "mutants" / module.staged
        meta_file = mutated.with_name(mutated.name + ".meta")
        if not meta_file.exists():  # mutmut was stopped before it generated this module's
            reports.append(ModuleReport(module))
            continue
        meta = json.loads(meta_file.read_text())
        codes: dict[str, int | None] = meta["exit_code_by_key"]
        keys = mutant_keys(module.dotted, mutated.read_text(), codes)
        report = ModuleReport(module)
        for name, code in sorted(codes.items(), key=lambda kv: _number(kv[0])):
            mutant = Mutant(name, keys[name], status_of(code))
            if mutant.key in listed and mutant.status != "not checked":
                report.equivalent.append(mutant)
            else:
                report.mutants.append(mutant)
        reports.append(report)
    return reports


def _number(name: str) -> tuple[str, int]:
    head, _, n = name.rpartition("__mutmut_")
    return head, int(n) if n.isdigit() else -1


# -- report ----------------------------------------------------------------------------------

def _toml_str(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def render(reports: Sequence[ModuleReport], min_score: float) -> tuple[str, bool]:
    """The report text, and whether every module reaches min_score."""
    rows = [("module", "mutants", "killed", "survived", "equivalent", "score")]
    ok = True
    for r in reports:
        score = r.score
        if score is not None and score < min_score:
            ok = False
        rows.append((r.module.name, str(len(r.checked) + len(r.equivalent)), str(len(r.killed)),
                     str(len(r.survived)), str(len(r.equivalent)),
                     "-" if score is None else f"{score:.1%}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    lines.append(f"(score = killed / (mutants - equivalent); required: {min_score:.0%} per module)")
    for r in reports:
        for m in r.survived:
            lines += ["", f"{m.status.upper()}: {r.module.path} {m.key.function}  [{m.name}]",
                      f"  - {m.key.original}", f"  + {m.key.mutated}",
                      "  if it is equivalent, add to tests/mutation/equivalent.toml:",
                      "  [[mutant]]", f"  module = {_toml_str(m.key.module)}",
                      f"  function = {_toml_str(m.key.function)}",
                      f"  original = {_toml_str(m.key.original)}",
                      f"  mutated = {_toml_str(m.key.mutated)}",
                      '  reason = "why no test can tell it from the original"']
    return "\n".join(lines), ok


def stale_equivalents(reports: Sequence[ModuleReport], equivalents: Sequence[Equivalent]
                      ) -> list[str]:
    """Entries that match no mutant, or match one a test kills: they should go."""
    seen = {m.key: m for r in reports for m in r.equivalent}
    problems = []
    for e in equivalents:
        mutant = seen.get(e.key)
        if mutant is None:
            problems.append(f"matches no mutant: {e.key}")
        elif mutant.status in set(KILLED.values()):
            problems.append(f"is killed by the tests, so it is not equivalent: {e.key}")
    return problems


# -- changed code (the bounded CI run) -------------------------------------------------------

def _git(*args: str) -> str | None:
    result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                            check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def default_base(fallback_commits: int) -> str | None:
    """Where the branch left main; on main itself (or without it), a few commits back;
    None when history is shorter than that (then everything counts as changed)."""
    head = _git("rev-parse", "HEAD")
    for ref in ("origin/main", "main"):
        base = _git("merge-base", "HEAD", ref)
        if base and base != head:
            return base
    return _git("rev-parse", "--verify", "--quiet", f"HEAD~{fallback_commits}")


def changed_lines(base: str, path: str) -> set[int] | None:
    """Lines of `path` (working tree) changed since `base`; None if git cannot tell."""
    diff = _git("diff", "-U0", "--no-color", base, "--", path)
    if diff is None:
        return None
    lines: set[int] = set()
    for match in re.finditer(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,(\d+))? @@", diff, re.MULTILINE):
        start, count = int(match[1]), int(match[2] or 1)
        # a pure deletion (count 0) changes the code around the line it removed
        lines.update(range(start, start + max(count, 1)))
    return lines


def functions_touching(source: str, lines: set[int]) -> list[str]:
    """Functions (``f`` or ``Class.method``, as mutmut names them) whose text includes
    one of `lines`."""
    found = []
    tree = ast.parse(source)
    scopes: list[tuple[str, ast.AST]] = [("", tree)]
    while scopes:
        prefix, node = scopes.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef) and not prefix:
                scopes.append((child.name, child))
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                if lines & set(range(first, (child.end_lineno or child.lineno) + 1)):
                    found.append(f"{prefix}.{child.name}" if prefix else child.name)
    return sorted(found)


def changed_globs(config: Config, base: str | None) -> list[str] | None:
    """mutmut name globs for the functions changed since base; None means all of them."""
    if base is None:
        return None
    globs = []
    for module in config.modules:
        lines = changed_lines(base, module.path)
        if lines is None:
            return None
        if lines:
            source = (ROOT / module.path).read_text()
            globs += [f"{module.dotted}.{mangled_prefix(f)}__mutmut_*"
                      for f in functions_touching(source, lines)]
    return globs


# -- entry point -----------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="scripts/mutation.sh", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changed", action="store_true",
                        help="only mutants of functions changed since --base (the CI form)")
    parser.add_argument("--base", help="git revision to diff against (default: the merge "
                        "base with origin/main, else HEAD~FALLBACK)")
    parser.add_argument("--fallback-commits", type=int, default=10)
    parser.add_argument("--module", action="append", default=[],
                        help="only this module (by its name in modules.toml); repeatable")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="stop mutmut after this long and report what it checked "
                        "(mutmut runs the cheapest mutants first)")
    args = parser.parse_args(argv)

    config = load_config()
    if args.module:
        unknown = set(args.module) - {m.name for m in config.modules}
        if unknown:
            parser.error(f"unknown module(s): {', '.join(sorted(unknown))}")
        config = Config(config.min_score,
                        tuple(m for m in config.modules if m.name in args.module))
    equivalents = load_equivalents()

    names: list[str] = []
    if args.changed:
        base = args.base or default_base(args.fallback_commits)
        globs = changed_globs(config, base)
        if globs is None:
            print(f"mutation: no usable base ({base}); running every mutant")
        elif not globs:
            print(f"mutation: no function of the mutation-tested modules changed since "
                  f"{base[:12] if base else base}; nothing to run")
            return 0
        else:
            print(f"mutation: {len(globs)} function(s) changed since {base[:12] if base else base}")
            names = globs

    STAGE.mkdir(exist_ok=True)
    log = STAGE / "mutmut.log"
    started = time.monotonic()
    stage(config)
    print(f"mutation: running mutmut over {', '.join(m.name for m in config.modules)} "
          f"(log: {log})", flush=True)
    code, capped = run_mutmut(names, max_children=args.max_children, log=log,
                              max_seconds=args.max_seconds)
    elapsed = time.monotonic() - started
    if code != 0:
        text = log.read_text(errors="replace")
        if names and "Filtered for specific mutants, but nothing matches" in text:
            print("mutation: the changed functions have no mutants; nothing to run")
            return 0
        print(text[-4000:])
        print(f"mutation: mutmut failed (exit {code}); see {log}")
        return 1
    reports = collect(config, equivalents)
    text, ok = render(reports, config.min_score)
    print(text)
    print(f"mutation: {elapsed:.0f} s")
    if capped:
        unchecked = sum(1 for r in reports for m in r.mutants if m.status == "not checked"
                        and (not names or any(fnmatch.fnmatch(m.name, n) for n in names)))
        print(f"mutation: stopped at the {args.max_seconds:.0f} s cap; {unchecked} mutant(s) "
              "not checked (the scores count the checked ones)")
    if not names and not args.module and not capped:
        problems = stale_equivalents(reports, equivalents)
        for problem in problems:
            print(f"tests/mutation/equivalent.toml: entry {problem}")
        ok = ok and not problems
    if not ok:
        print("mutation: FAILED")
    return 0 if ok else 1
