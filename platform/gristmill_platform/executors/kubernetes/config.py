"""What the Kubernetes backend needs to know about its cluster, as plain data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gristmill_platform.settings import Settings

GIB = 1024**3

# The label every node of the GPU pool carries and the taint that keeps other pods off it;
# infra/ sets both on the GPU node group, and the NVIDIA device plugin uses the same key.
GPU_POOL_SELECTOR: Mapping[str, str] = MappingProxyType({"gristmill.io/pool": "gpu"})
GPU_TOLERATIONS: tuple[Mapping[str, str], ...] = (
    MappingProxyType({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}),
)

DEFAULT_SERVICEACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


@dataclass(frozen=True)
class KubernetesConfig:
    """One environment's Kubernetes settings (namespace, registry, images, scheduling).

    Only the executor reads the connection fields (``kubeconfig``, ``context``,
    ``in_cluster``); the manifest builders read the rest.
    """

    namespace: str = "gristmill-workers"
    # Where step images are pushed: ``<registry>/gristmill-steps:<digest>``.
    registry: str = "registry.invalid/gristmill"
    # Where the runtime base images live; defaults to ``<registry>/gristmill-runtime``.
    runtime_repository: str | None = None
    # Base step images on the immutable ``<tag>-sdk<version>`` runtime tags when set.
    runtime_sdk_version: str | None = None
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    # Workers never talk to the Kubernetes API: their account gets no token mounted.
    service_account: str | None = "gristmill-worker"
    labels: Mapping[str, str] = field(default_factory=dict)  # added to every object

    default_cpu: float = 0.5
    # the CPU request of warm workers started for shadow copies only (WorkerSpec.shadow_only)
    shadow_worker_cpu: float = 0.1
    default_memory_bytes: int = 1 * GIB
    gpu_resource: str = "nvidia.com/gpu"
    gpu_node_selector: Mapping[str, str] = field(default_factory=lambda: dict(GPU_POOL_SELECTOR))
    gpu_tolerations: tuple[Mapping[str, str], ...] = GPU_TOLERATIONS
    cpu_node_selector: Mapping[str, str] = field(default_factory=dict)

    io_dir: str = "/gristmill/io"
    run_as_user: int = 10001  # the runtime images' `gristmill` user
    termination_grace_s: int = 30
    # A GPU pool scaled to zero needs minutes to add a node; only after this long is an
    # unschedulable worker reported as failed.
    unschedulable_timeout_s: int = 900

    worker_health_path: str = "/healthz"
    worker_progress_deadline_s: int = 600

    # Rootless BuildKit (Kaniko was archived by its maintainers in 2025).
    buildkit_image: str = "docker.io/moby/buildkit:v0.23.2-rootless"
    # Fetches the build context from S3 and logs in to ECR, in an init container: the only
    # container of the build pod that gets the builder's AWS identity.
    builder_tools_image: str = "public.ecr.aws/aws-cli/aws-cli:2.27.50"
    builder_service_account: str | None = "gristmill-builder"
    # None: builds run in `namespace` with the workers.
    build_namespace: str | None = None
    # Disk for the base image, the build's layers and their compressed copies: CUDA bases
    # and the frameworks installed on them weigh tens of gigabytes unpacked.
    build_ephemeral_storage_bytes: int = 10 * 1024**3
    build_cuda_ephemeral_storage_bytes: int = 30 * 1024**3
    # Secret of type kubernetes.io/dockerconfigjson mounted for pushes; None when the
    # builder's service account already has registry access (IRSA on EKS with ECR).
    registry_auth_secret: str | None = None
    build_timeout_s: int = 1800
    build_ttl_s: int = 86400  # finished build Jobs stay a day, so their logs can be read

    kubeconfig: str | None = None
    context: str | None = None
    # None: use the service account when running inside a cluster, a kubeconfig otherwise.
    in_cluster: bool | None = None
    serviceaccount_dir: str = DEFAULT_SERVICEACCOUNT_DIR
    api_timeout_s: float = 30.0
    # Calls refused with 429 (Retry-After honoured), failed with a 5xx, timed out or cut off
    # are tried again this many times, after exponential backoff with full jitter.
    api_retries: int = 5
    api_backoff_s: float = 0.25
    api_backoff_max_s: float = 10.0

    # The watch of the executions' pods (one per namespace and label selector): the API
    # server ends it after this long, and it resumes from the last resourceVersion.
    watch_timeout_s: int = 300
    # Orphan sweeper: pods (and Jobs) of executions that are no longer live are deleted
    # once they have been orphans for this long; None or 0 for the interval: no sweeper.
    sweep_interval_s: float = 300.0
    sweep_grace_s: float = 600.0
    # The most of a pod's log (its end) kept when the pod is cleaned up.
    log_cap_bytes: int = 4 * 1024**2

    # PriorityClasses the infra program creates (infra/gristmill_infra/platform_service.py);
    # None: the cluster's default priority.
    step_priority_class: str | None = "gristmill-step"
    warm_worker_priority_class: str | None = "gristmill-warm-worker"
    # warm workers started for shadow copies only (WorkerSpec.shadow_only): the scheduler
    # evicts them first and they never evict anyone
    shadow_worker_priority_class: str | None = "gristmill-shadow-worker"
    build_priority_class: str | None = "gristmill-build"

    @property
    def builds_namespace(self) -> str:
        return self.build_namespace or self.namespace

    @property
    def runtime_images(self) -> str:
        return self.runtime_repository or f"{self.registry.rstrip('/')}/gristmill-runtime"

    @property
    def step_repository(self) -> str:
        return f"{self.registry.rstrip('/')}/gristmill-steps"

    @property
    def cache_repository(self) -> str:
        return f"{self.registry.rstrip('/')}/gristmill-cache"


def kubernetes_config(settings: Settings) -> KubernetesConfig:
    """The backend's configuration from the control service's settings (pure).

    Settings were validated when read (namespace, registry, sizes); what only the backend
    can check (label keys) is checked when the first manifest is built.
    """
    if not settings.registry:
        raise ValueError("the Kubernetes backend needs GRISTMILL_REGISTRY")
    defaults = KubernetesConfig()
    return KubernetesConfig(
        namespace=settings.kubernetes_namespace,
        registry=settings.registry,
        runtime_repository=settings.kubernetes_runtime_repository,
        runtime_sdk_version=settings.kubernetes_runtime_sdk_version,
        image_pull_policy=settings.kubernetes_image_pull_policy,
        image_pull_secrets=tuple(settings.kubernetes_image_pull_secrets),
        service_account=settings.kubernetes_worker_service_account,
        labels=dict(settings.kubernetes_labels),
        default_cpu=settings.kubernetes_default_cpu,
        shadow_worker_cpu=settings.kubernetes_shadow_worker_cpu,
        default_memory_bytes=settings.kubernetes_default_memory,
        gpu_node_selector=dict(settings.kubernetes_gpu_node_selector),
        cpu_node_selector=dict(settings.kubernetes_cpu_node_selector),
        unschedulable_timeout_s=settings.kubernetes_unschedulable_timeout_s,
        buildkit_image=settings.kubernetes_buildkit_image or defaults.buildkit_image,
        builder_tools_image=settings.kubernetes_builder_tools_image
        or defaults.builder_tools_image,
        build_namespace=settings.kubernetes_build_namespace,
        builder_service_account=settings.kubernetes_builder_service_account,
        registry_auth_secret=settings.kubernetes_registry_auth_secret,
        kubeconfig=settings.kubernetes_kubeconfig,
        context=settings.kubernetes_context,
        in_cluster=settings.kubernetes_in_cluster,
        api_timeout_s=settings.kubernetes_api_timeout_s,
        api_retries=settings.kubernetes_api_retries,
        api_backoff_s=settings.kubernetes_api_backoff_s,
        api_backoff_max_s=settings.kubernetes_api_backoff_max_s,
        watch_timeout_s=settings.kubernetes_watch_timeout_s,
        sweep_interval_s=settings.kubernetes_sweep_interval_s,
        sweep_grace_s=settings.kubernetes_sweep_grace_s,
        log_cap_bytes=settings.kubernetes_log_cap_bytes,
        step_priority_class=settings.kubernetes_step_priority_class or None,
        warm_worker_priority_class=settings.kubernetes_warm_worker_priority_class or None,
        shadow_worker_priority_class=settings.kubernetes_shadow_worker_priority_class or None,
        build_priority_class=settings.kubernetes_build_priority_class or None,
    )
