#!/usr/bin/env bash
# Creates .venv (if missing) and installs Gristmill with everything needed to run and test it.
# Idempotent: re-running only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-}"
VENV="${GRISTMILL_VENV:-.venv}"
EXTRAS="${GRISTMILL_EXTRAS:-platform,infra,dev}"

# System tools only the tests drive for real (sshd for Git over SSH, Prometheus and its node
# exporter for resource metrics, Chromium for the console's browser tests; podman, buildah,
# runc and debootstrap for the opt-in image tests, GRISTMILL_IMAGE_TESTS=1): running
# Gristmill needs none of them. Installed only when GRISTMILL_SYSTEM_PACKAGES=1
# (scripts/test.sh sets it; scripts/up.sh does not), as root with apt; otherwise the tests
# that need them skip with a message.
SYSTEM_PACKAGES=(openssh-server prometheus prometheus-node-exporter chromium)
if [ "${GRISTMILL_IMAGE_TESTS:-0}" = "1" ]; then
  SYSTEM_PACKAGES+=(podman buildah runc debootstrap)
fi
if [ "${GRISTMILL_SYSTEM_PACKAGES:-0}" = "1" ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  missing=()
  for package in "${SYSTEM_PACKAGES[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "==> installing system packages for tests: ${missing[*]}"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
           --no-install-recommends "${missing[@]}" >/dev/null; }; then
      echo "    (could not install them: the tests that need them will skip)" >&2
    fi
  fi
fi

# The control service (the platform extra) needs Python 3.11 or newer; the SDK alone
# (and the step runtime) 3.10. Without PYTHON, python3 if it is new enough, else the
# newest python3.X on PATH that is (Ubuntu 22.04's python3 is 3.10).
NEEDED_MINOR=10
case ",$EXTRAS," in *,platform,*) NEEDED_MINOR=11 ;; esac
fits() { "$1" -c "import sys; sys.exit(sys.version_info < (3, $NEEDED_MINOR))" 2>/dev/null; }
if [ -z "$PYTHON" ]; then
  for candidate in python3 python3.14 python3.13 python3.12 python3.11; do
    if command -v "$candidate" >/dev/null && fits "$candidate"; then
      PYTHON="$candidate"
      break
    fi
  done
  if [ -n "$PYTHON" ] && [ "$PYTHON" != python3 ]; then
    echo "==> using $PYTHON ($("$PYTHON" --version 2>&1)): python3 is older than 3.$NEEDED_MINOR"
  fi
  PYTHON="${PYTHON:-python3}"
fi
too_old() {
  echo "Gristmill needs Python 3.$NEEDED_MINOR or newer for gristmill[$EXTRAS] (the control" \
       "service 3.11, the SDK alone 3.10); $1. Install a newer Python and run again," \
       "e.g. PYTHON=python3.12 $0" >&2
  exit 1
}
if ! fits "$PYTHON"; then
  too_old "$PYTHON is $("$PYTHON" --version 2>&1 || echo 'not found')"
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating virtual environment in $VENV"
  "$PYTHON" -m venv "$VENV"
elif ! fits "$VENV/bin/python"; then
  too_old "$VENV was made with $("$VENV/bin/python" --version 2>&1): remove it first"
fi
echo "==> installing gristmill[$EXTRAS] (editable)"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-compile -e ".[$EXTRAS]"
echo "==> ready: $VENV/bin/gristmill"
