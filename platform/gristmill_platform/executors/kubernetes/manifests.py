"""Pure builders: backend-neutral specs in, Kubernetes manifests (plain dicts) out.

Nothing here talks to a cluster, reads the clock or the environment, so the same spec
always gives the same manifest (golden-file tested in tests/platform/executors).

An elastic execution is a bare Pod with ``restartPolicy: Never``, not a Job with
``backoffLimit: 0``:

* the pod's name is derived from the execution id, so a repeated submit meets 409 Conflict
  on that very object; a Job names its pod itself, and finding it again means a label
  query;
* a Job may still start a second pod for one completion (the Job documentation warns so),
  while an execution must run at most once: retries are the control service's decision;
* the outcome lives in one object (phase, container state, ``DeadlineExceeded``) instead of
  being split between a Job and a pod that do not update together;
* ``activeDeadlineSeconds`` on the pod carries the execution timeout, and lowering it is
  how a running execution is cancelled without losing its logs (see executor.cancel).

What a Job would add (node-failure rescheduling, TTL garbage collection) is either unwanted
(an execution must not silently restart) or done by the executor's cleanup.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from gristmill.languages import parse_language, runtime_image
from gristmill_platform.executors.kubernetes.config import KubernetesConfig
from gristmill_platform.executors.kubernetes.images import (
    ImageBuild,
    base_image,
    step_image_ref,
)
from gristmill_platform.executors.kubernetes.naming import label_value, resource_name
from gristmill_platform.executors.spec import LaunchSpec, Resources, WorkerSpec
from gristmill_platform.executors.workers import split_key

Manifest = dict[str, Any]

LABEL_ROLE = "gristmill.io/role"
LABEL_MODE = "gristmill.io/mode"
LABEL_EXECUTION = "gristmill.io/execution-id"
LABEL_STEP = "gristmill.io/step"
LABEL_PIPELINE = "gristmill.io/pipeline"
LABEL_DEPLOYMENT = "gristmill.io/deployment"
LABEL_IMAGE = "gristmill.io/image-digest"
# The deployment a warm-worker object belongs to, whichever of its pools it serves (its own
# pipeline, a variant pipeline of its traffic rule, a node of its multi-step pipeline):
# what deleting the deployment deletes by, on every replica (executor.delete_workers_of).
LABEL_DEPLOYMENT_NAME = "gristmill.io/deployment-name"
LABEL_DEPLOYMENT_ID = "gristmill.io/deployment-id"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"

# Label values are cut to 63 characters; annotations keep the exact names.
ANNOTATION_EXECUTION = "gristmill.io/execution-id"
ANNOTATION_STEP = "gristmill.io/step"
ANNOTATION_PIPELINE = "gristmill.io/pipeline"
ANNOTATION_DEPLOYMENT = "gristmill.io/deployment"
ANNOTATION_GENERATION = "gristmill.io/generation"
ANNOTATION_CANCELLED = "gristmill.io/cancelled"
# On a warm-worker Deployment started for shadow copies only (WorkerSpec.shadow_only):
# what the pool reads back, so that a control service that lost its memory (restarted,
# another replica) neither lowers a Deployment that answers calls nor forgets it is low.
ANNOTATION_SHADOW_ONLY = "gristmill.io/shadow-only"
# The cluster autoscaler would otherwise drain a node under a running execution.
ANNOTATION_SAFE_TO_EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"

ROLE_WORKER = "worker"
ROLE_BUILDER = "builder"
MODE_ELASTIC = "elastic"
MODE_LOW_LATENCY = "low-latency"

CONTAINER = "runner"
BUILD_CONTAINER = "buildkit"
BUILD_FETCH_CONTAINER = "fetch-context"
# The IAM-roles-for-service-accounts webhook projects the AWS web identity token into every
# container but those named here: users' RUN lines run under BuildKit, never with it.
ANNOTATION_IRSA_SKIP = "eks.amazonaws.com/skip-containers"
BUILDKIT_UID = 1000  # the `user` of moby/buildkit's rootless image
_ECR_HOST = re.compile(r"[0-9]{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")
IO_VOLUME = "io"
PORT_NAME = "http"

# The runner's server mode (gristmill.runtime.serve): the address it listens on, how long a
# stopped worker keeps serving the connections it has, and the secret every request carries.
WORKER_HOST_VAR = "GRISTMILL_WORKER_HOST"
WORKER_DRAIN_VAR = "GRISTMILL_WORKER_DRAIN_S"
WORKER_SECRET_VAR = "GRISTMILL_WORKER_SECRET"  # noqa: S105 - a variable's name
WORKER_SECRET_HEADER = "X-Gristmill-Worker-Secret"  # noqa: S105 - a header's name
# Between the end of a stopped worker's drain and the kubelet's SIGKILL.
DRAIN_MARGIN_S = 10

EXECUTION_PREFIX = "gm-exec-"
WORKER_PREFIX = "gm-ll-"
BUILD_PREFIX = "gm-build-"

_LABEL_KEY = re.compile(
    r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# --- names ----------------------------------------------------------------------------------


def execution_pod_name(execution_id: str) -> str:
    return resource_name(EXECUTION_PREFIX, execution_id)


def worker_name(deployment_name: str) -> str:
    """The Deployment's and the Service's name for a low-latency deployment."""
    return resource_name(WORKER_PREFIX, deployment_name)


def build_job_name(digest: str) -> str:
    return resource_name(BUILD_PREFIX, digest[:32])


def worker_selector(deployment_name: str) -> dict[str, str]:
    """Labels that pick a low-latency deployment's pods, and nothing else.

    Elastic pods of the same deployment also carry its label: the mode tells them apart.
    A Deployment's selector is immutable, so it only holds values that never change.
    """
    return {
        LABEL_ROLE: ROLE_WORKER,
        LABEL_MODE: MODE_LOW_LATENCY,
        LABEL_DEPLOYMENT: label_value(deployment_name),
    }


def deployment_workers_selector(deployment_name: str) -> dict[str, str]:
    """Labels of every warm-worker object (Deployment, Service, PodDisruptionBudget) of a
    deployment: its own pipeline's, its variant pipelines' and its node pools'."""
    return {
        LABEL_MANAGED_BY: "gristmill",
        LABEL_ROLE: ROLE_WORKER,
        LABEL_MODE: MODE_LOW_LATENCY,
        LABEL_DEPLOYMENT_NAME: label_value(deployment_name),
    }


