#!/usr/bin/env bash
# Builds and pushes the whole runtime-image matrix described by versions.json.
#
#   runtime-images/build.sh --registry ghcr.io/acme            build and push every image
#   runtime-images/build.sh --registry ghcr.io/acme python-3_12-slim   only some targets
#   runtime-images/build.sh --registry ghcr.io/acme --print    show the bake file, no Docker needed
#   runtime-images/build.sh --registry ghcr.io/acme --load     build into the local engine, no push
#
# Needs: python3 (with pip, to build the SDK wheel) and, except for --print, a Docker engine
# with the buildx plugin, logged in to the registry.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

registry="${GRISTMILL_IMAGE_REGISTRY:-}"
mode="--push"
print_only=0
platforms=()
targets=()

usage() {
  sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

while [ "$#" -gt 0 ]; do
  case "$1" in
    --registry) registry="${2:?--registry needs a value}"; shift 2 ;;
    --registry=*) registry="${1#*=}"; shift ;;
    --platform) platforms+=("--platform" "${2:?--platform needs a value}"); shift 2 ;;
    --print) print_only=1; shift ;;
    --load) mode="--load"; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "build.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done

if [ -z "$registry" ]; then
  echo "build.sh: no registry; pass --registry <host/org> or set GRISTMILL_IMAGE_REGISTRY" >&2
  exit 2
fi

build_dir="$here/build"
generate() {
  python3 "$here/gen_bake.py" --registry "$registry" --sdk-dist "$build_dir/sdk-dist" \
    ${platforms[@]+"${platforms[@]}"}
}

if [ "$print_only" -eq 1 ]; then
  generate
  exit 0
fi

if ! command -v docker >/dev/null 2>&1; then
  echo "build.sh: docker is not installed; the runtime images need a Docker engine with buildx." >&2
  echo "build.sh: use --print to see what would be built." >&2
  exit 3
fi
if ! docker buildx version >/dev/null 2>&1; then
  echo "build.sh: the docker buildx plugin is missing (https://docs.docker.com/build/)." >&2
  exit 3
fi
if ! docker info >/dev/null 2>&1; then
  echo "build.sh: no Docker engine answers (is the daemon running, may this user use it?)." >&2
  exit 3
fi

# The pins in versions.json were written without registry access: fail before building
# anything if one of them does not exist.
while IFS= read -r base; do
  if ! docker buildx imagetools inspect "$base" >/dev/null 2>&1; then
    echo "build.sh: base image $base (versions.json) cannot be found in its registry." >&2
    exit 4
  fi
done < <(python3 "$here/gen_bake.py" --list-bases)

rm -rf "$build_dir"
mkdir -p "$build_dir"
bake_file="$build_dir/docker-bake.json"
generate >"$bake_file"
python3 -m pip wheel --quiet --no-deps --wheel-dir "$build_dir/sdk-dist" "$repo"

cd "$here"
docker buildx bake --file "$bake_file" "$mode" ${targets[@]+"${targets[@]}"}
