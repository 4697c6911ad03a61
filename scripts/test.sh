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
  run_pytest_in "$VENV" "$@"
}
run_pytest_in() {
  local venv="$1"
  shift
  set +e
  "$venv/bin/python" -m pytest "$@"
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
# The control service's image runs Python 3.12 (platform/Dockerfile), this suite the
# interpreter of $VENV: on 3.12 too, bounded to the unit tests, the step runtime and the
# deployments' compatibility tests (a locale-dependent answer once failed only there).
# Skipped with a message on a machine without Python 3.12.
echo "==> pytest on Python 3.12 (bounded: unit tests, runtime, deployments)"
python312=""
for candidate in python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12; do
  if [ -x "$(command -v "$candidate" || true)" ] \
     && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
    python312="$candidate"
    break
  fi
done
if [ -z "$python312" ]; then
  echo "    skipped: no Python 3.12 on this machine (PATH, ~/.pyenv/versions, /usr/bin)"
elif [ "$("$VENV/bin/python" -c 'import sys; print(sys.version_info[:2] == (3, 12))')" = True ]; then
  echo "    skipped: $VENV is Python 3.12 already"
else
  PYTHON="$python312" GRISTMILL_VENV=.venv-py312 GRISTMILL_EXTRAS=platform,dev \
    GRISTMILL_SYSTEM_PACKAGES=0 bash scripts/setup.sh
  run_pytest_in .venv-py312 tests/platform/unit tests/runtime \
    tests/compat/test_deployments.py tests/platform/test_step_pythons.py || status=$?
fi
# Bounded mutation testing: only the mutants of functions changed since the base branch
# (on main: the last 10 commits), capped in time; `scripts/mutation.sh` runs them all.
echo "==> mutation testing (changed functions; docs/development.md)"
bash scripts/mutation.sh --changed --max-seconds "${GRISTMILL_MUTATION_MAX_SECONDS:-240}" \
  || status=$?
exit "$status"