def execution_pods_selector() -> dict[str, str]:
    """Labels of every elastic execution's pod (what the pod watcher watches, and the
    orphan sweeper sweeps): Gristmill's, in elastic mode. Warm workers are another mode."""
    return {LABEL_MANAGED_BY: "gristmill", LABEL_MODE: MODE_ELASTIC}


# --- shared pieces --------------------------------------------------------------------------


def _labels(
    cfg: KubernetesConfig, extra: Mapping[str, str], ours: Mapping[str, str]
) -> dict[str, str]:
    labels: dict[str, str] = {}
    for key, value in [*cfg.labels.items(), *extra.items()]:
        if not _LABEL_KEY.fullmatch(key) or len(key.rpartition("/")[0]) > 253:
            raise ValueError(f"invalid Kubernetes label key {key!r}")
        labels[key] = label_value(value)
    # Ours last: a caller's label must never change how the executor finds its objects.
    labels.update({key: label_value(value) for key, value in ours.items()})
    labels[LABEL_MANAGED_BY] = "gristmill"
    return dict(sorted(labels.items()))


def gpu_count(resources: Resources, language: str) -> int:
    """GPUs to reserve: the request, or one for a CUDA language that asked for none."""
    if resources.gpu < 0:
        raise ValueError(f"gpu must be >= 0, got {resources.gpu}")
    if resources.gpu:
        return resources.gpu
    return 1 if parse_language(language).needs_gpu else 0


