"""Command line of the runner: ``python -m gristmill.runtime <command>``.

Only argparse here: ``--help`` must answer without importing anything heavy, and each
command imports its machinery when it runs.
"""

from __future__ import annotations

import argparse
import functools
import sys
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

_SERVE_HELP = """\
Serve a low-latency deployment: import the step's module once, then run executions on
request (POST /executions), several at a time when allowed. Only the control service
calls it: it listens on 127.0.0.1 and every request carries the worker secret.

Configuration, from the environment:
  GRISTMILL_WORKER_PORT              the port to listen on (127.0.0.1)
  GRISTMILL_WORKER_SECRET            the X-Gristmill-Worker-Secret every request carries
  GRISTMILL_MAX_PARALLEL_EXECUTIONS  executions run at once (default 1; the rest wait)
  GRISTMILL_STEP_DIR                 the step's code folder
  GRISTMILL_FUNCTION_PATH            the file to import, relative to the step folder
  GRISTMILL_FUNCTION_NAME            the function each execution calls
  GRISTMILL_ENVIRONMENT_URL          for file inputs and outputs (or CRAFT_AI_ENVIRONMENT_URL)
  GRISTMILL_IO_DIR                   scratch folder for file inputs and outputs

Exit codes: 0 stopped (SIGTERM), 1 the module could not be imported (traceback on stderr),
3 bad configuration, 75 the port is taken.
"""


@functools.cache
def build_parser() -> argparse.ArgumentParser:
    """Built once per process (parsing leaves it as it was): a worker forked by the fork
    server finds the one the server built when it started."""
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
    commands.add_parser(
        "serve",
        help="serve a low-latency deployment (warm worker)",
        description=_SERVE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands.add_parser(
        "pool",
        help="wait for one elastic execution in a pre-started pod, run it and exit",
        description="A pre-started pod of an elastic pool: claim one execution (POST "
        "/api/v1/runtime/pool/claim with GRISTMILL_POOL_TOKEN), run it as `run` does, exit.",
    )
    zygote = commands.add_parser(
        "zygote",
        help="fork server for elastic executions (started by the local backend)",
    )
    zygote.add_argument("--fd", type=int, required=True,
                        help="the descriptor of the executor's socket")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    if given == ["run"]:
        # every elastic execution's command line: parsing it costs a forked worker more
        # than knowing it
        from gristmill.runtime.runner import run

        return run()
    parser = build_parser()
    args = parser.parse_args(given)
    if args.command == "run":
        from gristmill.runtime.runner import run

        return run()
    if args.command == "serve":
        from gristmill.runtime.serve import serve

        return serve()
    if args.command == "pool":
        from gristmill.runtime.pool import pool

        return pool()
    if args.command == "zygote":
        from gristmill.runtime.zygote import main as zygote

        return zygote(["--fd", str(args.fd)])
    parser.print_help()
    return 2
