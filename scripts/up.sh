#!/usr/bin/env bash
# Sets everything up and starts an embedded Gristmill environment on this machine
# (SQLite, local data store, local workers). Extra arguments go to `gristmill up`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${GRISTMILL_VENV:-.venv}"
GRISTMILL_EXTRAS="${GRISTMILL_EXTRAS:-platform}" bash scripts/setup.sh
exec "$VENV/bin/gristmill" up "$@"
