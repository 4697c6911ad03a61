"""The mutation runner's own logic: stable mutant keys, the changed-function selection,
the score and the equivalent-mutant bookkeeping (mutmut itself is not run here)."""

from __future__ import annotations

import textwrap

import pytest

from tests.mutation import runner
from tests.mutation.runner import (
    Equivalent,
    Module,
    ModuleReport,
    Mutant,
    MutantKey,
    function_of,
    functions_touching,
    mangled_prefix,
    mutant_keys,
    render,
    stale_equivalents,
)

# What mutmut 3 writes for a module: each function's original and its mutants side by side.
MUTATED = textwrap.dedent('''
    def check(x):
        return _trampoline(x)

    def x_check__mutmut_orig(x):
        if x < 3:
            return "low"
        return "high"

    def x_check__mutmut_1(x):
        if x <= 3:
            return "low"
        return "high"

    def x_check__mutmut_2(x):
        if x < 3:
            return "XXlowXX"
        return "high"

    class Signer:
        def xǁSignerǁsign__mutmut_orig(self, code="A"):
            return code

        def xǁSignerǁsign__mutmut_1(self, code="XXAXX"):
            return code
''')


def test_mutants_are_keyed_by_function_and_changed_text_not_by_number() -> None:
    keys = mutant_keys("pkg.mod", MUTATED, ["pkg.mod.x_check__mutmut_1",
                                            "pkg.mod.x_check__mutmut_2",
                                            "pkg.mod.xǁSignerǁsign__mutmut_1"])
    assert keys == {
        "pkg.mod.x_check__mutmut_1": MutantKey("pkg.mod", "check", "if x < 3:", "if x <= 3:"),
        "pkg.mod.x_check__mutmut_2": MutantKey("pkg.mod", "check", 'return "low"',
                                               'return "XXlowXX"'),
        "pkg.mod.xǁSignerǁsign__mutmut_1": MutantKey(
            "pkg.mod", "Signer.sign", 'def <f>(self, code="A"):', 'def <f>(self, code="XXAXX"):'),
    }
    # renumbering does not change a key
    renumbered = MUTATED.replace("x_check__mutmut_1", "x_check__mutmut_9")
    assert mutant_keys("pkg.mod", renumbered, ["pkg.mod.x_check__mutmut_9"])[
        "pkg.mod.x_check__mutmut_9"] == keys["pkg.mod.x_check__mutmut_1"]


def test_mutant_missing_from_its_file_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not found"):
        mutant_keys("pkg.mod", MUTATED, ["pkg.mod.x_other__mutmut_1"])


@pytest.mark.parametrize(("mangled", "function"), [
    ("x_check__mutmut_12", "check"), ("x__private__mutmut_orig", "_private"),
    ("xǁUrlSignerǁverify_post_policy__mutmut_3", "UrlSigner.verify_post_policy"),
])
def test_function_names_round_trip(mangled: str, function: str) -> None:
    assert function_of(mangled) == function
    assert mangled.startswith(mangled_prefix(function) + "__mutmut_")


def test_functions_touching_changed_lines() -> None:
    source = textwrap.dedent('''\
        import os

        def a():
            return 1

        class K:
            @property
            def b(self):
                return 2

            def c(self):
                return 3
        ''')
    assert functions_touching(source, {1}) == []
    assert functions_touching(source, {4}) == ["a"]
    assert functions_touching(source, {7}) == ["K.b"]  # a decorator belongs to its function
    assert functions_touching(source, {4, 12}) == ["K.c", "a"]


def _report(statuses: list[str], equivalent: int = 0) -> ModuleReport:
    module = Module("m", "platform/gristmill_platform/m.py", ())
    key = MutantKey("gristmill_platform.m", "f", "a", "b")
    report = ModuleReport(module, [Mutant(f"n{i}", key, s) for i, s in enumerate(statuses)])
    report.equivalent = [Mutant("e", key, "survived")] * equivalent
    return report


def test_score_excludes_equivalent_and_unchecked_mutants() -> None:
    report = _report(["killed"] * 18 + ["timeout", "survived", "not checked"], equivalent=2)
    assert (len(report.checked), len(report.killed), len(report.survived)) == (20, 19, 1)
    assert report.score == 0.95
    text, ok = render([report], 0.95)
    assert ok
    assert text.splitlines()[1].split() == ["m", "22", "19", "1", "2", "95.0%"]
    assert "SURVIVED: platform/gristmill_platform/m.py f" in text
    assert 'original = "a"' in text


def test_a_module_under_the_minimum_fails() -> None:
    _, ok = render([_report(["killed"] * 18 + ["survived", "no tests"])], 0.95)
    assert not ok
    _, empty_ok = render([_report([])], 0.95)  # nothing checked: nothing to fail
    assert empty_ok


def test_equivalents_that_match_nothing_or_get_killed_are_reported() -> None:
    report = _report(["killed"])
    killed_key = MutantKey("gristmill_platform.m", "f", "x", "y")
    report.equivalent = [Mutant("e", killed_key, "killed")]
    gone = MutantKey("gristmill_platform.m", "g", "x", "y")
    problems = stale_equivalents([report], [Equivalent(killed_key, "r"), Equivalent(gone, "r")])
    assert problems == [f"is killed by the tests, so it is not equivalent: {killed_key}",
                        f"matches no mutant: {gone}"]


def test_configured_modules_and_equivalents_load() -> None:
    config = runner.load_config()
    assert config.min_score >= 0.95
    names = {m.name for m in config.modules}
    assert {"signing", "tokens", "paths", "transitions", "io"} <= names
    for module in config.modules:
        assert (runner.ROOT / module.path).is_file(), module.path
        assert all((runner.ROOT / t).is_file() for t in module.tests), module.tests
    for equivalent in runner.load_equivalents():
        assert equivalent.reason.strip()
        assert equivalent.key.module in {m.dotted for m in config.modules}