def cpu_quantity(cpu: float) -> str:
    if cpu <= 0:
        raise ValueError(f"cpu must be > 0, got {cpu}")
    millis = round(cpu * 1000)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def bytes_quantity(size: int) -> str:
    if size <= 0:
        raise ValueError(f"a size must be > 0 bytes, got {size}")
    for suffix, unit in (("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def _resources(resources: Resources, gpus: int, cfg: KubernetesConfig) -> dict[str, Any]:
    memory_bytes = resources.memory_bytes
    memory = bytes_quantity(cfg.default_memory_bytes if memory_bytes is None else memory_bytes)
    cpu = cpu_quantity(resources.cpu if resources.cpu is not None else cfg.default_cpu)
    # Memory limit = request: the scheduler reserves exactly what the step may use, and
    # going over is a clear OOM kill rather than an eviction of someone else's worker.
    # No CPU limit: throttling slows the step down without protecting anyone; the request
    # already guarantees its share.
    requests: dict[str, str] = {"cpu": cpu, "memory": memory}
    limits: dict[str, str] = {"memory": memory}
    if resources.disk_bytes is not None:
        requests["ephemeral-storage"] = limits["ephemeral-storage"] = bytes_quantity(
            resources.disk_bytes
        )
    if gpus:
        limits[cfg.gpu_resource] = str(gpus)
    return {"limits": limits, "requests": requests}


def _scheduling(gpus: int, cfg: KubernetesConfig) -> dict[str, Any]:
    if gpus:
        return {
            "nodeSelector": dict(cfg.gpu_node_selector),
            "tolerations": [dict(toleration) for toleration in cfg.gpu_tolerations],
        }
    return {"nodeSelector": dict(cfg.cpu_node_selector)} if cfg.cpu_node_selector else {}


def _env(values: Mapping[str, str], extra: Mapping[str, str]) -> list[dict[str, Any]]:
    merged = {**values, **extra}
    for name in merged:
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(f"invalid environment variable name {name!r}")
    env: list[dict[str, Any]] = [{"name": k, "value": merged[k]} for k in sorted(merged)]
    # Where the worker runs, for the execution row and per-worker metrics.
    for name, path in (
        ("GRISTMILL_POD_NAME", "metadata.name"),
        ("GRISTMILL_NODE_NAME", "spec.nodeName"),
    ):
        env.append({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}})
    return env


def _image(image: str | None, language: str, cfg: KubernetesConfig) -> str:
    # No step image (yet): the runtime image alone can still run the runner.
    return image or runtime_image(language, cfg.runtime_images, cfg.runtime_sdk_version)


def _io(
    file_io: bool, resources: Resources, cfg: KubernetesConfig
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, str]]:
    """(volumes, volumeMounts, env) for the scratch directory of file inputs/outputs."""
    if not file_io:
        return [], [], {}
    empty_dir: dict[str, Any] = {}
    if resources.disk_bytes is not None:
        empty_dir["sizeLimit"] = bytes_quantity(resources.disk_bytes)
    return (
        [{"name": IO_VOLUME, "emptyDir": empty_dir}],
        [{"name": IO_VOLUME, "mountPath": cfg.io_dir}],
        {"GRISTMILL_IO_DIR": cfg.io_dir},
    )


def _container_security(cfg: KubernetesConfig) -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsGroup": cfg.run_as_user,
        "runAsNonRoot": True,
        "runAsUser": cfg.run_as_user,
    }


