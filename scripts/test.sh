#!/usr/bin/env bash
# Sets everything up, then runs the linters and the whole test suite.
# PostgreSQL tests run when a server answers on $GRISTMILL_TEST_POSTGRES_URL
# (default postgresql://postgres@127.0.0.1:5432/test) and skip with a message otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${GRISTMILL_VENV:-.venv}"

# the tests drive sshd and Prometheus for real: install them (as root) unless told not to
GRISTMILL_SYSTEM_PACKAGES="${GRISTMILL_SYSTEM_PACKAGES:-1}" bash scripts/setup.sh
echo "==> ruff"
"$VENV/bin/ruff" check sdk platform infra tests bench examples
echo "==> mypy"
"$VENV/bin/mypy"
run_pytest() {
  set +e
  "$VENV/bin/python" -m pytest "$@"
  local status=$?
  set -e
  if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure" >&2
    return 1
  fi
  return "$status"
}

if [ "$#" -gt 0 ]; then
  echo "==> pytest $*"
  run_pytest "$@"
  exit $?
fi
# The Pulumi mock tests run in a process of their own: Pulumi's runtime binds itself to
# the first event loop it sees, which the service tests' event loops would replace.
echo "==> pytest (platform, SDK, compatibility)"
status=0
run_pytest --ignore=tests/infra || status=$?
echo "==> pytest (infrastructure, Pulumi mocks)"
run_pytest tests/infra || status=$?
# Bounded mutation testing: only the mutants of functions changed since the base branch
# (on main: the last 10 commits), capped in time; `scripts/mutation.sh` runs them all.
echo "==> mutation testing (changed functions; docs/development.md)"
bash scripts/mutation.sh --changed --max-seconds "${GRISTMILL_MUTATION_MAX_SECONDS:-240}" \
  || status=$?
exit "$status"
