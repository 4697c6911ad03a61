#!/usr/bin/env python3
"""Turn versions.json into a `docker buildx bake` file for the whole runtime-image matrix.

The bake file is generated, never committed: versions.json stays the only place a version
is written down. Standard library only, so build.sh runs it with any python3.

    python3 gen_bake.py --registry ghcr.io/acme [--sdk-dist DIR] [--platform linux/amd64]
    python3 gen_bake.py --list-bases      # every pinned base image, one per line
    python3 gen_bake.py --list-languages  # every language name, one per line
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VERSIONS_FILE = HERE / "versions.json"


def load_versions(path: Path = VERSIONS_FILE) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def matrix(versions: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per image: its language name, family, tag, Dockerfile folder and args."""
    entries: list[dict[str, Any]] = []
    for minor, python in versions["python"].items():
        tag = f"{minor}-slim"
        entries.append(
            {
                "language": f"python:{tag}",
                "family": "python",
                "tag": tag,
                "target": f"python-{minor.replace('.', '_')}-slim",
                "args": {"BASE_IMAGE": python["base"], "PYTHON_VERSION": python["patch"]},
            }
        )
    for cuda, line in versions["cuda"].items():
        for minor in line["python"]:
            tag = f"{minor}-{cuda}"
            entries.append(
                {
                    "language": f"python-cuda:{tag}",
                    "family": "python-cuda",
                    "tag": tag,
                    "target": f"python-cuda-{minor.replace('.', '_')}-{cuda.replace('.', '_')}",
                    "args": {
                        "BASE_IMAGE": line["base"],
                        # The CUDA images carry the same Python patch release as the slim ones.
                        "PYTHON_VERSION": versions["python"][minor]["patch"],
                        "UV_IMAGE": versions["uv_image"],
                    },
                }
            )
    return entries


def image_tags(versions: dict[str, Any], registry: str, family: str, tag: str) -> list[str]:
    """The moving tag (`python:3.12-slim`) and the immutable one pinned to the SDK release."""
    repository = versions["image_repository"].format(registry=registry.rstrip("/"))
    sdk = versions["sdk_version"]
    return [f"{repository}/{family}:{tag}", f"{repository}/{family}:{tag}-sdk{sdk}"]


def bake_file(
    versions: dict[str, Any],
    registry: str,
    sdk_dist: str = str(HERE / "build" / "sdk-dist"),
    platforms: list[str] | None = None,
) -> dict[str, Any]:
    targets: dict[str, Any] = {}
    for entry in matrix(versions):
        targets[entry["target"]] = {
            "context": str(HERE / entry["family"]),
            "dockerfile": "Dockerfile",
            # The SDK wheel comes in as a named context so the image installs exactly the
            # runner this checkout builds, published to PyPI or not.
            "contexts": {"sdk-dist": sdk_dist},
            "args": {
                **entry["args"],
                "GRISTMILL_VERSION": versions["sdk_version"],
                "LANGUAGE": entry["language"],
            },
            "tags": image_tags(versions, registry, entry["family"], entry["tag"]),
            "labels": {
                "org.opencontainers.image.version": versions["sdk_version"],
                "io.gristmill.language": entry["language"],
            },
            # CUDA bases are published for amd64 (and arm64 only for some lines): default to
            # amd64 everywhere and let build.sh widen it for the slim images.
            "platforms": platforms or ["linux/amd64"],
        }
    return {"group": {"default": {"targets": list(targets)}}, "target": targets}


def base_images(versions: dict[str, Any]) -> list[str]:
    bases = [python["base"] for python in versions["python"].values()]
    bases += [line["base"] for line in versions["cuda"].values()]
    bases.append(versions["uv_image"])
    return bases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", help="registry prefix, e.g. ghcr.io/acme")
    parser.add_argument(
        "--sdk-dist", default=str(HERE / "build" / "sdk-dist"), help="folder with the SDK wheel"
    )
    parser.add_argument("--platform", action="append", dest="platforms")
    parser.add_argument("--versions", type=Path, default=VERSIONS_FILE)
    parser.add_argument("--list-bases", action="store_true")
    parser.add_argument("--list-languages", action="store_true")
    args = parser.parse_args(argv)

    versions = load_versions(args.versions)
    if args.list_bases:
        print("\n".join(base_images(versions)))
        return 0
    if args.list_languages:
        print("\n".join(entry["language"] for entry in matrix(versions)))
        return 0
    if not args.registry:
        parser.error("--registry is required to generate the bake file")
    bake = bake_file(versions, args.registry, args.sdk_dist, args.platforms)
    json.dump(bake, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