def step_pod_spec(cfg: KubernetesConfig, container: dict[str, Any], gpus: int,
                  volumes: list[dict[str, Any]]) -> dict[str, Any]:
    """What every pod running a step's runner shares, an execution's own or a pre-started
    pool pod: one container, never restarted (an execution runs once), the step priority."""
    pod_spec: dict[str, Any] = {
        **_pod_common(cfg, cfg.service_account),
        "containers": [container],
        "restartPolicy": "Never",
        "securityContext": {
            "fsGroup": cfg.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        **_scheduling(gpus, cfg),
    }
    if cfg.step_priority_class:
        pod_spec["priorityClassName"] = cfg.step_priority_class
    if volumes:
        pod_spec["volumes"] = volumes
    return pod_spec


def _pod_common(cfg: KubernetesConfig, service_account: str | None) -> dict[str, Any]:
    common: dict[str, Any] = {
        "automountServiceAccountToken": False,
        # Service links put one variable per Service of the namespace into the worker.
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": cfg.termination_grace_s,
    }
    if service_account:
        common["serviceAccountName"] = service_account
    if cfg.image_pull_secrets:
        common["imagePullSecrets"] = [{"name": name} for name in cfg.image_pull_secrets]
    return common


def _identity_annotations(
    execution_id: str | None, step: str, pipeline: str, deployment: str | None
) -> dict[str, str]:
    annotations = {ANNOTATION_STEP: step, ANNOTATION_PIPELINE: pipeline}
    if execution_id is not None:
        annotations[ANNOTATION_EXECUTION] = execution_id
    if deployment is not None:
        annotations[ANNOTATION_DEPLOYMENT] = deployment
    return annotations


# --- elastic executions ---------------------------------------------------------------------


def execution_pod(spec: LaunchSpec, cfg: KubernetesConfig) -> Manifest:
    """The pod that runs one elastic execution, then stops."""
    if not spec.argv:
        raise ValueError("LaunchSpec.argv is empty: nothing to run")
    if spec.timeout_s is not None and spec.timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {spec.timeout_s}")
    gpus = gpu_count(spec.resources, spec.language)
    ours = {
        LABEL_ROLE: ROLE_WORKER,
        LABEL_MODE: MODE_ELASTIC,
        LABEL_EXECUTION: spec.execution_id,
        LABEL_STEP: spec.step_name,
        LABEL_PIPELINE: spec.pipeline_name,
    }
    if spec.deployment_name is not None:
        ours[LABEL_DEPLOYMENT] = spec.deployment_name
    volumes, mounts, io_env = _io(spec.file_io, spec.resources, cfg)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": _image(spec.image, spec.language, cfg),
        "imagePullPolicy": cfg.image_pull_policy,
        # The full command line, not args: steps built from their own Dockerfile may
        # have another entrypoint, and the runner must start all the same.
        "command": list(spec.argv),
        "env": _env(spec.env, io_env),
        "resources": _resources(spec.resources, gpus, cfg),
        "securityContext": _container_security(cfg),
        # A failed runner's last log lines become the termination message, which the
        # status mapping shows to the user.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if mounts:
        container["volumeMounts"] = mounts
    pod_spec = step_pod_spec(cfg, container, gpus, volumes)
    if spec.timeout_s is not None:
        pod_spec["activeDeadlineSeconds"] = spec.timeout_s
    annotations = _identity_annotations(
        spec.execution_id, spec.step_name, spec.pipeline_name, spec.deployment_name
    )
    annotations[ANNOTATION_SAFE_TO_EVICT] = "false"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": execution_pod_name(spec.execution_id),
            "namespace": cfg.namespace,
            "labels": _labels(cfg, spec.labels, ours),
            "annotations": dict(sorted(annotations.items())),
        },
        "spec": dict(sorted(pod_spec.items())),
    }


# --- low-latency deployments ----------------------------------------------------------------


def _worker_labels(spec: WorkerSpec, cfg: KubernetesConfig) -> dict[str, str]:
    ours = {
        **worker_selector(spec.deployment_name),
        LABEL_STEP: spec.step_name,
        LABEL_PIPELINE: spec.pipeline_name,
    }
    return _labels(cfg, spec.labels, ours)


def _worker_object_labels(spec: WorkerSpec, cfg: KubernetesConfig) -> dict[str, str]:
    """The labels of the Deployment, Service and PodDisruptionBudget themselves: the pods'
    and the owning deployment's name and id. Not on the pod template: adding them there
    would roll every warm worker of an existing installation on upgrade, for nothing."""
    owner = {LABEL_DEPLOYMENT_NAME: label_value(split_key(spec.deployment_name)[0])}
    if spec.deployment_id:
        owner[LABEL_DEPLOYMENT_ID] = label_value(spec.deployment_id)
    return dict(sorted({**_worker_labels(spec, cfg), **owner}.items()))


