#!/usr/bin/env bash
# Creates .venv (if missing) and installs Gristmill with everything needed to run and test it.
# Idempotent: re-running only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
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
