"""docs/configuration.md is the reference of the control service's settings: every
``GRISTMILL_*`` variable the service reads (each field of ``Settings``) is in it, written
out or abbreviated in a row that names a sibling in full (``GRISTMILL_STEP_DEFAULT_LANGUAGE``,
``..._REQUIREMENTS_PATH``). A setting nobody can find is as good as none; one nobody reads
should not exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "configuration.md"

_FULL = re.compile(r"\bGRISTMILL_[A-Z0-9_]*[A-Z0-9]")
_ABBREVIATED = re.compile(r"\.\.\._([A-Z0-9_]*[A-Z0-9])")


def documented_variables(text: str) -> set[str]:
    found: set[str] = set()
    for line in text.splitlines():
        names = _FULL.findall(line)
        found.update(names)
        if not names:
            continue
        # "..._SUFFIX" stands for the first full name's leading segments plus SUFFIX
        segments = names[0].split("_")
        for suffix in _ABBREVIATED.findall(line):
            found.update("_".join([*segments[:keep], suffix])
                         for keep in range(2, len(segments)))
    return found


def test_abbreviations_are_expanded() -> None:
    row = "| `GRISTMILL_STEP_DEFAULT_LANGUAGE`, `..._REQUIREMENTS_PATH` | | x |"
    assert "GRISTMILL_STEP_DEFAULT_REQUIREMENTS_PATH" in documented_variables(row)


def test_every_setting_is_in_the_configuration_reference() -> None:
    settings = pytest.importorskip("gristmill_platform.settings")
    documented = documented_variables(REFERENCE.read_text())
    missing = sorted(f"GRISTMILL_{name.upper()}" for name in settings.Settings.model_fields
                     if f"GRISTMILL_{name.upper()}" not in documented)
    assert not missing, f"not in docs/configuration.md: {missing}"
