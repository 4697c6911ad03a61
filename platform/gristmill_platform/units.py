"""Unit conversions shared by the domains and the backends (no domain imports here)."""

from __future__ import annotations

import re

# A RAM quantity as deployments take it ("512MiB", "2GiB").
RAM = re.compile(r"^(\d+)(KiB|MiB|GiB)$")
_RAM_UNITS = {"KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


def ram_bytes(value: str) -> int:
    """Bytes of a RAM quantity already checked against RAM."""
    match = RAM.match(value)
    assert match
    return int(match.group(1)) * _RAM_UNITS[match.group(2)]
