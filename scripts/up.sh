#!/usr/bin/env bash
# Sets everything up, starts an embedded Gristmill environment on this machine (SQLite,
# local data store, local workers) and deploys the getting-started pipeline on it.
# The data directory is $GRISTMILL_DATA_DIR (default ~/.gristmill); extra arguments go to
# `gristmill up` (e.g. --port 9000). GRISTMILL_EXAMPLE=0 skips the example.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${GRISTMILL_VENV:-.venv}"
DATA_DIR="${GRISTMILL_DATA_DIR:-$HOME/.gristmill}"
for arg in "$@"; do
  case "$arg" in
    -h|--help)
      # help only: no setup, no server, no example waiting for a server that never starts
      if [ -x "$VENV/bin/gristmill" ]; then exec "$VENV/bin/gristmill" up --help; fi
      sed -n '2,6s/^# \{0,1\}//p' "$0"
      exit 0 ;;
  esac
done
# running Gristmill needs no system package: the test-only ones are for scripts/test.sh
GRISTMILL_SYSTEM_PACKAGES=0 GRISTMILL_EXTRAS="${GRISTMILL_EXTRAS:-platform}" bash scripts/setup.sh

"$VENV/bin/gristmill" up --data-dir "$DATA_DIR" "$@" &
server=$!
trap 'kill -INT "$server" 2>/dev/null || true; wait "$server" || true' INT TERM

if [ "${GRISTMILL_EXAMPLE:-1}" = "1" ]; then
  for _ in $(seq 1 150); do
    [ -f "$DATA_DIR/credentials.env" ] && break
    kill -0 "$server" 2>/dev/null || { wait "$server"; exit $?; }
    sleep 0.2
  done
  # shellcheck disable=SC1091
  source "$DATA_DIR/credentials.env"
  echo "==> deploying the getting-started pipeline"
  "$VENV/bin/python" examples/get_started/deploy.py || \
    echo "    (the example could not be deployed; the environment keeps running)" >&2
fi
wait "$server"