def worker_deployment(spec: WorkerSpec, cfg: KubernetesConfig) -> Manifest:
    """The Deployment of warm workers running the runner's server mode."""
    if not spec.argv:
        raise ValueError("WorkerSpec.argv is empty: nothing to run")
    if spec.replicas < 0 or spec.max_parallel_executions < 1:
        raise ValueError("replicas must be >= 0 and max_parallel_executions >= 1")
    if not 0 < spec.port < 65536:
        raise ValueError(f"port must be in 1..65535, got {spec.port}")
    gpus = gpu_count(spec.resources, spec.language)
    labels = _worker_labels(spec, cfg)
    volumes, mounts, io_env = _io(spec.file_io, spec.resources, cfg)
    drain_s = _drain_seconds(spec, cfg)
    extra_env = {
        **io_env,
        "GRISTMILL_WORKER_PORT": str(spec.port),
        "GRISTMILL_MAX_PARALLEL_EXECUTIONS": str(spec.max_parallel_executions),
        # The control service and the kubelet's probe reach the pod at its IP, not at
        # 127.0.0.1, where the server listens by default.
        WORKER_HOST_VAR: "0.0.0.0",  # inside the pod's own network namespace
        # A rollout stops the old pod while it may run executions: it finishes them first.
        WORKER_DRAIN_VAR: str(drain_s),
    }
    probe: dict[str, Any] = {"path": cfg.worker_health_path, "port": PORT_NAME}
    if spec.env.get(WORKER_SECRET_VAR):
        # the server answers no request without its secret, the probe's included
        probe["httpHeaders"] = [{"name": WORKER_SECRET_HEADER,
                                 "value": spec.env[WORKER_SECRET_VAR]}]
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": _image(spec.image, spec.language, cfg),
        "imagePullPolicy": cfg.image_pull_policy,
        "command": list(spec.argv),
        "env": _env(spec.env, extra_env),
        "ports": [{"containerPort": spec.port, "name": PORT_NAME, "protocol": "TCP"}],
        # Ready once the step module is imported and the server listens. No liveness
        # probe: a worker busy with long synchronous executions must not be restarted.
        "readinessProbe": {
            "failureThreshold": 3,
            "httpGet": probe,
            "periodSeconds": 5,
        },
        "resources": _resources(_worker_resources(spec, cfg), gpus, cfg),
        "securityContext": _container_security(cfg),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if mounts:
        container["volumeMounts"] = mounts
    pod_spec: dict[str, Any] = {
        **_pod_common(cfg, cfg.service_account),
        "containers": [container],
        "securityContext": {
            "fsGroup": cfg.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        **_scheduling(gpus, cfg),
        "terminationGracePeriodSeconds": max(cfg.termination_grace_s, drain_s + DRAIN_MARGIN_S),
    }
    priority_class = worker_priority_class(spec, cfg)
    if priority_class:
        pod_spec["priorityClassName"] = priority_class
    if volumes:
        pod_spec["volumes"] = volumes
    # A surge pod needs a second GPU that a small GPU pool rarely has, which would stall the
    # rollout: GPU workers are replaced one at a time instead (a short gap, no deadlock).
    rolling = {"maxSurge": 0, "maxUnavailable": 1} if gpus else {"maxSurge": 1, "maxUnavailable": 0}
    identity = _identity_annotations(None, spec.step_name, spec.pipeline_name, spec.deployment_name)
    template_annotations = {**identity, ANNOTATION_GENERATION: str(spec.generation)}
    # on the Deployment only: the pod template's class is what rolls the pods
    object_annotations = {**template_annotations}
    if spec.shadow_only:
        object_annotations[ANNOTATION_SHADOW_ONLY] = "true"
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": worker_name(spec.deployment_name),
            "namespace": cfg.namespace,
            "labels": _worker_object_labels(spec, cfg),
            "annotations": dict(sorted(object_annotations.items())),
        },
        "spec": {
            "progressDeadlineSeconds": cfg.worker_progress_deadline_s,
            "replicas": spec.replicas,
            "revisionHistoryLimit": 2,
            "selector": {"matchLabels": worker_selector(spec.deployment_name)},
            "strategy": {"rollingUpdate": rolling, "type": "RollingUpdate"},
            "template": {
                "metadata": {
                    "annotations": dict(sorted(template_annotations.items())),
                    "labels": labels,
                },
                "spec": dict(sorted(pod_spec.items())),
            },
        },
    }


