"""The README's and the docs' relative links lead somewhere: each file exists, and each
``#anchor`` is a heading of the target page (GitHub's slugs) or an ``<a id>`` in it. Docs
are reorganised as they grow; a moved section must not leave readers at a dead link."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_HTML_ANCHOR = re.compile(r'<a\s+(?:id|name)="([^"]+)"')


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (letters, digits,
    ``_`` and ``-`` kept), spaces to hyphens; link text kept, link targets dropped."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in _FENCE.sub("", text).splitlines():
        found.update(_HTML_ANCHOR.findall(line))
        heading = _HEADING.match(line)
        if heading is None:
            continue
        name = slug(heading.group(2))
        if name in seen:  # GitHub numbers repeated headings: x, x-1, x-2...
            seen[name] += 1
            name = f"{name}-{seen[name]}"
        else:
            seen[name] = 0
        found.add(name)
    return found


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in _LINK.findall(_FENCE.sub("", page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:...
            continue
        path, _, fragment = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif fragment and destination.suffix == ".md" and fragment not in anchors(
                destination.read_text()):
            broken.append(f"{target}: no such heading or anchor")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    assert broken_links(page) == []


def test_the_slugs_are_githubs() -> None:
    assert slug("What a call costs, in short") == "what-a-call-costs-in-short"
    assert slug("SQLite's WAL checkpoints") == "sqlites-wal-checkpoints"
    assert slug("Inputs: values, defaults, files") == "inputs-values-defaults-files"
    assert slug("The warm worker's event loop") == "the-warm-workers-event-loop"
    assert slug("Isolation between executions (local backend)") == (
        "isolation-between-executions-local-backend")
    assert slug("1. Install and start") == "1-install-and-start"
    assert slug("`gristmill up` on [a laptop](x.md)") == "gristmill-up-on-a-laptop"


def test_a_dead_link_is_reported(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## A section\n\n<a id=\"kept\"></a>\n")
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n## Here\n\n[ok](other.md#a-section) [ok](other.md#kept) "
                    "[ok](#here) [web](https://example.com/x#y)\n"
                    "[gone](missing.md) [moved](other.md#latency) [local](#nowhere)\n"
                    "```\n[in a fence](ignored.md)\n```\n")
    assert broken_links(page) == ["missing.md: no such file",
                                  "other.md#latency: no such heading or anchor",
                                  "#nowhere: no such heading or anchor"]


def test_repeated_headings_are_numbered() -> None:
    assert anchors("## Run\n\ntext\n\n## Run\n\n## Run\n") == {"run", "run-1", "run-2"}
