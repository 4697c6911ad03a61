"""Command line of the runner: ``python -m gristmill.runtime <command>``.

Only argparse here: ``--help`` must answer without importing anything heavy, and each
command imports its machinery when it runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

_RUN_HELP = """\
Run one execution: ask the control service what to run (POST /start), call the step
function, send its logs and outputs, report the result (POST /finish).

Everything comes from the environment the executor sets:
  GRISTMILL_ENVIRONMENT_URL  the environment URL (or CRAFT_AI_ENVIRONMENT_URL)
  GRISTMILL_SDK_TOKEN        the execution token (or CRAFT_AI_SDK_TOKEN)
  GRISTMILL_EXECUTION_ID     the execution id (or CRAFT_AI_EXECUTION_ID)
  GRISTMILL_STEP_DIR         the step's code folder (default: the working directory)
  GRISTMILL_IO_DIR           scratch folder for file inputs (default: a temporary folder)
  GRISTMILL_CONTROL_URL      where /api/v1/auth/refresh is (default: the environment URL)

Exit codes: 0 succeeded (or already started elsewhere), 1 failed, 3 control service
unreachable.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gristmill.runtime",
        description="The Gristmill step runner: runs step code inside a worker.",
    )
    commands = parser.add_subparsers(dest="command", metavar="<command>")
    commands.add_parser(
        "run",
        help="run one execution and exit",
        description=_RUN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        from gristmill.runtime.runner import run

        return run()
    parser.print_help()
    return 2