def worker_priority_class(spec: WorkerSpec, cfg: KubernetesConfig) -> str | None:
    """The PriorityClass of a Deployment's warm workers: the shadow workers' for workers
    started for shadow copies only (docs/rollout.md), else the warm workers'. None: the
    cluster's default priority (the setting is empty)."""
    return cfg.shadow_worker_priority_class if spec.shadow_only \
        else cfg.warm_worker_priority_class


def _worker_resources(spec: WorkerSpec, cfg: KubernetesConfig) -> Resources:
    """A shadow-only worker asks for less CPU when its spec does not say: with no CPU
    limit it still uses whatever the node leaves, but its cgroup's CPU weight follows the
    request, so under contention the workers that answer calls get the larger share (the
    local backend's nice level, as far as Kubernetes has one)."""
    if spec.shadow_only and spec.resources.cpu is None:
        return replace(spec.resources, cpu=cfg.shadow_worker_cpu)
    return spec.resources


def is_shadow_only(deployment: Mapping[str, Any]) -> bool:
    """Whether a live warm-worker Deployment was applied for shadow copies only."""
    annotations = (deployment.get("metadata") or {}).get("annotations") or {}
    return annotations.get(ANNOTATION_SHADOW_ONLY) == "true"


def _drain_seconds(spec: WorkerSpec, cfg: KubernetesConfig) -> int:
    """How long a stopped worker keeps serving: the spec's (the deployment's execution
    timeout), or what the default grace period leaves."""
    raw = spec.env.get(WORKER_DRAIN_VAR)
    if raw is None:
        return max(cfg.termination_grace_s - DRAIN_MARGIN_S, 1)
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"{WORKER_DRAIN_VAR} must be a whole number of seconds, got {raw!r}")
    return value


def worker_service(spec: WorkerSpec, cfg: KubernetesConfig) -> Manifest:
    """The ClusterIP Service the control service dispatches executions through."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": worker_name(spec.deployment_name),
            "namespace": cfg.namespace,
            "labels": _worker_object_labels(spec, cfg),
            "annotations": {ANNOTATION_DEPLOYMENT: spec.deployment_name},
        },
        "spec": {
            "ports": [
                {"name": PORT_NAME, "port": spec.port, "protocol": "TCP", "targetPort": PORT_NAME}
            ],
            "selector": worker_selector(spec.deployment_name),
            "type": "ClusterIP",
        },
    }


def worker_disruption_budget(spec: WorkerSpec, cfg: KubernetesConfig) -> Manifest:
    """The PodDisruptionBudget of a low-latency deployment's warm workers.

    Voluntary disruptions (node drains, cluster-autoscaler scale-downs, upgrades) take at
    most one warm worker at a time, so a deployment of several replicas keeps serving
    through a drain. ``maxUnavailable: 1`` rather than ``minAvailable: replicas``: the
    latter would block every drain of a node holding one of them, for ever. A worker that
    is not ready (crash loop, bad image) may always be evicted: it serves nothing anyway,
    and must not hold a node.
    """
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": worker_name(spec.deployment_name),
            "namespace": cfg.namespace,
            "labels": _worker_object_labels(spec, cfg),
            "annotations": {ANNOTATION_DEPLOYMENT: spec.deployment_name},
        },
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": worker_selector(spec.deployment_name)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


# --- step image builds ----------------------------------------------------------------------


# Runs in the AWS CLI image as uid 1000: copies the context archive next to BuildKit and,
# for ECR, writes a registry password that lives as long as the pod (12 hours at most).
_FETCH_SCRIPT = """\
export HOME=/tmp
if [ -n "${S3_ENDPOINT:-}" ]; then set -- --endpoint-url "$S3_ENDPOINT"; fi
if [ "${S3_FORCE_PATH_STYLE:-}" = true ]; then aws configure set s3.addressing_style path; fi
aws "$@" s3 cp --only-show-errors "$CONTEXT_URL" /workspace/context.tar.gz
if [ "${ECR_LOGIN:-}" = 1 ]; then
  aws ecr get-login-password > /auth/registry-password
  # The step repository's tags are immutable: a rebuild of an image already pushed (a
  # step deleted and created again, a retry after the push) would be refused. Its tag is
  # the content's address, so the image there is this build's.
  if aws ecr describe-images --repository-name "$STEP_REPOSITORY" \
      --image-ids imageTag="$IMAGE_TAG" > /dev/null 2>&1; then
    : > /auth/image-present
  fi
