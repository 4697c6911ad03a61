"""The runtime-image recipes agree with versions.json and the SDK's language table.

No Docker engine runs here, so nothing is built: these checks read the files.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import gristmill
from gristmill import languages

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "runtime-images"
DOCKERFILES = {
    "python": IMAGES / "python" / "Dockerfile",
    "python-cuda": IMAGES / "python-cuda" / "Dockerfile",
}


def _load_gen_bake() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_bake", IMAGES / "gen_bake.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_bake = _load_gen_bake()


@pytest.fixture(scope="module")
def versions() -> dict[str, Any]:
    return json.loads((IMAGES / "versions.json").read_text())


@pytest.fixture(scope="module")
def bake(versions: dict[str, Any]) -> dict[str, Any]:
    return gen_bake.bake_file(versions, "registry.example:5000/team")


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), " ".join(rest.split())))
    return result


def env_vars(dockerfile: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for keyword, rest in instructions(dockerfile):
        if keyword == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                found[key] = value
    return found


def arg_defaults(dockerfile: Path) -> dict[str, str]:
    return {
        key: value
        for keyword, rest in instructions(dockerfile)
        if keyword == "ARG" and "=" in rest
        for key, _, value in [rest.partition("=")]
    }


# --- versions.json <-> languages.py -------------------------------------------------------


def test_languages_module_lists_exactly_what_versions_json_builds(versions):
    built = [entry["language"] for entry in gen_bake.matrix(versions)]
    assert built == list(languages.SUPPORTED_LANGUAGES)
    assert tuple(versions["python"]) == languages.PYTHON_VERSIONS
    assert {cuda: tuple(line["python"]) for cuda, line in versions["cuda"].items()} == (
        languages.CUDA_PYTHON_VERSIONS
    )
    assert versions["default_language"] == languages.default_language()


def test_every_cuda_pairing_uses_a_python_version_that_has_a_slim_image(versions):
    for cuda, line in versions["cuda"].items():
        assert set(line["python"]) <= set(versions["python"]), cuda


def test_sdk_version_matches_the_package_and_pyproject(versions):
    # tomllib is 3.11+, and the project still supports 3.10.
    pyproject = (ROOT / "pyproject.toml").read_text()
    project_version = re.search(r'^version = "([^"]+)"', pyproject, flags=re.M)
    assert project_version is not None
    assert versions["sdk_version"] == gristmill.__version__ == project_version.group(1)


def test_documented_names_still_in_the_supported_set():
    # The craft-ai documentation's examples that are still maintained Python versions.
    for name in ("python:3.10-slim", "python-cuda:3.10-11.8", "python-cuda:3.10-12.1"):
        assert languages.is_supported(name)


@pytest.mark.parametrize("name", languages.SUPPORTED_LANGUAGES)
def test_parse_language_round_trips(name):
    parsed = languages.parse_language(name)
    family, python_version, cuda_version = parsed
    assert parsed.name == name
    assert family in ("python", "python-cuda")
    assert re.fullmatch(r"3\.\d+", python_version)
    assert (cuda_version is None) == (family == "python")
    assert parsed.needs_gpu == (family == "python-cuda")


def test_parse_language_splits_fields():
    assert languages.parse_language("python-cuda:3.11-12.1") == ("python-cuda", "3.11", "12.1")
    assert languages.parse_language("python:3.13-slim") == ("python", "3.13", None)


@pytest.mark.parametrize(
    "bad",
    [
        "python:3.8-slim",  # documented by craft-ai, past end of life, not built
        "python:3.12",
        "python:3.12-slim-bookworm",
        "python-cuda:3.12-12.4.1",
        "python-cuda:3.13-11.8",  # a real CUDA line, not paired with 3.13
        "PYTHON:3.12-slim",
        " python:3.12-slim",
        "",
        None,
        3.12,
    ],
)
def test_unsupported_language_is_refused_with_the_valid_values(bad):
    assert not languages.is_supported(bad)
    with pytest.raises(ValueError) as raised:
        languages.parse_language(bad)
    message = str(raised.value)
    assert repr(bad) in message
    for name in languages.SUPPORTED_LANGUAGES:
        assert name in message


def test_runtime_image_reference(versions):
    repository = versions["image_repository"].format(registry="ghcr.io/acme")
    assert languages.runtime_image("python:3.12-slim", repository) == (
        "ghcr.io/acme/gristmill-runtime/python:3.12-slim"
    )
    assert languages.runtime_image("python-cuda:3.12-12.4", repository + "/", "0.1.0") == (
        "ghcr.io/acme/gristmill-runtime/python-cuda:3.12-12.4-sdk0.1.0"
    )


def test_languages_module_imports_only_the_standard_library():
    source = (ROOT / "sdk" / "gristmill" / "languages.py").read_text()
    imported = set(re.findall(r"^(?:from|import) (\w+)", source, flags=re.M))
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


# --- bake targets ---------------------------------------------------------------------------


def test_bake_builds_every_language_once(bake):
    targets = bake["target"]
    assert bake["group"]["default"]["targets"] == list(targets)
    built = [target["args"]["LANGUAGE"] for target in targets.values()]
    assert sorted(built) == sorted(languages.SUPPORTED_LANGUAGES)


def test_bake_tags_are_the_language_names_under_the_repository(bake, versions):
    sdk = versions["sdk_version"]
    for target in bake["target"].values():
        family, tag = target["args"]["LANGUAGE"].split(":")
        repository = f"registry.example:5000/team/gristmill-runtime/{family}"
        assert target["tags"] == [f"{repository}:{tag}", f"{repository}:{tag}-sdk{sdk}"]
        assert Path(target["context"]) == DOCKERFILES[family].parent
        assert (Path(target["context"]) / target["dockerfile"]).is_file()
        assert target["args"]["GRISTMILL_VERSION"] == sdk
        assert "sdk-dist" in target["contexts"]


def test_bake_passes_the_pinned_base_and_python_patch(bake, versions):
    for target in bake["target"].values():
        language = languages.parse_language(target["args"]["LANGUAGE"])
        python = versions["python"][language.python_version]
        assert target["args"]["PYTHON_VERSION"] == python["patch"]
        if language.cuda_version is None:
            assert target["args"]["BASE_IMAGE"] == python["base"]
        else:
            assert target["args"]["BASE_IMAGE"] == versions["cuda"][language.cuda_version]["base"]
            assert target["args"]["UV_IMAGE"] == versions["uv_image"]


# --- pinned bases ---------------------------------------------------------------------------


def test_python_bases_are_exact_slim_patch_releases(versions):
    for minor, python in versions["python"].items():
        assert re.fullmatch(rf"{re.escape(minor)}\.\d+", python["patch"]), minor
        assert python["base"] == f"python:{python['patch']}-slim-{versions['debian_release']}"


def test_cuda_bases_are_exact_runtime_releases(versions):
    for cuda, line in versions["cuda"].items():
        match = re.fullmatch(r"nvidia/cuda:(\d+\.\d+)\.\d+-runtime-ubuntu\d+\.\d+", line["base"])
        assert match, line["base"]
        assert match.group(1) == cuda


def test_no_base_floats(versions):
    for base in gen_bake.base_images(versions):
        assert "latest" not in base
        assert "devel" not in base
        name, _, tag = base.rpartition(":")
        assert name and re.match(r"\d+\.\d+\.\d+", tag), base


# --- Dockerfiles ----------------------------------------------------------------------------


@pytest.mark.parametrize("family", DOCKERFILES)
def test_dockerfile_runs_the_runner_as_the_non_root_user(family):
    steps = instructions(DOCKERFILES[family])
    users = [rest for keyword, rest in steps if keyword == "USER"]
    assert users == ["10001:10001"]
    assert steps[-1] == ("ENTRYPOINT", '["python", "-m", "gristmill.runtime"]')
    user_index = next(i for i, (keyword, _) in enumerate(steps) if keyword == "USER")
    # Nothing runs as root after the switch, and nothing switches back.
    assert all(keyword != "RUN" for keyword, _ in steps[user_index:])
    assert any(
        keyword == "RUN" and "useradd --uid 10001 --gid 10001" in rest and "gristmill" in rest
        for keyword, rest in steps
    )


@pytest.mark.parametrize("family", DOCKERFILES)
def test_dockerfile_installs_the_sdk_wheel_into_the_venv(family):
    runs = [rest for keyword, rest in instructions(DOCKERFILES[family]) if keyword == "RUN"]
    assert any(
        "from=sdk-dist" in run
        and "/opt/venv/bin/pip install" in run
        and "${GRISTMILL_VERSION}" in run
        for run in runs
    )


def test_both_dockerfiles_share_user_workdir_venv_and_entrypoint():
    def layout(path: Path) -> dict[str, Any]:
        steps = instructions(path)
        env = env_vars(path)
        return {
            "user": [rest for keyword, rest in steps if keyword == "USER"],
            "workdir": [rest for keyword, rest in steps if keyword == "WORKDIR"],
            "entrypoint": [rest for keyword, rest in steps if keyword == "ENTRYPOINT"],
            "venv": env["VIRTUAL_ENV"],
            "path": env["PATH"],
            "shared_env": {
                key: env[key]
                for key in ("PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "GRISTMILL_LANGUAGE")
            },
            "useradd": [rest for keyword, rest in steps if keyword == "RUN" and "useradd" in rest],
        }

    cpu, gpu = layout(DOCKERFILES["python"]), layout(DOCKERFILES["python-cuda"])
    assert cpu == gpu
    assert cpu["workdir"] == ["/app"]
    assert cpu["venv"] == "/opt/venv"
    assert cpu["path"].startswith("/opt/venv/bin:")


@pytest.mark.parametrize("family", DOCKERFILES)
def test_dockerfile_defaults_are_one_pinned_versions_entry(family, versions):
    defaults = arg_defaults(DOCKERFILES[family])
    language = languages.parse_language(defaults["LANGUAGE"])
    assert language.family == family
    python = versions["python"][language.python_version]
    assert defaults["PYTHON_VERSION"] == python["patch"]
    assert defaults["GRISTMILL_VERSION"] == versions["sdk_version"]
    if family == "python":
        assert defaults["BASE_IMAGE"] == python["base"]
    else:
        assert defaults["BASE_IMAGE"] == versions["cuda"][language.cuda_version]["base"]
        assert defaults["UV_IMAGE"] == versions["uv_image"]
    froms = [rest for keyword, rest in instructions(DOCKERFILES[family]) if keyword == "FROM"]
    assert froms[-1] == "${BASE_IMAGE}"


def test_cuda_dockerfile_never_uses_a_devel_base():
    for keyword, rest in instructions(DOCKERFILES["python-cuda"]):
        assert "devel" not in rest, (keyword, rest)


# --- build.sh -------------------------------------------------------------------------------


BASH = shutil.which("bash") or "/bin/bash"


def _run_build(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BASH, str(IMAGES / "build.sh"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.fixture()
def path_without_docker(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH has python3 and the shell tools, but no docker."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # The real interpreter, not a version-manager shim (those are shell scripts).
    (bin_dir / "python3").symlink_to(os.path.realpath(sys.executable))
    for tool in ("bash", "dirname", "mkdir", "rm", "cat", "sed"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(os.path.realpath(found))
    return {"PATH": str(bin_dir), "HOME": str(tmp_path)}


def test_build_script_is_strict_bash():
    text = (IMAGES / "build.sh").read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert "docker buildx bake" in text and "--push" in text
    assert os.access(IMAGES / "build.sh", os.X_OK)
    subprocess.run([BASH, "-n", str(IMAGES / "build.sh")], check=True)


def test_build_print_needs_no_docker_and_matches_the_generator(path_without_docker, versions):
    result = _run_build(["--registry", "ghcr.io/acme", "--print"], path_without_docker)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    expected = gen_bake.bake_file(
        versions, "ghcr.io/acme", str(IMAGES / "build" / "sdk-dist"), None
    )
    assert printed == expected


def test_build_refuses_clearly_without_docker(path_without_docker):
    result = _run_build(["--registry", "ghcr.io/acme"], path_without_docker)
    assert result.returncode == 3
    assert "docker is not installed" in result.stderr
    assert result.stdout == ""


def test_build_refuses_without_a_registry(path_without_docker):
    result = _run_build([], path_without_docker)
    assert result.returncode == 2
    assert "--registry" in result.stderr
