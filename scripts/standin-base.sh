#!/usr/bin/env bash
# Makes a stand-in for a registry base image from Debian's own packages, for machines that
# reach Debian's mirrors but no container registry (see docs/images.md).
#
#   scripts/standin-base.sh NAME:TAG [NAME:TAG ...]
#
# Builds (once, cached under $GRISTMILL_IMAGE_CACHE, keyed by the Debian suite) a minimal
# Debian root filesystem with Python 3 and its venv module, then imports it into podman under
# each name given, so Dockerfiles whose FROM names that image build unchanged. Python is
# Debian's (3.11 on bookworm), not the patch release the real base pins.
set -euo pipefail

SUITE="${GRISTMILL_STANDIN_SUITE:-bookworm}"
MIRROR="${GRISTMILL_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CACHE="${GRISTMILL_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gristmill-images}"
ARCHIVE="$CACHE/standin-$SUITE-python.tar"

if [ "$#" -eq 0 ]; then
  echo "usage: $0 NAME:TAG [NAME:TAG ...]" >&2
  exit 2
fi
for tool in podman debootstrap; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 3; }
done

if [ ! -s "$ARCHIVE" ]; then
  mkdir -p "$CACHE"
  rootfs="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
  trap 'rm -rf "$rootfs"' EXIT
  echo "==> debootstrap $SUITE (minbase, python3) into $rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$rootfs" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
  # The official python images put `python` on PATH; Debian only ships `python3`.
  ln -sf python3 "$rootfs/usr/bin/python"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -cf "$ARCHIVE.partial" .
  mv "$ARCHIVE.partial" "$ARCHIVE"
fi

for name in "$@"; do
  if ! podman image exists "$name"; then
    echo "==> importing the stand-in base as $name"
    podman import --change 'CMD ["/bin/bash"]' "$ARCHIVE" "$name" >/dev/null
  fi
done