fi
"""

# Runs in BuildKit's rootless image (busybox): unpacks the context, turns the ECR password
# into a Docker config, then builds and pushes with a daemon that lives as long as the pod.
_BUILD_SCRIPT = """\
if [ -e /auth/image-present ]; then
  echo "The image $IMAGE_REF is already in the registry: not built again"
  exit 0
fi
mkdir -p /workspace/context
tar -xzf /workspace/context.tar.gz -C /workspace/context
rm /workspace/context.tar.gz
if [ -s /auth/registry-password ]; then
  mkdir -p "$HOME/.docker"
  auth=$(printf 'AWS:%s' "$(cat /auth/registry-password)" | base64 | tr -d '\\n')
  printf '{"auths":{"%s":{"auth":"%s"}}}' "$REGISTRY_HOST" "$auth" > "$HOME/.docker/config.json"
fi
exec buildctl-daemonless.sh "$@"
"""


def registry_host(cfg: KubernetesConfig) -> str:
    return cfg.registry.split("/", 1)[0]


def build_ephemeral_storage(build: ImageBuild, cfg: KubernetesConfig) -> int:
    return (
        cfg.build_cuda_ephemeral_storage_bytes
        if parse_language(build.language).cuda_version
        else cfg.build_ephemeral_storage_bytes
    )


def buildctl_args(build: ImageBuild, cfg: KubernetesConfig) -> list[str]:
    """The build: the Dockerfile frontend on the unpacked context, the runtime image as
    BASE_IMAGE, the step image pushed, and a layer cache per runtime image kept in the
    cache repository (OCI manifests: what ECR stores)."""
    cache = f"{cfg.cache_repository}:{re.sub(r'[^A-Za-z0-9_.-]', '-', build.language)}"
    return [
        "build",
        "--progress=plain",
        "--frontend=dockerfile.v0",
        "--local=context=/workspace/context",
        "--local=dockerfile=/workspace/context",
        f"--opt=filename={build.dockerfile}",
        f"--opt=build-arg:BASE_IMAGE={base_image(build.language, cfg)}",
        f"--output=type=image,name={step_image_ref(cfg, build.digest)},push=true",
        f"--import-cache=type=registry,ref={cache}",
        f"--export-cache=type=registry,ref={cache},mode=max,image-manifest=true,"
        "oci-mediatypes=true",
    ]


def image_build_job(build: ImageBuild, cfg: KubernetesConfig) -> Manifest:
    """A Job that builds one step image with rootless BuildKit and pushes it.

    Named after the image's content digest: identical steps share one build and one image.
    The build pod has no Kubernetes API token; only its init container, which fetches the
    context and logs in to the registry, gets the builder's AWS identity (scoped to reading
    build contexts and pushing to the step and cache repositories).
    """
    labels = _labels(
        cfg,
        {},
        {
            LABEL_ROLE: ROLE_BUILDER,
            LABEL_STEP: build.step_name,
            LABEL_IMAGE: build.digest[:32],
        },
    )
    ecr_login = _ECR_HOST.fullmatch(registry_host(cfg)) is not None and not cfg.registry_auth_secret
    mounts = [
        {"mountPath": "/workspace", "name": "workspace"},
        {"mountPath": "/auth", "name": "auth"},
    ]
    fetch_env = {"CONTEXT_URL": build.context_url, **dict(build.env)}
    if ecr_login:
        fetch_env["ECR_LOGIN"] = "1"
        fetch_env["STEP_REPOSITORY"] = cfg.step_repository.split("/", 1)[1]
        fetch_env["IMAGE_TAG"] = build.digest
    fetch: dict[str, Any] = {
        "name": BUILD_FETCH_CONTAINER,
        "image": cfg.builder_tools_image,
        "command": ["/bin/sh", "-ec", _FETCH_SCRIPT],
        "env": [{"name": k, "value": v} for k, v in sorted(fetch_env.items())],
        "resources": {
            "limits": {"memory": "256Mi", "ephemeral-storage": "1Gi"},
            "requests": {"cpu": "100m", "memory": "256Mi", "ephemeral-storage": "64Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
    }
    storage = build_ephemeral_storage(build, cfg)
    builder: dict[str, Any] = {
        "name": BUILD_CONTAINER,
        "image": cfg.buildkit_image,
        "command": ["/bin/sh", "-ec", _BUILD_SCRIPT, "build-step-image"],
        "args": buildctl_args(build, cfg),
        "env": [
            # RUN lines share the daemon's process namespace: nothing else runs here, and
            # a nested sandbox would need privileges the pod does not have.
            {"name": "BUILDKITD_FLAGS", "value": "--oci-worker-no-process-sandbox"},
            {"name": "REGISTRY_HOST", "value": registry_host(cfg)},
            {"name": "IMAGE_REF", "value": step_image_ref(cfg, build.digest)},
        ],
        "resources": {
            "limits": {
                "memory": bytes_quantity(build.memory_bytes),
                "ephemeral-storage": bytes_quantity(storage * 3 // 2),
            },
            "requests": {
                "cpu": cpu_quantity(build.cpu),
                "memory": bytes_quantity(build.memory_bytes),
                "ephemeral-storage": bytes_quantity(storage),
            },
        },
        # Rootless BuildKit (rootlesskit) maps its user namespace's ids with newuidmap and
        # newgidmap, which need CAP_SETUID and CAP_SETGID from their setuid bit or file
        # capabilities: with a bounding set emptied (capabilities drop ALL) or
        # no_new_privs, they fail ("Could not set caps") and buildkitd never starts. So
        # the container runs as uid 1000 with the runtime's default capabilities and
        # privilege escalation allowed, as BuildKit's rootless example does; its
        # namespace is the builds' own, privileged one (docs/images.md).
        "securityContext": {
            "allowPrivilegeEscalation": True,
            "seccompProfile": {"type": "Unconfined"},
            "appArmorProfile": {"type": "Unconfined"},
        },
        "volumeMounts": [
            *mounts,
            {"mountPath": "/home/user/.local/share/buildkit", "name": "buildkitd"},
        ],
    }
    volumes: list[dict[str, Any]] = [
        {"emptyDir": {}, "name": "buildkitd"},
        {"emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}, "name": "auth"},
        {"emptyDir": {}, "name": "workspace"},
    ]
    if cfg.registry_auth_secret:
        builder["volumeMounts"].append(
            {"mountPath": "/home/user/.docker", "name": "registry-auth", "readOnly": True}
        )
        volumes.append(
            {
                "name": "registry-auth",
                "secret": {
                    "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                    "secretName": cfg.registry_auth_secret,
                },
            }
        )
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "containers": [builder],
        "enableServiceLinks": False,
        "initContainers": [fetch],
        "restartPolicy": "Never",
        "securityContext": {
            "fsGroup": BUILDKIT_UID,
            "runAsGroup": BUILDKIT_UID,
            "runAsNonRoot": True,
            "runAsUser": BUILDKIT_UID,
        },
        "volumes": volumes,
    }
    if cfg.builder_service_account:
        pod_spec["serviceAccountName"] = cfg.builder_service_account
    if cfg.build_priority_class:
        pod_spec["priorityClassName"] = cfg.build_priority_class
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": build_job_name(build.digest),
            "namespace": cfg.builds_namespace,
            "labels": labels,
            "annotations": {ANNOTATION_STEP: build.step_name},
        },
        "spec": {
            "activeDeadlineSeconds": cfg.build_timeout_s,
            # A failed build is a user error (bad requirement, missing package) or a
            # registry outage: either way a retry is the user's or the service's call.
            "backoffLimit": 0,
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {ANNOTATION_IRSA_SKIP: BUILD_CONTAINER},
                },
                "spec": dict(sorted(pod_spec.items())),
            },
            "ttlSecondsAfterFinished": cfg.build_ttl_s,
        },
    }
