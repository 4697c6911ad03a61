#!/usr/bin/env bash
# Creates .venv (if missing) and installs Gristmill with everything needed to run and test it.
# Idempotent: re-running only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${GRISTMILL_VENV:-.venv}"
EXTRAS="${GRISTMILL_EXTRAS:-platform,infra,dev}"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "Gristmill needs Python 3.10 or newer; $PYTHON is $("$PYTHON" --version 2>&1)." >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating virtual environment in $VENV"
  "$PYTHON" -m venv "$VENV"
fi
echo "==> installing gristmill[$EXTRAS] (editable)"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-compile -e ".[$EXTRAS]"
echo "==> ready: $VENV/bin/gristmill"
