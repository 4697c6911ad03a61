"""Step images, the pieces: build contexts, failure reasons, the build log, the build
Job's environment, and replacing a failed build Job (against kmock).

The control service building images end to end is in test_step_images_service.py."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from gristmill_platform.executors.kubernetes import manifests
from gristmill_platform.executors.kubernetes.build_status import fetch_failure, log_container
from gristmill_platform.executors.kubernetes.config import KubernetesConfig
from gristmill_platform.executors.kubernetes.executor import KubernetesExecutor
from gristmill_platform.executors.kubernetes.images import ImageBuild, step_dockerfile
from gristmill_platform.executors.spec import FailureCode, PollResult, WorkerState
from gristmill_platform.settings import Settings
from gristmill_platform.steps.build_failures import build_failure_reason, read_build_log
from gristmill_platform.steps.build_log import BuildLog
from gristmill_platform.steps.image_builds import (
    KubernetesSetupError,
    builder_env,
    check_settings,
)
from gristmill_platform.steps.image_context import pack_context
from tests.platform.executors import buildkit_logs
from tests.platform.executors.conftest import NAMESPACE, Emulator

BASE = buildkit_logs.BASE
REGISTRY = buildkit_logs.REGISTRY


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def members(archive: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(archive, "r:gz") as tar:
        return {member.name: member for member in tar.getmembers()}


def read(archive: Path, name: str) -> str:
    with tarfile.open(archive, "r:gz") as tar:
        extracted = tar.extractfile(name)
        assert extracted is not None
        return extracted.read().decode()


# --- build contexts -------------------------------------------------------------------------


def test_generated_context_puts_the_dockerfile_beside_the_code(tmp_path: Path) -> None:
    # the step's own file named Dockerfile must not be replaced by the generated one
    code = write(tmp_path / "code", {"src/hello.py": "x = 1\n", "Dockerfile": "FROM mine\n",
                                     "requirements.txt": "httpx\n"})
    dockerfile = step_dockerfile(["curl"], "requirements.txt", code_dir="code")
    pack_context(code, tmp_path / "ctx.tar.gz", dockerfile)
    names = members(tmp_path / "ctx.tar.gz")
    assert {"Dockerfile", "code", "code/src/hello.py", "code/Dockerfile",
            "code/requirements.txt"} <= set(names)
    assert read(tmp_path / "ctx.tar.gz", "Dockerfile") == dockerfile
    assert read(tmp_path / "ctx.tar.gz", "code/Dockerfile") == "FROM mine\n"
    assert 'COPY --chown=10001:10001 ["code/requirements.txt", "/tmp/requirements.txt"]' in (
        dockerfile)
    assert dockerfile.rstrip().endswith("COPY --chown=10001:10001 code/ /app")


def test_own_dockerfile_context_is_the_code_itself(tmp_path: Path) -> None:
    code = write(tmp_path / "code", {"src/hello.py": "x = 1\n", "docker/Dockerfile": "FROM a\n"})
    pack_context(code, tmp_path / "ctx.tar.gz", None)
    assert set(members(tmp_path / "ctx.tar.gz")) == {"docker", "docker/Dockerfile", "src",
                                                     "src/hello.py"}


def test_context_digest_is_reproducible_and_follows_the_content(tmp_path: Path) -> None:
    files = {"src/hello.py": "x = 1\n", "src/util.py": "y = 2\n"}
    first = pack_context(write(tmp_path / "a", files), tmp_path / "a.tgz", "FROM x\n")
    # another folder, other times and permissions, files written in another order
    other = write(tmp_path / "b", dict(reversed(files.items())))
    os.utime(other / "src/hello.py", (1, 1))
    (other / "src/util.py").chmod(0o600)
    assert pack_context(other, tmp_path / "b.tgz", "FROM x\n") == first
    assert (tmp_path / "a.tgz").read_bytes() == (tmp_path / "b.tgz").read_bytes()
    with gzip.open(tmp_path / "a.tgz") as stream:
        assert stream.read(1)  # a valid gzip stream
    changed = write(tmp_path / "c", {**files, "src/util.py": "y = 3\n"})
    assert pack_context(changed, tmp_path / "c.tgz", "FROM x\n") != first
    assert pack_context(write(tmp_path / "d", files), tmp_path / "d.tgz", "FROM y\n") != first
    executable = write(tmp_path / "e", files)
    (executable / "src/util.py").chmod(0o755)
    assert pack_context(executable, tmp_path / "e.tgz", "FROM x\n") != first
    assert members(tmp_path / "e.tgz")["code/src/util.py"].mode == 0o755


def test_context_keeps_links_inside_the_code(tmp_path: Path) -> None:
    code = write(tmp_path / "code", {"src/hello.py": "x = 1\n"})
    (code / "current.py").symlink_to("src/hello.py")
    pack_context(code, tmp_path / "ctx.tgz", None)
    link = members(tmp_path / "ctx.tgz")["current.py"]
    assert link.issym() and link.linkname == "src/hello.py"


# --- the build Job --------------------------------------------------------------------------


def test_builder_env_says_where_the_bucket_is() -> None:
    aws = Settings(datastore_backend="s3", s3_bucket="b", s3_region="eu-west-3")
    assert builder_env(aws) == (("AWS_REGION", "eu-west-3"),)
    minio = Settings(datastore_backend="s3", s3_bucket="b", s3_endpoint_url="http://minio:9000")
    assert dict(builder_env(minio)) == {"S3_ENDPOINT": "http://minio:9000",
                                       "S3_FORCE_PATH_STYLE": "true"}
    virtual = minio.model_copy(update={"s3_addressing_style": "virtual"})
    assert dict(builder_env(virtual))["S3_FORCE_PATH_STYLE"] == "false"


def test_build_job_carries_the_context_environment() -> None:
    build = ImageBuild("s", "python:3.12-slim", "s3://b/ctx.tar.gz", "a" * 64,
                       env=(("S3_ENDPOINT", "http://minio:9000"), ("AWS_REGION", "x")))
    # the context is fetched by the init container: it is the one that needs the store
    fetcher = manifests.image_build_job(build, KubernetesConfig())["spec"]["template"][
        "spec"]["initContainers"][0]
    assert fetcher["env"] == [{"name": "AWS_REGION", "value": "x"},
                              {"name": "CONTEXT_URL", "value": "s3://b/ctx.tar.gz"},
                              {"name": "S3_ENDPOINT", "value": "http://minio:9000"}]
    plain = ImageBuild("s", "python:3.12-slim", "s3://b/ctx.tar.gz", "a" * 64)
    assert manifests.image_build_job(plain, KubernetesConfig())["spec"]["template"]["spec"][
        "initContainers"][0]["env"] == [{"name": "CONTEXT_URL", "value": "s3://b/ctx.tar.gz"}]
    with pytest.raises(ValueError, match="environment variable"):
        ImageBuild("s", "python:3.12-slim", "s3://b", "a" * 64, env=(("BAD NAME", "x"),))


def test_kubernetes_mode_refuses_a_local_data_store() -> None:
    with pytest.raises(KubernetesSetupError, match="GRISTMILL_DATASTORE_BACKEND=s3"):
        check_settings(Settings(datastore_backend="local"))
    check_settings(Settings(datastore_backend="s3", s3_bucket="b"))


async def test_a_new_attempt_replaces_a_failed_build_job(
    executor: KubernetesExecutor, emulator: Emulator
) -> None:
    build = ImageBuild("train", "python:3.12-slim", "s3://b/ctx.tar.gz", "c" * 64)
    first = await executor.submit_build(build)
    job = ("batch/v1/jobs", NAMESPACE, first["name"])
    emulator.objects[job].patch({"status": {"failed": 1}})
    # joining (a restarted control service) keeps the failure: it is the answer
    joined = await executor.submit_build(build)
    assert joined == first
    assert emulator.objects[job].get("status", {}).get("failed") == 1
    # a new attempt of the step builds again, under the same name
    again = await executor.submit_build(build, replace_failed=True)
    assert again["name"] == first["name"]
    assert not (emulator.objects[job].get("status") or {}).get("failed")
    assert len(emulator.sent("delete", "jobs")) == 1
    # a running (or succeeded) Job is joined, never replaced
    await executor.submit_build(build, replace_failed=True)
    assert len(emulator.sent("delete", "jobs")) == 1


async def test_a_replaced_job_ignores_the_pods_of_the_failed_one(
    executor: KubernetesExecutor, emulator: Emulator
) -> None:
    build = ImageBuild("train", "python:3.12-slim", "s3://b/ctx.tar.gz", "f" * 64)
    first = await executor.submit_build(build)
    name = first["name"]

    def owned_pod(pod: str, uid: str, status: dict[str, object]) -> None:
        emulator.add_pod(pod, {"job-name": name}, status)
        emulator.pod(pod).patch({"metadata": {"ownerReferences": [
            {"kind": "Job", "name": name, "uid": uid, "controller": True}]}})

    failed = {"phase": "Failed", "containerStatuses": [
        {"name": "buildkit", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}
    owned_pod(f"{name}-old", first["uid"], failed)
    emulator.serve_logs(f"{name}-old", "2026-11-23T12:00:01Z old attempt\n")
    emulator.objects["batch/v1/jobs", NAMESPACE, name].patch({"status": {"failed": 1}})
    again = await executor.submit_build(build, replace_failed=True)
    assert again["uid"] != first["uid"]
    # the old pod lingers until garbage collection: it is not the new Job's
    assert (await executor.poll_build(again)).state == WorkerState.PENDING
    assert await executor.build_logs(again) == []
    owned_pod(f"{name}-new", again["uid"], {"phase": "Running"})
    emulator.serve_logs(f"{name}-new", "2026-11-23T12:00:09Z new attempt\n")
    assert [line.message for line in await executor.build_logs(again)] == ["new attempt"]


# --- why a build failed ---------------------------------------------------------------------

FAILED = PollResult(WorkerState.FAILED, reason="The image build failed.", exit_code=1,
                    code=FailureCode.EXIT_CODE)


def reason(lines: list[str], outcome: PollResult = FAILED, own: bool = False) -> str:
    return build_failure_reason(outcome, lines, base=BASE, registry=REGISTRY,
                                own_dockerfile=own)


def test_the_failed_step_its_output_and_the_fatal_line_are_read_apart() -> None:
    reading = read_build_log(buildkit_logs.PIP_FAILS)
    assert reading.fatal is not None and reading.fatal.startswith("failed to solve: process")
    assert reading.vertex == f"[3/3] RUN {buildkit_logs.PIP}"
    # the failed step's own output, once: not the block that repeats it, not other steps'
    assert reading.output == buildkit_logs.PIP_OUTPUT


def test_a_failed_fetcher_is_told_from_a_fetcher_that_succeeded() -> None:
    def pod(fetch: dict[str, Any] | None) -> dict[str, Any]:
        statuses = [] if fetch is None else [{"name": manifests.BUILD_FETCH_CONTAINER,
                                               "state": fetch}]
        return {"status": {"initContainerStatuses": statuses}}

    failed = pod({"terminated": {"exitCode": 255}})
    assert fetch_failure(failed) == 255
    assert log_container(failed) == manifests.BUILD_FETCH_CONTAINER
    for other in (pod({"terminated": {"exitCode": 0}}), pod({"running": {}}), pod(None)):
        assert fetch_failure(other) is None
        assert log_container(other) is None


def test_pip_failure_names_the_requirement_and_shows_the_last_lines() -> None:
    text = reason(buildkit_logs.PIP_FAILS)
    assert text.startswith("pip could not install 'nosuchpkg==9.9'")
    assert text.endswith("Last lines of the build log: ERROR: Could not find a version that "
                         "satisfies the requirement nosuchpkg==9.9 (from versions: none) | "
                         "ERROR: No matching distribution found for nosuchpkg==9.9")


def test_missing_runtime_image_says_how_to_push_it() -> None:
    text = reason(buildkit_logs.NO_BASE)
    assert text.startswith(f"The runtime image {BASE} is not in the registry")
    assert "runtime-images/build.sh --registry registry.example/acme" in text
    assert reason(buildkit_logs.NO_BASE, own=True).startswith(
        "A base image of the step's Dockerfile does not exist")


def test_a_missing_system_package_is_named() -> None:
    text = reason(buildkit_logs.APT_FAILS)
    assert text.startswith("The system package 'libfoo9' does not exist")
    assert text.endswith("E: Unable to locate package libfoo9")
    candidate = reason(["#8 [2/4] RUN apt-get install libbar",
                        "#8 0.512 E: Package 'libbar' has no installation candidate",
                        '#8 ERROR: process "/bin/sh -c apt-get install libbar" did not '
                        "complete successfully: exit code: 100",
                        'error: failed to solve: process "/bin/sh -c apt-get install libbar" '
                        "did not complete successfully: exit code: 100"])
    assert candidate.startswith("The system package 'libbar' does not exist")


@pytest.mark.parametrize(
    ("lines", "outcome", "start"),
    [
        (buildkit_logs.PUSH_DENIED, FAILED,
         "The image was built but could not be pushed to registry.example/acme: check the "
         "builder's registry credentials"),
        (buildkit_logs.BASE_DENIED, FAILED, "The builder may not pull a base image"),
        (buildkit_logs.NO_DOCKERFILE, FAILED,
         "The Dockerfile given by dockerfile_path is not in the step's code"),
        (buildkit_logs.PARSE_ERROR, FAILED,
         "The Dockerfile could not be read: failed to solve: dockerfile parse error on line 3"),
        (buildkit_logs.MAKE_FAILS, FAILED,
         "A build command failed (exit code 2). Last lines of the build log: cc -O2 -c "
         "native.c | native.c:3:10: fatal error: missing.h: No such file or directory | "
         "make: *** [all] Error 2"),
        (buildkit_logs.PIP_FAILS[:-14],  # killed mid-step: no error line, its output shown
         PollResult(WorkerState.FAILED, reason="x", code=FailureCode.OOM_KILLED),
         "The image build ran out of memory: installing large requirements (several big "
         "wheels at once) can need more than the builder has; install fewer at once, or "
         "bring your own Dockerfile. Last lines of the build log: ERROR: Could not find"),
        ([], PollResult(WorkerState.FAILED, reason="The image build took longer than 1800 s.",
                        code=FailureCode.DEADLINE_EXCEEDED),
         "The image build took longer than 1800 s."),
        ([], PollResult(WorkerState.FAILED, reason="The worker image buildkit could not be "
                        "pulled", code=FailureCode.IMAGE_PULL),
         "The image builder could not start: The worker image buildkit"),
        ([], PollResult(WorkerState.FAILED, reason="The worker no longer exists",
                        code=FailureCode.WORKER_LOST),
         "The image build was interrupted: its Job or its pod was deleted"),
        # no BuildKit error line (the daemon did not start): the log's end, rules left out
        (["[rootlesskit:parent] error: failed to setup UID/GID map", "------",
          "buildctl: could not connect to unix:///run/user/1000/buildkit/buildkitd.sock"],
         FAILED,
         "The image build failed. Last lines of the build log: [rootlesskit:parent] error: "
         "failed to setup UID/GID map | buildctl: could not connect"),
        # an error line BuildKit gives no more shape to
        (["error: failed to solve: failed to compute cache key: something odd"], FAILED,
         "The image build failed: failed to solve: failed to compute cache key: something "
         "odd"),
    ],
)
def test_each_failure_gets_a_reason(lines: list[str], outcome: PollResult, start: str) -> None:
    assert reason(lines, outcome).startswith(start)


# --- the build log --------------------------------------------------------------------------


def test_the_followed_log_replaces_its_last_copy_where_it_began() -> None:
    log = BuildLog(limit=3)
    log.note("Code extracted")
    log.attach(["a"])
    log.note("Waiting: pulling")
    log.attach(["a", "b"])
    log.note("Build failed")
    assert log.lines == ["Code extracted", "a", "b", "Waiting: pulling", "Build failed"]
    log.attach(["1", "2", "3", "4", "5"])
    assert log.lines[1:5] == ["... 2 earlier lines omitted ...", "3", "4", "5"]
    log.note("dropped: over the limit")
    assert "dropped: over the limit" not in log.text()
    assert io.StringIO(log.text()).read().count("\n") == len(log.lines) - 1
