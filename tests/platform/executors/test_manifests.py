"""Manifest builders: golden files for representative specs, and the rules behind them.

Regenerate the golden files after an intended change with
``GRISTMILL_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/platform/executors -q``
and review the diff like code.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gristmill_platform.executors.kubernetes import manifests
from gristmill_platform.executors.kubernetes.config import KubernetesConfig
from gristmill_platform.executors.kubernetes.images import (
    ImageBuild,
    step_dockerfile,
    step_image_digest,
)
from gristmill_platform.executors.kubernetes.naming import is_label_value, is_resource_name
from gristmill_platform.executors.spec import LaunchSpec, Resources, WorkerSpec

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("GRISTMILL_UPDATE_GOLDEN") == "1"
GIB = 1024**3
MIB = 1024**2

CFG = KubernetesConfig(
    namespace="gristmill-workers",
    registry="123456789012.dkr.ecr.eu-west-3.amazonaws.com/acme",
    labels={"gristmill.io/environment": "prod"},
    image_pull_secrets=("registry-pull",),
)
STEP_IMAGE = "123456789012.dkr.ecr.eu-west-3.amazonaws.com/acme/gristmill-steps:" + "a" * 64
RUNNER = ("python", "-m", "gristmill.runtime", "run")
DIGEST = step_image_digest("base", step_dockerfile(), "c" * 64)


def cpu_spec(**changes: Any) -> LaunchSpec:
    values: dict[str, Any] = {
        "execution_id": "my-pipeline-6f1c2b7e",
        "step_name": "clean_data",
        "pipeline_name": "my-pipeline",
        "language": "python:3.12-slim",
        "argv": (*RUNNER, "--execution", "my-pipeline-6f1c2b7e"),
        "env": {
            "GRISTMILL_ENVIRONMENT_URL": "https://gristmill.example.com",
            "GRISTMILL_EXECUTION_TOKEN": "tok-123",
        },
        "resources": Resources(cpu=1.5, memory_bytes=512 * MIB),
        "image": STEP_IMAGE,
        "deployment_name": "nightly-clean",
        "timeout_s": 3600,
    }
    values.update(changes)
    return LaunchSpec(**values)


def worker_spec(**changes: Any) -> WorkerSpec:
    values: dict[str, Any] = {
        "deployment_name": "fraud-score",
        "step_name": "score",
        "pipeline_name": "fraud",
        "language": "python:3.11-slim",
        "argv": ("python", "-m", "gristmill.runtime", "serve"),
        "env": {"GRISTMILL_ENVIRONMENT_URL": "https://gristmill.example.com"},
        "port": 8080,
        "replicas": 2,
        "max_parallel_executions": 6,
        "resources": Resources(memory_bytes=2 * GIB),
        "image": STEP_IMAGE,
        "generation": 3,
        "deployment_id": "5f0c8a1e-7d2b-4c1a-9e3f-0b6d2a4c8e71",
    }
    values.update(changes)
    return WorkerSpec(**values)


CASES: dict[str, Any] = {
    "pod_cpu": lambda: manifests.execution_pod(cpu_spec(), CFG),
    "pod_gpu": lambda: manifests.execution_pod(
        cpu_spec(
            execution_id="train-0001",
            step_name="train",
            language="python-cuda:3.12-12.4",
            resources=Resources(cpu=4, memory_bytes=16 * GIB, gpu=2),
            deployment_name=None,
            timeout_s=None,
        ),
        CFG,
    ),
    "pod_file_inputs": lambda: manifests.execution_pod(
        cpu_spec(
            execution_id="resize-42",
            file_io=True,
            resources=Resources(memory_bytes=GIB, disk_bytes=10 * GIB),
            image=None,
        ),
        CFG,
    ),
    "deployment_low_latency": lambda: manifests.worker_deployment(worker_spec(), CFG),
    "service_low_latency": lambda: manifests.worker_service(worker_spec(), CFG),
    "pdb_low_latency": lambda: manifests.worker_disruption_budget(worker_spec(), CFG),
    "deployment_low_latency_shadow": lambda: manifests.worker_deployment(
        worker_spec(shadow_only=True), CFG
    ),
    "deployment_low_latency_gpu": lambda: manifests.worker_deployment(
        worker_spec(language="python-cuda:3.11-12.1", replicas=1, file_io=True), CFG
    ),
    "job_image_build": lambda: manifests.image_build_job(
        ImageBuild(
            step_name="clean_data",
            language="python:3.12-slim",
            context_url="s3://acme-gristmill/builds/ctx.tar.gz",
            digest=DIGEST,
        ),
        KubernetesConfig(
            registry="123456789012.dkr.ecr.eu-west-3.amazonaws.com/acme",
            runtime_sdk_version="0.1.0",
            registry_auth_secret="registry-push",
        ),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_manifest_matches_golden_file(case: str) -> None:
    built = CASES[case]()
    rendered = json.dumps(built, indent=2, sort_keys=True) + "\n"
    path = GOLDEN / f"{case}.json"
    if UPDATE:
        path.write_text(rendered)
    assert path.exists(), f"no golden file {path.name}: run with GRISTMILL_UPDATE_GOLDEN=1"
    assert json.loads(path.read_text()) == built, f"{case} differs from {path.name}"


def test_no_stray_golden_files() -> None:
    assert {path.stem for path in GOLDEN.glob("*.json")} == set(CASES)


def test_same_spec_same_manifest() -> None:
    assert manifests.execution_pod(cpu_spec(), CFG) == manifests.execution_pod(cpu_spec(), CFG)


# --- names and labels -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "execution_id",
    ["abc", "My_Pipeline.Run/7", "x" * 200, "ÉTÉ-2026", "--", "a" * 55],
)
def test_pod_name_is_dns_safe_and_deterministic(execution_id: str) -> None:
    pod = manifests.execution_pod(cpu_spec(execution_id=execution_id), CFG)
    name = pod["metadata"]["name"]
    assert is_resource_name(name), name
    assert name == manifests.execution_pod_name(execution_id)
    assert pod["metadata"]["annotations"]["gristmill.io/execution-id"] == execution_id
    for value in pod["metadata"]["labels"].values():
        assert is_label_value(value), value


def test_ids_that_clean_to_the_same_text_get_different_names() -> None:
    names = {manifests.execution_pod_name(raw) for raw in ("Run-1", "run-1", "run_1", "run.1")}
    assert len(names) == 4


def test_labels_identify_execution_step_pipeline_and_deployment() -> None:
    long_step = "s" * 80
    pod = manifests.execution_pod(cpu_spec(step_name=long_step, labels={"team": "risk"}), CFG)
    labels = pod["metadata"]["labels"]
    assert labels["gristmill.io/role"] == "worker"
    assert labels["gristmill.io/mode"] == "elastic"
    assert labels["gristmill.io/execution-id"] == "my-pipeline-6f1c2b7e"
    assert labels["gristmill.io/pipeline"] == "my-pipeline"
    assert labels["gristmill.io/deployment"] == "nightly-clean"
    assert labels["gristmill.io/environment"] == "prod"
    assert labels["team"] == "risk"
    assert len(labels["gristmill.io/step"]) <= 63 and is_label_value(labels["gristmill.io/step"])
    assert pod["metadata"]["annotations"]["gristmill.io/step"] == long_step


def test_caller_labels_cannot_override_ours() -> None:
    pod = manifests.execution_pod(cpu_spec(labels={"gristmill.io/role": "builder"}), CFG)
    assert pod["metadata"]["labels"]["gristmill.io/role"] == "worker"


def test_invalid_label_key_is_refused() -> None:
    with pytest.raises(ValueError, match="label key"):
        manifests.execution_pod(cpu_spec(labels={"bad key!": "x"}), CFG)


# --- resources and scheduling ---------------------------------------------------------------


def _container(manifest: dict[str, Any]) -> dict[str, Any]:
    spec = (
        manifest["spec"]["template"]["spec"] if "template" in manifest["spec"] else manifest["spec"]
    )
    container: dict[str, Any] = spec["containers"][0]
    return container


def test_memory_is_both_request_and_limit() -> None:
    pod = manifests.execution_pod(cpu_spec(resources=Resources(memory_bytes=3 * GIB)), CFG)
    resources = _container(pod)["resources"]
    assert resources["requests"]["memory"] == resources["limits"]["memory"] == "3Gi"
    assert "cpu" not in resources["limits"]


def test_defaults_apply_when_resources_are_unset() -> None:
    pod = manifests.execution_pod(cpu_spec(resources=Resources()), CFG)
    assert _container(pod)["resources"]["requests"] == {"cpu": "500m", "memory": "1Gi"}


@pytest.mark.parametrize(
    ("language", "gpu", "expected"),
    [
        ("python:3.12-slim", 0, 0),
        ("python:3.12-slim", 1, 1),  # a GPU request on a CPU image still gets the GPU
        ("python-cuda:3.12-12.4", 0, 1),  # a CUDA language always gets one
        ("python-cuda:3.10-11.8", 4, 4),
    ],
)
def test_gpu_limit_toleration_and_node_selector(language: str, gpu: int, expected: int) -> None:
    pod = manifests.execution_pod(cpu_spec(language=language, resources=Resources(gpu=gpu)), CFG)
    limits = _container(pod)["resources"]["limits"]
    if expected:
        assert limits["nvidia.com/gpu"] == str(expected)
        assert pod["spec"]["nodeSelector"] == {"gristmill.io/pool": "gpu"}
        assert pod["spec"]["tolerations"] == [
            {"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}
        ]
    else:
        assert "nvidia.com/gpu" not in limits
        assert "nodeSelector" not in pod["spec"] and "tolerations" not in pod["spec"]


def test_unsupported_language_is_refused() -> None:
    with pytest.raises(ValueError, match="python:3.X-slim"):
        manifests.execution_pod(cpu_spec(language="python:3.8-slim"), CFG)


@pytest.mark.parametrize(
    "changes",
    [
        {"argv": ()},
        {"timeout_s": 0},
        {"resources": Resources(cpu=0)},
        {"resources": Resources(gpu=-1)},
        {"resources": Resources(memory_bytes=0)},
        {"env": {"NOT-VALID": "x"}},
    ],
)
def test_bad_specs_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        manifests.execution_pod(cpu_spec(**changes), CFG)


def test_timeout_becomes_the_pod_deadline() -> None:
    assert (
        manifests.execution_pod(cpu_spec(timeout_s=90), CFG)["spec"]["activeDeadlineSeconds"] == 90
    )
    assert (
        "activeDeadlineSeconds"
        not in manifests.execution_pod(cpu_spec(timeout_s=None), CFG)["spec"]
    )


def test_file_io_adds_a_scratch_volume_and_tells_the_runner_where() -> None:
    pod = manifests.execution_pod(cpu_spec(file_io=True), CFG)
    assert pod["spec"]["volumes"] == [{"name": "io", "emptyDir": {}}]
    container = _container(pod)
    assert container["volumeMounts"] == [{"name": "io", "mountPath": "/gristmill/io"}]
    assert {"name": "GRISTMILL_IO_DIR", "value": "/gristmill/io"} in container["env"]
    plain = manifests.execution_pod(cpu_spec(file_io=False), CFG)
    assert "volumes" not in plain["spec"] and "volumeMounts" not in _container(plain)


def test_runtime_image_is_the_fallback_image() -> None:
    pod = manifests.execution_pod(cpu_spec(image=None, language="python:3.10-slim"), CFG)
    assert _container(pod)["image"] == (
        "123456789012.dkr.ecr.eu-west-3.amazonaws.com/acme/gristmill-runtime/python:3.10-slim"
    )


def test_worker_runs_as_the_runtime_images_user_without_cluster_credentials() -> None:
    pod = manifests.execution_pod(cpu_spec(), CFG)
    security = _container(pod)["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["spec"]["restartPolicy"] == "Never"


# --- low-latency ----------------------------------------------------------------------------


def test_deployment_and_service_select_only_this_deployments_warm_pods() -> None:
    deployment = manifests.worker_deployment(worker_spec(), CFG)
    service = manifests.worker_service(worker_spec(), CFG)
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == selector
    assert selector["gristmill.io/mode"] == "low-latency"
    template_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= template_labels.items()
    assert deployment["metadata"]["name"] == service["metadata"]["name"] == "gm-ll-fraud-score"


def test_selector_does_not_change_across_generations() -> None:
    # A Deployment's selector is immutable: an update must never touch it.
    before = manifests.worker_deployment(worker_spec(generation=1), CFG)
    after = manifests.worker_deployment(
        worker_spec(generation=2, step_name="other", labels={"x": "y"}), CFG
    )
    assert before["spec"]["selector"] == after["spec"]["selector"]


def test_generation_is_in_the_pod_template_so_a_bump_rolls_the_pods() -> None:
    one = manifests.worker_deployment(worker_spec(generation=1), CFG)
    two = manifests.worker_deployment(worker_spec(generation=2), CFG)
    assert one["spec"]["template"] != two["spec"]["template"]
    assert two["spec"]["template"]["metadata"]["annotations"]["gristmill.io/generation"] == "2"


def test_worker_env_carries_port_and_parallelism() -> None:
    env = {
        item["name"]: item.get("value")
        for item in _container(manifests.worker_deployment(worker_spec(), CFG))["env"]
    }
    assert env["GRISTMILL_WORKER_PORT"] == "8080"
    assert env["GRISTMILL_MAX_PARALLEL_EXECUTIONS"] == "6"


def test_gpu_workers_roll_without_a_surge_pod() -> None:
    cpu = manifests.worker_deployment(worker_spec(), CFG)["spec"]["strategy"]["rollingUpdate"]
    gpu = manifests.worker_deployment(worker_spec(resources=Resources(gpu=1)), CFG)["spec"][
        "strategy"
    ]["rollingUpdate"]
    assert cpu == {"maxSurge": 1, "maxUnavailable": 0}
    assert gpu == {"maxSurge": 0, "maxUnavailable": 1}


def test_shadow_only_workers_get_the_shadow_class_and_say_so() -> None:
    normal = manifests.worker_deployment(worker_spec(), CFG)
    shadow = manifests.worker_deployment(worker_spec(shadow_only=True), CFG)
    assert normal["spec"]["template"]["spec"]["priorityClassName"] == "gristmill-warm-worker"
    assert shadow["spec"]["template"]["spec"]["priorityClassName"] == "gristmill-shadow-worker"
    # what the pool reads back (after a restart) is on the Deployment, not its pods
    assert manifests.is_shadow_only(shadow) and not manifests.is_shadow_only(normal)
    assert manifests.ANNOTATION_SHADOW_ONLY not in shadow["spec"]["template"]["metadata"][
        "annotations"]
    # a smaller CPU request (its CPU weight under contention), the same memory
    assert _container(normal)["resources"]["requests"] == {"cpu": "500m", "memory": "2Gi"}
    assert _container(shadow)["resources"]["requests"] == {"cpu": "100m", "memory": "2Gi"}
    # nothing else differs: promotion only changes these (and rolls the pods)
    del shadow["metadata"]["annotations"][manifests.ANNOTATION_SHADOW_ONLY]
    shadow["spec"]["template"]["spec"]["priorityClassName"] = "gristmill-warm-worker"
    _container(shadow)["resources"]["requests"]["cpu"] = "500m"
    assert shadow == normal


def test_a_shadow_only_worker_keeps_a_cpu_request_its_spec_states() -> None:
    spec = worker_spec(shadow_only=True, resources=Resources(cpu=2, memory_bytes=GIB))
    container = _container(manifests.worker_deployment(spec, CFG))
    assert container["resources"]["requests"]["cpu"] == "2"
    smaller = replace(CFG, shadow_worker_cpu=0.25)
    assert _container(manifests.worker_deployment(worker_spec(shadow_only=True), smaller))[
        "resources"]["requests"]["cpu"] == "250m"


def test_an_empty_priority_class_setting_sets_no_class() -> None:
    unset = replace(CFG, shadow_worker_priority_class=None, warm_worker_priority_class=None)
    for shadow_only in (False, True):
        pod = manifests.worker_deployment(worker_spec(shadow_only=shadow_only), unset)
        assert "priorityClassName" not in pod["spec"]["template"]["spec"]
    # each setting for its own workers only
    only_shadow = replace(CFG, warm_worker_priority_class=None)
    assert "priorityClassName" not in manifests.worker_deployment(
        worker_spec(), only_shadow)["spec"]["template"]["spec"]
    assert manifests.worker_deployment(worker_spec(shadow_only=True), only_shadow)[
        "spec"]["template"]["spec"]["priorityClassName"] == "gristmill-shadow-worker"


@pytest.mark.parametrize(
    "changes", [{"port": 0}, {"port": 70000}, {"replicas": -1}, {"max_parallel_executions": 0}]
)
def test_bad_worker_specs_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        manifests.worker_deployment(worker_spec(**changes), CFG)


# --- image builds ---------------------------------------------------------------------------


def test_build_job_never_retries_and_is_named_after_the_content() -> None:
    build = ImageBuild("s", "python:3.12-slim", "s3://b/ctx.tar.gz", DIGEST)
    job = manifests.image_build_job(build, CFG)
    assert job["spec"]["backoffLimit"] == 0
    assert job["metadata"]["name"] == manifests.build_job_name(DIGEST)
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--output=type=image,name={CFG.step_repository}:{DIGEST},push=true" in args
    other = ImageBuild("another-step", "python:3.12-slim", "s3://b/ctx.tar.gz", DIGEST)
    assert manifests.image_build_job(other, CFG)["metadata"]["name"] == job["metadata"]["name"]


def test_step_dockerfile_installs_packages_then_requirements_then_code() -> None:
    text = step_dockerfile(["libgomp1", "curl", "libgomp1"], "requirements/prod.txt")
    assert text.index("FROM ${BASE_IMAGE}") < text.index("apt-get install")
    assert "--no-install-recommends curl libgomp1 " in text
    assert text.index("apt-get install") < text.index("pip install") < text.index(". /app")
    assert text.rstrip().splitlines()[-1] == "COPY --chown=10001:10001 . /app"
    assert "USER root" in text and text.count("USER 10001:10001") == 1


@pytest.mark.parametrize("package", ["curl; rm -rf /", "$(id)", "Upper", "a b"])
def test_step_dockerfile_refuses_what_is_not_a_package_name(package: str) -> None:
    with pytest.raises(ValueError, match="package name"):
        step_dockerfile([package])


@pytest.mark.parametrize("path", ["../secrets.txt", "/etc/passwd", 'req".txt'])
def test_step_dockerfile_refuses_paths_outside_the_context(path: str) -> None:
    with pytest.raises(ValueError, match="relative path"):
        step_dockerfile([], path)


def test_image_digest_changes_with_any_input() -> None:
    base = step_image_digest("b", "d", "c")
    assert (
        len(
            {
                base,
                step_image_digest("b2", "d", "c"),
                step_image_digest("b", "d2", "c"),
                step_image_digest("b", "d", "c2"),
            }
        )
        == 4
    )
    assert step_image_digest("b", "d", "c") == base


ECR_CFG = KubernetesConfig(
    registry="123456789012.dkr.ecr.eu-west-3.amazonaws.com/acme",
    runtime_sdk_version="0.1.0",
    build_namespace="gristmill-builds",
)


def _build_pod(job: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = job["spec"]["template"]["spec"]
    return pod


def test_build_pod_has_no_api_token_and_only_its_fetcher_gets_aws_credentials() -> None:
    job = manifests.image_build_job(
        ImageBuild("s", "python:3.12-slim", "s3://b/.gristmill/builds/x.tar.gz", DIGEST), ECR_CFG
    )
    pod = _build_pod(job)
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "gristmill-builder"
    assert job["metadata"]["namespace"] == "gristmill-builds"
    # the IRSA webhook skips the container that runs users' RUN lines
    annotations = job["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"eks.amazonaws.com/skip-containers": "buildkit"}
    (fetch,) = pod["initContainers"]
    env = {e["name"]: e["value"] for e in fetch["env"]}
    assert env == {"CONTEXT_URL": "s3://b/.gristmill/builds/x.tar.gz", "ECR_LOGIN": "1",
                   # what it asks ECR whether the image is there already (immutable tags)
                   "STEP_REPOSITORY": "acme/gristmill-steps", "IMAGE_TAG": DIGEST}
    assert fetch["securityContext"]["allowPrivilegeEscalation"] is False


def test_buildkit_runs_rootless_and_pushes_the_content_addressed_tag() -> None:
    job = manifests.image_build_job(
        ImageBuild("s", "python:3.12-slim", "s3://b/c.tar.gz", DIGEST, dockerfile="d/Dockerfile"),
        ECR_CFG,
    )
    pod = _build_pod(job)
    (builder,) = pod["containers"]
    assert builder["image"].endswith("-rootless") and "moby/buildkit" in builder["image"]
    assert pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["runAsNonRoot"] is True
    # newuidmap/newgidmap get CAP_SETUID/CAP_SETGID from their setuid bit or file
    # capabilities: neither an emptied bounding set nor no_new_privs may stop them
    assert "capabilities" not in builder["securityContext"]
    assert builder["securityContext"]["allowPrivilegeEscalation"] is True
    assert "privileged" not in builder["securityContext"]
    assert builder["command"][-1] == "build-step-image"
    assert "exec buildctl-daemonless.sh" in builder["command"][2]
    args = builder["args"]
    assert args[0] == "build"
    assert "--opt=filename=d/Dockerfile" in args
    assert f"--output=type=image,name={ECR_CFG.step_repository}:{DIGEST},push=true" in args
    cache = f"{ECR_CFG.cache_repository}:python-3.12-slim"
    assert f"--import-cache=type=registry,ref={cache}" in args
    assert any(a.startswith(f"--export-cache=type=registry,ref={cache},mode=max") for a in args)


@pytest.mark.parametrize(
    ("language", "request_gib"), [("python:3.12-slim", 10), ("python-cuda:3.11-12.1", 30)]
)
def test_builds_request_ephemeral_storage_sized_for_their_base(
    language: str, request_gib: int
) -> None:
    job = manifests.image_build_job(ImageBuild("s", language, "s3://b/c.tar.gz", DIGEST), CFG)
    (builder,) = _build_pod(job)["containers"]
    assert builder["resources"]["requests"]["ephemeral-storage"] == f"{request_gib}Gi"
    assert builder["resources"]["limits"]["ephemeral-storage"] == f"{request_gib * 3 // 2}Gi"


def test_a_push_secret_replaces_the_ecr_login() -> None:
    cfg = KubernetesConfig(
        registry="123456789012.dkr.ecr.eu-west-3.amazonaws.com/acme",
        runtime_sdk_version="0.1.0",
        registry_auth_secret="registry-push",
    )
    pod = _build_pod(
        manifests.image_build_job(ImageBuild("s", "python:3.12-slim", "s3://b/c", DIGEST), cfg)
    )
    (fetch,) = pod["initContainers"]
    assert "ECR_LOGIN" not in {e["name"] for e in fetch["env"]}
    (builder,) = pod["containers"]
    assert {"mountPath": "/home/user/.docker", "name": "registry-auth", "readOnly": True} in (
        builder["volumeMounts"]
    )
    # not ECR: no login either
    other = KubernetesConfig(registry="ghcr.io/acme", runtime_sdk_version="0.1.0")
    pod = _build_pod(
        manifests.image_build_job(ImageBuild("s", "python:3.12-slim", "s3://b/c", DIGEST), other)
    )
    assert "ECR_LOGIN" not in {e["name"] for e in pod["initContainers"][0]["env"]}


def _run_build_scripts(tmp_path: Path, image_there: bool) -> tuple[str, list[str]]:
    """The build Job's two scripts as its containers run them, with the AWS CLI and
    BuildKit (not on this machine) stood in by scripts that log their calls; the pod's
    /auth and /workspace volumes are folders of tmp_path."""
    import subprocess
    import tarfile

    auth, workspace, tools = tmp_path / "auth", tmp_path / "workspace", tmp_path / "bin"
    for folder in (auth, workspace, tools):
        folder.mkdir()
    calls = tmp_path / "calls"
    context = tmp_path / "context.tar.gz"
    with tarfile.open(context, "w:gz") as archive:
        archive.addfile(tarfile.TarInfo("Dockerfile"))
    (tools / "aws").write_text(
        "#!/bin/sh\n"
        f'echo "aws $*" >> {calls}\n'
        'case "$*" in\n'
        f'  "s3 cp"*) cp {context} {workspace}/context.tar.gz ;;\n'
        '  "ecr get-login-password") echo secret ;;\n'
        f'  "ecr describe-images"*) exit {0 if image_there else 254} ;;\n'
        "esac\n")
    (tools / "buildctl-daemonless.sh").write_text(f'#!/bin/sh\necho "buildctl $*" >> {calls}\n')
    for tool in tools.iterdir():
        tool.chmod(0o755)
    job = manifests.image_build_job(
        ImageBuild("s", "python:3.12-slim", "s3://b/c.tar.gz", DIGEST), ECR_CFG)
    pod = _build_pod(job)
    env = {**os.environ, "PATH": f"{tools}:{os.environ['PATH']}", "HOME": str(tmp_path)}
    for container in (*pod["initContainers"], *pod["containers"]):
        script = container["command"][2].replace("/auth", str(auth)).replace(
            "/workspace", str(workspace))
        done = subprocess.run(
            ["/bin/sh", "-ec", script, *container["command"][3:], *container.get("args", [])],
            env={**env, **{e["name"]: e["value"] for e in container["env"]}},
            capture_output=True, text=True, check=True)
    return done.stdout, calls.read_text().splitlines()


def test_an_image_already_in_the_registry_is_not_built_again(tmp_path: Path) -> None:
    """ECR refuses to overwrite an immutable tag, and a rebuild is not byte-identical:
    a step created again with the same code would fail for ever if it were rebuilt."""
    output, calls = _run_build_scripts(tmp_path, image_there=True)
    assert calls[-1] == ("aws ecr describe-images --repository-name acme/gristmill-steps "
                         f"--image-ids imageTag={DIGEST}")
    assert not any(call.startswith("buildctl") for call in calls)
    assert "already in the registry: not built again" in output
    assert f"{ECR_CFG.step_repository}:{DIGEST}" in output


def test_an_image_not_in_the_registry_is_built_and_pushed(tmp_path: Path) -> None:
    output, calls = _run_build_scripts(tmp_path, image_there=False)
    assert calls[-1].startswith("buildctl build --progress=plain")
    assert (tmp_path / "workspace" / "context" / "Dockerfile").exists()
    docker_config = json.loads((tmp_path / ".docker" / "config.json").read_text())
    assert list(docker_config["auths"]) == ["123456789012.dkr.ecr.eu-west-3.amazonaws.com"]
