"""The ``gristmill`` command line."""

from __future__ import annotations


def main() -> None:
    from gristmill.cli.app import app

    app()
