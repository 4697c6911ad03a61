"""Settings for one environment, read from arguments or ``GRISTMILL_*`` variables.

Nothing here touches the filesystem or the network at import; ``Settings.resolve`` fills in
the values derived from the data directory.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def default_data_dir() -> Path:
    return Path.home() / ".gristmill"


# A Kubernetes namespace is a DNS-1123 label.
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_MEMORY = re.compile(r"(\d+)(KiB|MiB|GiB)?")
_MEMORY_UNITS = {None: 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


def _names(value: Any, what: str) -> list[str]:
    """A list of names from a JSON list or a comma-separated string (friendlier in an
    environment variable: GRISTMILL_KUBERNETES_IMAGE_PULL_SECRETS=ecr,dockerhub)."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError as exc:
                raise ValueError(f"{what} is not a valid JSON list: {exc}") from exc
        else:
            return [part.strip() for part in text.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what} must be a list of names, or names separated by commas")
    return [v.strip() for v in value if v.strip()]


def _labels(value: Any, what: str) -> dict[str, str]:
    """A mapping from a JSON object or ``key=value,key=value``."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except ValueError as exc:
                raise ValueError(f"{what} is not a valid JSON object: {exc}") from exc
        else:
            pairs = [part.strip() for part in text.split(",") if part.strip()]
            if not all("=" in pair for pair in pairs):
                raise ValueError(f"{what} must look like key=value,key=value or be a JSON "
                                 f"object, got {value!r}")
            return {k.strip(): v.strip() for k, v in (p.split("=", 1) for p in pairs)}
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError(f"{what} must map names to text values")
    return dict(value)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRISTMILL_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    # The URL users and workers reach this environment at; derived from host/port if unset.
    public_url: str | None = None
    database_url: str | None = None
    # SQLite: who copies the write-ahead log back into the database file. "paused": the
    # control service, when its warm callers pause (db/wal_checkpoints.py; SQLite's own
    # checkpoints, in whichever connection commits, slowed runs of warm calls);
    # "automatic": SQLite's own (every 1,000 pages). No effect on PostgreSQL.
    sqlite_checkpoints: Literal["paused", "automatic"] = "paused"
    # Token signing key; when unset, one is generated once and kept in data_dir/secret.key.
    secret_key: str | None = None

    access_token_ttl_s: int = Field(default=3600, ge=60)

    datastore_backend: Literal["local", "s3"] = "local"
    datastore_root: Path | None = None
    signed_url_ttl_s: int = Field(default=3600, ge=1)
    datastore_list_page_size: int = Field(default=1000, ge=1, le=10000)
    datastore_max_object_bytes: int = Field(default=5 * 1024**4, ge=1)
    datastore_max_path_length: int = Field(default=1024, ge=16)
    # S3 backend (datastore_backend="s3"). Unset credentials and region fall back to
    # boto3's chain (environment, IRSA web identity in EKS, instance profile).
    s3_bucket: str | None = None
    s3_region: str | None = None
    # For S3-compatible stores (MinIO, Ceph) and tests: where the control service itself
    # reaches the store.
    s3_endpoint_url: str | None = None
    # Where users and steps reach it, when that differs (MinIO seen as minio:9000 inside
    # the cluster and s3.example.com outside): handed-out URLs are signed for this host.
    s3_public_endpoint_url: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    # Every object key lives under this prefix, so environments can share a bucket.
    s3_prefix: str = ""
    # "auto": path-style with a custom endpoint (MinIO needs it), virtual-hosted on AWS.
    s3_addressing_style: Literal["auto", "path", "virtual"] = "auto"

    # Project defaults for steps (the documentation's "project settings"): used when a
    # step's container_config leaves a key out.
    step_default_language: str | None = None
    step_default_requirements_path: str | None = None
    step_default_repository_url: str | None = None
    step_default_repository_branch: str | None = None
    step_default_repository_deploy_key: str | None = None
    step_default_included_folders: list[str] = Field(default_factory=lambda: ["/"])
    step_default_system_dependencies: list[str] = Field(default_factory=list)
    # How long POST /steps waits for the build before answering 206 "still building".
    step_build_wait_s: float = Field(default=25.0, ge=0)

    executor: Literal["local", "kubernetes"] = "local"
    # Local backend: elastic workers are forked by a fork server per step environment,
    # which has the runner imported already (docs/runs-and-executions.md, "Isolation");
    # off, each worker is a newly started interpreter. Idle fork servers stop after
    # local_fork_server_idle_s.
    local_fork_server: bool = True
    local_fork_server_idle_s: float = Field(default=300.0, gt=0)
    # Local backend: warm worker processes per low-latency deployment (and per variant
    # pipeline). Calls go to the least busy one, so that throughput grows with cores
    # (docs/deployments.md, "Several warm workers").
    local_warm_workers: int = Field(default=1, ge=1, le=64)
    # Local backend: shadow copies of low-latency calls (docs/rollout.md) are recorded and
    # run by a process of their own at a low CPU priority (executions/shadow_runner.py),
    # not on the event loop answering the calls. Off: run by the control service itself.
    shadow_runner: bool = True
    # Shadow copies yield to the calls (docs/rollout.md#shadow-runner): they are written
    # to the shadow runner once no warm call has been in flight in this control service
    # for shadow_quiet_ms, a few at a time (executions/shadow_release.py); under traffic
    # with no such pause, once the oldest has waited shadow_max_delay_ms. A quiet of 0
    # writes each copy as its call is dispatched. Copies run by the control service
    # itself (Kubernetes, shadow_runner off) wait for the same pause, one by one.
    shadow_quiet_ms: float = Field(default=20.0, ge=0, le=1000)
    shadow_max_delay_ms: float = Field(default=2000.0, gt=0, le=60_000)
    # Local backend: how often a control service checks the deployments whose warm
    # workers it runs against the database, to stop those deleted and roll those updated
    # through another control service sharing it (docs/rollout.md#replicas).
    worker_follow_s: float = Field(default=0.5, gt=0)
    # Where workers reach the control service (runner reports, SDK calls inside steps):
    # in a cluster, the Service's in-cluster URL (http://gristmill.gristmill:8000), which
    # needs neither the ingress nor TLS. Defaults to the environment URL.
    internal_url: str | None = None

    # Kubernetes backend (executor="kubernetes"; docs/kubernetes.md). The infra stack sets
    # GRISTMILL_KUBERNETES_NAMESPACE and GRISTMILL_REGISTRY; the rest have defaults.
    kubernetes_namespace: str = "gristmill-workers"
    # Where step images are pushed (<registry>/gristmill-steps:<digest>); required.
    registry: str | None = None
    # Where the runtime base images live; default <registry>/gristmill-runtime.
    kubernetes_runtime_repository: str | None = None
    # Pin step images to the immutable <tag>-sdk<version> runtime tags (e.g. the platform's
    # own version); unset, the moving <tag> is used.
    kubernetes_runtime_sdk_version: str | None = None
    kubernetes_image_pull_policy: Literal["IfNotPresent", "Always", "Never"] = "IfNotPresent"
    kubernetes_image_pull_secrets: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Service accounts of worker pods and image build Jobs; "" for the namespace default.
    kubernetes_worker_service_account: str | None = "gristmill-worker"
    kubernetes_builder_service_account: str | None = "gristmill-builder"
    # A kubernetes.io/dockerconfigjson Secret BuildKit pushes with, when the builder's
    # service account has no registry access of its own (IRSA on EKS with ECR does).
    kubernetes_registry_auth_secret: str | None = None
    # Rootless BuildKit, and the AWS CLI image that fetches the build context and logs in
    # to ECR before it; None: the pinned defaults (executors/kubernetes/config.py).
    kubernetes_buildkit_image: str | None = None
    kubernetes_builder_tools_image: str | None = None
    # Image builds run in their own namespace (Pod Security "privileged": rootless BuildKit
    # needs unconfined seccomp); None: the workers' namespace.
    kubernetes_build_namespace: str | None = None
    # Added to every object Gristmill creates (cost allocation, policies).
    kubernetes_labels: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    kubernetes_gpu_node_selector: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=lambda: {"gristmill.io/pool": "gpu"})
    kubernetes_cpu_node_selector: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict)
    # What a worker asks for when its deployment does not say (ram_request).
    kubernetes_default_cpu: float = Field(default=0.5, gt=0)
    # ... and a worker started for shadow copies only, until its pipeline answers calls
    # (docs/rollout.md): its CPU share under contention follows the request
    kubernetes_shadow_worker_cpu: float = Field(default=0.1, gt=0)
    kubernetes_default_memory: int = 1024**3
    # A GPU pool scaled to zero needs minutes to add a node: only after this long is a
    # worker that no node can take failed.
    kubernetes_unschedulable_timeout_s: int = Field(default=900, ge=0)
    # Credentials: an explicit kubeconfig (and context) wins; otherwise the pod's service
    # account inside a cluster, the default kubeconfig outside. in_cluster forces either.
    kubernetes_kubeconfig: str | None = None
    kubernetes_context: str | None = None
    kubernetes_in_cluster: bool | None = None
    kubernetes_api_timeout_s: float = Field(default=30.0, gt=0)
    # The pods of elastic executions are followed through one watch per namespace (list,
    # then watch from the list's resourceVersion; docs/kubernetes.md). How often the pods
    # it holds are judged again (time-based outcomes: unschedulable for too long); no API
    # call. The API server ends each watch after kubernetes_watch_timeout_s.
    kubernetes_watch_interval_s: float = Field(default=2.0, gt=0)
    kubernetes_watch_timeout_s: int = Field(default=300, ge=10)
    # Retries of the executor's API calls on 429 (Retry-After honoured), 5xx and timeouts:
    # exponential backoff with full jitter from backoff_s, at most backoff_max_s apart.
    kubernetes_api_retries: int = Field(default=5, ge=0)
    kubernetes_api_backoff_s: float = Field(default=0.25, gt=0)
    kubernetes_api_backoff_max_s: float = Field(default=10.0, gt=0)
    # The orphan sweeper: deletes managed-by=gristmill pods (and Jobs) of executions that
    # are not live (ended, deleted, unknown) once orphaned for sweep_grace_s; 0: off.
    kubernetes_sweep_interval_s: float = Field(default=300.0, ge=0)
    kubernetes_sweep_grace_s: float = Field(default=600.0, ge=0)
    # How much of a pod's log (its end) is kept at cleanup; what was cut is said in the log.
    kubernetes_log_cap_bytes: int = Field(default=4 * 1024**2, ge=1024)
    # PriorityClasses of elastic pods, warm workers, warm workers that only serve shadow
    # copies (docs/rollout.md) and image builds (the infra program creates these four);
    # "" leaves the cluster's default priority.
    kubernetes_step_priority_class: str = "gristmill-step"
    kubernetes_warm_worker_priority_class: str = "gristmill-warm-worker"
    kubernetes_shadow_worker_priority_class: str = "gristmill-shadow-worker"
    kubernetes_build_priority_class: str = "gristmill-build"
    # The elastic pool (executors/kubernetes/elastic_pool.py): pre-started pods per step,
    # each taking one execution; this many idle ones per step and replica while the step
    # is in use (0: no pool, every elastic execution starts a cold pod), deleted once no
    # execution of the step came for kubernetes_elastic_pool_idle_s.
    kubernetes_elastic_pool_size: int = Field(default=0, ge=0, le=20)
    kubernetes_elastic_pool_idle_s: float = Field(default=300.0, gt=0)
    # how often each control service looks for periodic deployments that are due
    scheduler_tick_s: float = Field(default=1.0, gt=0)
    # Admission control of elastic executions on local workers (executions/admission.py):
    # how many run at once (unset: one per 512 MiB of available memory, at least two per
    # CPU, at most 32), and how many may wait before new calls are refused with 503 and
    # Retry-After.
    worker_capacity: int | None = Field(default=None, ge=1)
    elastic_queue_limit: int = Field(default=1000, ge=1)
    # An elastic execution running longer is failed and its worker stopped.
    execution_timeout_s: int = Field(default=24 * 3600, ge=1)
    # Long-polls hold a request this long before answering "not yet" (307 / redirect).
    long_poll_s: float = Field(default=20.0, gt=0)

    # Resource metrics (GET /resource-metrics, docs/resource-metrics.md): "local" samples
    # this machine and its worker processes into the database; "prometheus" reads a
    # cluster's Prometheus (node exporter, cAdvisor, DCGM exporter). The infra stack sets
    # GRISTMILL_METRICS_BACKEND, accepted as a synonym.
    resource_metrics_backend: Literal["local", "prometheus"] = Field(
        default="local",
        validation_alias=AliasChoices("resource_metrics_backend",
                                      "GRISTMILL_RESOURCE_METRICS_BACKEND",
                                      "GRISTMILL_METRICS_BACKEND"))
    prometheus_url: str | None = None
    # Prometheus' scrape interval: the finest step answered, and rates span >= 4 of them.
    prometheus_scrape_interval_s: float = Field(default=30.0, gt=0)
    prometheus_timeout_s: float = Field(default=15.0, gt=0)
    # Embedded sampler: how often the host and each worker process are read, how long the
    # samples are kept.
    resource_sample_interval_s: float = Field(default=5.0, gt=0)
    resource_retention_h: float = Field(default=24.0, gt=0)

    # The service's own Prometheus metrics (docs/operations.md#metrics), not public by
    # default: served on a separate port (for the cluster network only; the ServiceMonitor
    # scrapes it) and/or at /metrics behind a bearer token.
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str | None = None  # default: host
    metrics_token: SecretStr | None = None

    log_level: str = "info"
    # "json": one JSON object per line (request id, route, user id, execution id) for log
    # collectors; "text" for people. Secrets are masked in both (docs/operations.md#logs).
    log_format: Literal["text", "json"] = "text"

    @field_validator("public_url", "internal_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
        return value.rstrip("/") if value else value

    @field_validator("metrics_token")
    @classmethod
    def _metrics_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        if len(value.get_secret_value().strip()) < 16:
            raise ValueError("must be at least 16 characters: it guards the environment's "
                             "traffic figures (generate one with: openssl rand -hex 24)")
        return SecretStr(value.get_secret_value().strip())

    @field_validator("kubernetes_namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not _NAMESPACE.fullmatch(value):
            raise ValueError(f"{value!r} is not a Kubernetes namespace name (lowercase "
                             "letters, digits and '-', at most 63 characters)")
        return value

    @field_validator("registry", "kubernetes_runtime_repository")
    @classmethod
    def _repository(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        value = value.strip().rstrip("/")
        if "://" in value or " " in value:
            raise ValueError(f"must be an image repository without a scheme, like "
                             f"123456789012.dkr.ecr.eu-west-3.amazonaws.com/gristmill or "
                             f"ghcr.io/acme, got {value!r}")
        return value

    @field_validator("kubernetes_worker_service_account", "kubernetes_builder_service_account",
                     "kubernetes_registry_auth_secret", "kubernetes_buildkit_image",
                     "kubernetes_builder_tools_image", "kubernetes_build_namespace",
                     "kubernetes_kubeconfig", "kubernetes_context",
                     "kubernetes_runtime_sdk_version")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("kubernetes_image_pull_secrets", mode="before")
    @classmethod
    def _pull_secrets(cls, value: Any) -> list[str]:
        return _names(value, "kubernetes_image_pull_secrets")

    @field_validator("kubernetes_labels", "kubernetes_gpu_node_selector",
                     "kubernetes_cpu_node_selector", mode="before")
    @classmethod
    def _label_maps(cls, value: Any) -> dict[str, str]:
        return _labels(value, "this setting")

    @field_validator("kubernetes_default_memory", mode="before")
    @classmethod
    def _memory(cls, value: Any) -> int:
        match = _MEMORY.fullmatch(str(value).strip())
        size = int(match.group(1)) * _MEMORY_UNITS[match.group(2)] if match else 0
        if size <= 0:
            raise ValueError(f"must be a size like 512MiB or 2GiB (KiB, MiB, GiB or bytes), "
                             f"got {value!r}")
        return size

    @model_validator(mode="after")
    def _kubernetes_needs_a_registry(self) -> Settings:
        if self.executor == "kubernetes" and not self.registry:
            raise ValueError(
                "GRISTMILL_EXECUTOR=kubernetes needs GRISTMILL_REGISTRY: the image repository "
                "step images are pushed to and workers pull from (the stack output "
                "'registry URL', e.g. 123456789012.dkr.ecr.eu-west-3.amazonaws.com/gristmill)")
        return self

    def resolve(self) -> Settings:
        """Return a copy with every derived default filled in."""
        data_dir = self.data_dir.expanduser().resolve()
        host_for_url = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        public_url = self.public_url or f"http://{host_for_url}:{self.port}"
        return self.model_copy(
            update={
                "data_dir": data_dir,
                "public_url": public_url,
                "internal_url": self.internal_url or public_url,
                "database_url": self.database_url
                or f"sqlite+aiosqlite:///{data_dir / 'gristmill.sqlite3'}",
                "datastore_root": (self.datastore_root or data_dir / "datastore").expanduser(),
            }
        )

    @property
    def environment_url(self) -> str:
        assert self.public_url is not None, "call Settings.resolve() first"
        return self.public_url

    @property
    def sqlite_automatic_checkpoints(self) -> bool:
        """Whether the service's SQLite connections checkpoint by themselves, or leave it
        to db/wal_checkpoints.py (sqlite_checkpoints)."""
        return self.sqlite_checkpoints == "automatic"

    @property
    def worker_url(self) -> str:
        """Where workers reach this service: the internal URL, else the environment URL."""
        return self.internal_url or self.environment_url


def resolve_settings(settings: Settings) -> Settings:
    """Derived values plus the signing key (generated once into the data dir if unset)."""
    from gristmill_platform.secrets_store import load_or_create_secret_key

    resolved = settings.resolve()
    if not resolved.secret_key:
        resolved = resolved.model_copy(
            update={"secret_key": load_or_create_secret_key(resolved.data_dir)}
        )
    return resolved
