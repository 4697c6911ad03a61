#!/usr/bin/env bash
# Sets everything up, then runs the linters and the whole test suite.
# PostgreSQL tests run when a server answers on $GRISTMILL_TEST_POSTGRES_URL
# (default postgresql://postgres@127.0.0.1:5432/test) and skip with a message otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${GRISTMILL_VENV:-.venv}"

bash scripts/setup.sh
echo "==> ruff"
"$VENV/bin/ruff" check sdk platform infra tests bench
echo "==> mypy"
"$VENV/bin/mypy"
echo "==> pytest"
set +e
"$VENV/bin/python" -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$status"
