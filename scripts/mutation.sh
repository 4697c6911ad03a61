#!/usr/bin/env bash
# Mutation testing (mutmut) of the security- and data-critical modules listed in
# tests/mutation/modules.toml; prints a per-module report and fails under the minimum score.
#   scripts/mutation.sh                    every mutant (on demand)
#   scripts/mutation.sh --changed          only functions changed since the base (CI form)
#   scripts/mutation.sh --module signing   one module
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${GRISTMILL_VENV:-.venv}"
exec "$VENV/bin/python" -m tests.mutation "$@"
