"""Stack configuration: every `gristmill:*` setting, its default and the checks it must pass.

`parse_config` is pure (plain strings in, a frozen `EnvironmentConfig` out) so every rule is
unit-tested without the Pulumi engine; `load_config` only gathers the strings Pulumi holds
for the current stack. All problems are reported at once, each naming its key and what is
expected, before any resource is declared.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import pulumi
from pulumi.runtime import config as runtime_config

from gristmill_infra.eks_addons import ADDON_VERSIONS
from gristmill_infra.labels import GPU_ACCELERATORS, accelerator_label

NAMESPACE = "gristmill"

_T = TypeVar("_T")

CapacityType = Literal["ON_DEMAND", "SPOT"]
NatMode = Literal["single", "perAz"]

# Values the services accept; anything else fails at `pulumi up` time, minutes in, so it is
# refused here instead.
CLUSTER_LOG_TYPES = ("api", "audit", "authenticator", "controllerManager", "scheduler")
LOG_RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
    2922, 3288, 3653,
)  # fmt: skip

_STACK_NAME = re.compile(r"[a-z][a-z0-9-]{0,19}")
_DNS_NAME = re.compile(
    r"(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?"
)
_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_HOSTED_ZONE_ID = re.compile(r"Z[0-9A-Z]{1,31}")
_IMAGE = re.compile(
    r"[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*"
    r"(:(?!latest$)[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[a-f0-9]{64})"
)
_K8S_VERSION = re.compile(r"1\.[0-9]{2}")
_INSTANCE_TYPE = re.compile(r"[a-z][a-z0-9-]*\.[a-z0-9]+")
# NVIDIA GPUs on x86_64: the g and p families, less AMD (g4ad) and Graviton (g5g) ones,
# which the NVIDIA x86_64 node image cannot run.
_GPU_INSTANCE_TYPE = re.compile(r"(?!g4ad\.|g5g\.)[gp][0-9][a-z0-9-]*\.[a-z0-9]+")
_DB_INSTANCE_CLASS = re.compile(r"db\.[a-z0-9-]+\.[a-z0-9]+")
_SMALL_DB_CLASS = re.compile(r"db\.t[0-9]g?\.(micro|small)")
_PG_VERSION = re.compile(r"[0-9]{2}(\.[0-9]+)?")
_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}")
_ORIGIN = re.compile(r"https?://[a-z0-9.-]+(:[0-9]{1,5})?")
_DURATION = re.compile(r"[1-9][0-9]*[hdwy]")
_CPU_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?m?")
_MEMORY_QUANTITY = re.compile(r"[0-9]+(Mi|Gi)")
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]")
_HTTPS_URL = re.compile(r"https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[^\s]*)?")
_ECR_NAMESPACE = re.compile(r"[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*")


class ConfigError(ValueError):
    """One or more stack settings are missing or invalid; `problems` has one line per key."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__(
            "invalid stack configuration:\n  - "
            + "\n  - ".join(self.problems)
            + "\nSee docs/environments-on-aws.md for every setting and its default."
        )


@dataclass(frozen=True)
class NetworkSettings:
    vpc_cidr: str
    availability_zone_count: int
    # Empty: the first `availability_zone_count` zones of the region, in name order.
    availability_zones: tuple[str, ...]
    nat_gateways: NatMode


@dataclass(frozen=True)
class ClusterSettings:
    name: str
    kubernetes_version: str
    log_types: tuple[str, ...]
    log_retention_days: int
    # Empty: the API endpoint is private (reachable from inside the VPC only).
    endpoint_public_cidrs: tuple[str, ...]
    admin_role_arns: tuple[str, ...]


@dataclass(frozen=True)
class NodePoolSettings:
    instance_types: tuple[str, ...]
    capacity_type: CapacityType
    min_nodes: int
    max_nodes: int
    disk_size_gib: int


@dataclass(frozen=True)
class DatastoreSettings:
    force_destroy: bool
    abort_incomplete_upload_days: int
    noncurrent_version_days: int
    cors_origins: tuple[str, ...]


@dataclass(frozen=True)
class RegistrySettings:
    namespace: str
    keep_images: int
    untagged_days: int
    force_delete: bool


@dataclass(frozen=True)
class DatabaseSettings:
    instance_class: str
    engine_version: str
    storage_gib: int
    max_storage_gib: int
    multi_az: bool
    backup_retention_days: int
    deletion_protection: bool
    skip_final_snapshot: bool
    performance_insights: bool


@dataclass(frozen=True)
class IngressSettings:
    domain: str
    hosted_zone_id: str


@dataclass(frozen=True)
class MonitoringSettings:
    prometheus_retention: str
    prometheus_storage_gib: int
    # Where Alertmanager posts firing alerts (Slack-compatible or any webhook); empty: the
    # alerts are only listed in Alertmanager.
    alert_webhook_url: str = ""


@dataclass(frozen=True)
class PlatformSettings:
    image: str
    namespace: str
    # Step pods run here, apart from the control service.
    workers_namespace: str
    # Image builds run here: rootless BuildKit needs an unconfined seccomp profile, which
    # the workers' namespace (Pod Security "baseline") refuses.
    builds_namespace: str
    replicas: int
    cpu: str
    memory: str
    # Caps on what the workers' namespace may request in total (ResourceQuota).
    workers_cpu_quota: str
    workers_memory_quota: str
    workers_gpu_quota: int
    workers_pod_quota: int
    # Pre-started step pods per step and replica that each take one elastic execution
    # (docs/kubernetes.md, "Elastic pool"); 0 turns the pool off.
    elastic_pool_size: int = 1
    elastic_pool_idle_s: int = 300


@dataclass(frozen=True)
class EnvironmentConfig:
    environment: str
    region: str
    network: NetworkSettings
    cluster: ClusterSettings
    cpu_pool: NodePoolSettings
    # None when `gristmill:gpuEnabled` is false.
    gpu_pool: NodePoolSettings | None
    datastore: DatastoreSettings
    registry: RegistrySettings
    database: DatabaseSettings
    ingress: IngressSettings
    monitoring: MonitoringSettings
    platform: PlatformSettings
    # `protect` on the data store bucket, the database and the image repositories: Pulumi
    # refuses to delete them (a `pulumi destroy` must first unprotect them).
    protect_data: bool = True
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def environment_url(self) -> str:
        return f"https://{self.ingress.domain}"


class _Reader:
    """Reads typed values from raw strings, collecting every problem instead of stopping."""

    def __init__(self, raw: Mapping[str, str]) -> None:
        self._raw = raw
        self.problems: list[str] = []
        self.keys_read: set[str] = set()

    def _get(self, key: str) -> str | None:
        self.keys_read.add(key)
        value = self._raw.get(key)
        if value is None or not value.strip():
            return None
        return value.strip()

    def problem(self, key: str, expected: str, raw: str | None = None) -> None:
        got = f" (got {raw!r})" if raw is not None else ""
        self.problems.append(f"{NAMESPACE}:{key} must be {expected}{got}")

    def required(self, key: str, check: Callable[[str], bool], expected: str, example: str) -> str:
        raw = self._get(key)
        if raw is None:
            self.problems.append(
                f"{NAMESPACE}:{key} is required and must be {expected}: "
                f"pulumi config set {NAMESPACE}:{key} {example}"
            )
            return ""
        if not check(raw):
            self.problem(key, expected, raw)
        return raw

    def string(self, key: str, default: str, check: Callable[[str], bool], expected: str) -> str:
        raw = self._get(key)
        if raw is None:
            return default
        if not check(raw):
            self.problem(key, expected, raw)
            return default
        return raw

    def choice(self, key: str, default: _T, choices: Sequence[_T]) -> _T:
        raw = self._get(key)
        if raw is None:
            return default
        for option in choices:
            if raw == option:
                return option
        self.problem(key, "one of " + ", ".join(str(c) for c in choices), raw)
        return default

    def integer(self, key: str, default: int, minimum: int, maximum: int) -> int:
        raw = self._get(key)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            value = minimum - 1
        if not minimum <= value <= maximum:
            self.problem(key, f"an integer from {minimum} to {maximum}", raw)
            return default
        return value

    def boolean(self, key: str, default: bool) -> bool:
        raw = self._get(key)
        if raw is None:
            return default
        if raw.lower() in ("true", "false"):
            return raw.lower() == "true"
        self.problem(key, "true or false", raw)
        return default

    def string_list(
        self,
        key: str,
        default: Sequence[str],
        check: Callable[[str], bool],
        expected: str,
        *,
        allow_empty: bool = False,
    ) -> tuple[str, ...]:
        raw = self._get(key)
        if raw is None:
            return tuple(default)
        items = _split_list(raw)
        if items is None or (not items and not allow_empty) or not all(map(check, items)):
            self.problem(key, expected, raw)
            return tuple(default)
        return tuple(items)

    def mapping(self, key: str, expected: str) -> dict[str, str]:
        raw = self._get(key)
        if raw is None:
            return {}
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and _valid_tag(k, v) for k, v in value.items()
        ):
            self.problem(key, expected, raw)
            return {}
        return dict(value)


def _split_list(raw: str) -> list[str] | None:
    """A YAML list in the stack file reaches the program as JSON; the CLI may pass `a,b`."""
    if raw.startswith("["):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return None
        return [v.strip() for v in value]
    return [part.strip() for part in raw.split(",") if part.strip()]


def _valid_tag(key: str, value: str) -> bool:
    return 0 < len(key) <= 128 and len(value) <= 256 and not key.lower().startswith("aws:")


def _matches(pattern: re.Pattern[str]) -> Callable[[str], bool]:
    return lambda value: pattern.fullmatch(value) is not None


def _is_cidr(value: str, min_prefix: int = 0, max_prefix: int = 32) -> bool:
    try:
        network = ipaddress.IPv4Network(value, strict=True)
    except ValueError:
        return False
    return min_prefix <= network.prefixlen <= max_prefix


def _is_private_vpc_cidr(value: str) -> bool:
    return _is_cidr(value, 16, 20) and ipaddress.IPv4Network(value).is_private


def _endpoint_cidrs(r: _Reader) -> tuple[str, ...]:
    """No default: an API endpoint open to the whole internet is a choice to write down.
    `[]` keeps the endpoint private (then `pulumi up` must run from inside the VPC)."""
    key = "clusterEndpointPublicCidrs"
    expected = (
        "a list of IPv4 CIDR blocks allowed to reach the Kubernetes API, such as "
        '["203.0.113.0/24"], or [] for a private endpoint'
    )
    raw = r._get(key)
    if raw is None:
        r.problems.append(
            f"{NAMESPACE}:{key} is required and must be {expected}: "
            f"pulumi config set {NAMESPACE}:{key} '[\"203.0.113.0/24\"]'"
        )
        return ()
    items = _split_list(raw) if raw != "[]" else []
    if items is None or not all(map(_is_cidr, items)):
        r.problem(key, expected, raw)
        return ()
    return tuple(items)


def parse_config(
    values: Mapping[str, str], *, environment: str, region: str | None
) -> EnvironmentConfig:
    """Builds the environment's settings from `gristmill:*` values (keys without namespace).

    Raises `ConfigError` listing every missing, invalid or unknown key.
    """
    r = _Reader(values)
    config = _read(r, environment, region)
    for key in sorted(set(values) - r.keys_read):
        close = difflib.get_close_matches(key, sorted(r.keys_read), n=1)
        hint = f"; did you mean {NAMESPACE}:{close[0]}?" if close else ""
        r.problems.append(f"{NAMESPACE}:{key} is not a Gristmill setting{hint}")
    if r.problems:
        raise ConfigError(r.problems)
    return config


def known_keys() -> frozenset[str]:
    """Every `gristmill:*` key the program reads (without the namespace)."""
    reader = _Reader({})
    _read(reader, "dev", "eu-west-3")
    return frozenset(reader.keys_read)


def _read(r: _Reader, environment: str, region: str | None) -> EnvironmentConfig:
    """Reads every setting; problems go to `r.problems` and invalid values get placeholders."""
    if not _STACK_NAME.fullmatch(environment):
        r.problems.append(
            f"the stack name must be 1-20 lowercase letters, digits or '-', starting with a "
            f"letter, because it names AWS resources (got {environment!r})"
        )
    if region is None or not _REGION.fullmatch(region):
        r.problems.append(
            "aws:region is required and must be an AWS region such as eu-west-3: "
            "pulumi config set aws:region eu-west-3" + (f" (got {region!r})" if region else "")
        )

    domain = r.required(
        "domain",
        _matches(_DNS_NAME),
        "the environment's DNS name inside the hosted zone, such as ml.example.com",
        "ml.example.com",
    ).lower()
    hosted_zone_id = r.required(
        "hostedZoneId",
        _matches(_HOSTED_ZONE_ID),
        "the ID of the Route 53 public hosted zone that holds the domain, such as Z0123456789ABC",
        "Z0123456789ABC",
    )
    image = r.required(
        "platformImage",
        _matches(_IMAGE),
        "a control service image pinned to a tag or digest other than latest, "
        "such as ghcr.io/gristmill/platform:0.1.0",
        "ghcr.io/gristmill/platform:0.1.0",
    )

    network = NetworkSettings(
        vpc_cidr=r.string(
            "vpcCidr",
            "10.0.0.0/16",
            _is_private_vpc_cidr,
            "a private IPv4 CIDR block from /16 to /20, such as 10.0.0.0/16",
        ),
        availability_zone_count=r.integer("availabilityZoneCount", 3, 2, 3),
        availability_zones=r.string_list(
            "availabilityZones",
            (),
            _matches(re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9][a-z]")),
            'a list of availability zone names of the region, such as ["eu-west-3a", "eu-west-3b"]',
            allow_empty=True,
        ),
        nat_gateways=r.choice("natGateways", "perAz", ("single", "perAz")),
    )
    if network.availability_zones and len(network.availability_zones) != len(
        set(network.availability_zones)
    ):
        r.problem(
            "availabilityZones", "a list of distinct zones", ",".join(network.availability_zones)
        )
    elif network.availability_zones and not 2 <= len(network.availability_zones) <= 3:
        r.problem(
            "availabilityZones",
            "empty (automatic) or a list of 2 or 3 zones",
            ",".join(network.availability_zones),
        )
    elif (
        network.availability_zones
        and region
        and not all(zone.startswith(region) for zone in network.availability_zones)
    ):
        r.problem(
            "availabilityZones",
            f"zones of the stack's region {region}",
            ",".join(network.availability_zones),
        )

    cluster = ClusterSettings(
        name=r.string(
            "clusterName",
            f"gristmill-{environment}",
            _matches(re.compile(r"[a-zA-Z][a-zA-Z0-9-]{0,99}")),
            "an EKS cluster name: letters, digits and '-', starting with a letter",
        ),
        kubernetes_version=r.string(
            "kubernetesVersion",
            "1.35",
            _matches(_K8S_VERSION),
            "a Kubernetes minor version supported by EKS, such as 1.35",
        ),
        log_types=r.string_list(
            "clusterLogTypes",
            ("api", "audit", "authenticator"),
            lambda v: v in CLUSTER_LOG_TYPES,
            "a list of EKS control-plane log types among " + ", ".join(CLUSTER_LOG_TYPES),
            allow_empty=True,
        ),
        log_retention_days=r.integer("clusterLogRetentionDays", 30, 1, 3653),
        endpoint_public_cidrs=_endpoint_cidrs(r),
        admin_role_arns=r.string_list(
            "clusterAdminRoleArns",
            (),
            _matches(_ROLE_ARN),
            "a list of IAM role ARNs, such as arn:aws:iam::123456789012:role/platform-admins",
            allow_empty=True,
        ),
    )
    if cluster.kubernetes_version not in ADDON_VERSIONS:
        r.problem(
            "kubernetesVersion",
            "a version the EKS add-ons are pinned for: " + ", ".join(sorted(ADDON_VERSIONS)),
            cluster.kubernetes_version,
        )
    if cluster.log_retention_days not in LOG_RETENTION_DAYS:
        r.problem(
            "clusterLogRetentionDays",
            "a CloudWatch retention period: " + ", ".join(map(str, LOG_RETENTION_DAYS)),
            str(cluster.log_retention_days),
        )

    cpu_pool = NodePoolSettings(
        instance_types=r.string_list(
            "cpuInstanceTypes",
            ("m7i.xlarge",),
            _matches(_INSTANCE_TYPE),
            'a non-empty list of EC2 instance types, such as ["m7i.xlarge"]',
        ),
        capacity_type=r.choice("cpuCapacityType", "ON_DEMAND", ("ON_DEMAND", "SPOT")),
        min_nodes=r.integer("cpuMinNodes", 2, 1, 100),
        max_nodes=r.integer("cpuMaxNodes", 6, 1, 100),
        disk_size_gib=r.integer("cpuDiskSizeGiB", 50, 20, 16384),
    )
    if cpu_pool.max_nodes < cpu_pool.min_nodes:
        r.problem(
            "cpuMaxNodes",
            f"at least gristmill:cpuMinNodes ({cpu_pool.min_nodes})",
            str(cpu_pool.max_nodes),
        )

    gpu_enabled = r.boolean("gpuEnabled", True)
    gpu_settings = NodePoolSettings(
        instance_types=r.string_list(
            "gpuInstanceTypes",
            ("g5.xlarge",),
            _matches(_GPU_INSTANCE_TYPE),
            "a non-empty list of EC2 instance types with NVIDIA GPUs on x86_64, "
            'such as ["g5.xlarge", "g6.xlarge"]',
        ),
        capacity_type=r.choice("gpuCapacityType", "ON_DEMAND", ("ON_DEMAND", "SPOT")),
        min_nodes=r.integer("gpuMinNodes", 0, 0, 100),
        max_nodes=r.integer("gpuMaxNodes", 2, 1, 100),
        disk_size_gib=r.integer("gpuDiskSizeGiB", 100, 50, 16384),
    )
    unknown = [t for t in gpu_settings.instance_types if accelerator_label(t) is None]
    if unknown:
        r.problem(
            "gpuInstanceTypes",
            "instance types of a GPU family Gristmill knows the accelerator of ("
            + ", ".join(sorted(GPU_ACCELERATORS)) + ")",
            json.dumps(list(gpu_settings.instance_types)),
        )
    if len(set(gpu_settings.instance_types)) != len(gpu_settings.instance_types):
        r.problem("gpuInstanceTypes", "a list of distinct instance types",
                  json.dumps(list(gpu_settings.instance_types)))
    if gpu_settings.max_nodes < gpu_settings.min_nodes:
        r.problem(
            "gpuMaxNodes",
            f"at least gristmill:gpuMinNodes ({gpu_settings.min_nodes})",
            str(gpu_settings.max_nodes),
        )

    database = DatabaseSettings(
        instance_class=r.string(
            "databaseInstanceClass",
            "db.t4g.medium",
            _matches(_DB_INSTANCE_CLASS),
            "an RDS instance class, such as db.t4g.medium",
        ),
        engine_version=r.string(
            "databaseEngineVersion",
            "17",
            _matches(_PG_VERSION),
            "a PostgreSQL major (or major.minor) version offered by RDS, such as 17",
        ),
        storage_gib=r.integer("databaseStorageGiB", 20, 20, 65536),
        max_storage_gib=r.integer("databaseMaxStorageGiB", 100, 20, 65536),
        multi_az=r.boolean("databaseMultiAz", True),
        backup_retention_days=r.integer("databaseBackupRetentionDays", 7, 0, 35),
        deletion_protection=r.boolean("databaseDeletionProtection", True),
        skip_final_snapshot=r.boolean("databaseSkipFinalSnapshot", False),
        performance_insights=r.boolean("databasePerformanceInsights", True),
    )
    if database.performance_insights and _SMALL_DB_CLASS.fullmatch(database.instance_class):
        r.problem(
            "databasePerformanceInsights",
            f"false with {database.instance_class}: RDS offers Performance Insights from the "
            "medium burstable classes up",
            "true",
        )
    if database.max_storage_gib < database.storage_gib:
        r.problem(
            "databaseMaxStorageGiB",
            f"at least gristmill:databaseStorageGiB ({database.storage_gib})",
            str(database.max_storage_gib),
        )

    datastore = DatastoreSettings(
        force_destroy=r.boolean("datastoreForceDestroy", False),
        abort_incomplete_upload_days=r.integer("datastoreAbortIncompleteUploadDays", 7, 1, 365),
        noncurrent_version_days=r.integer("datastoreNoncurrentVersionDays", 30, 1, 3650),
        cors_origins=r.string_list(
            "datastoreCorsOrigins",
            (f"https://{domain}",) if domain else (),
            _matches(_ORIGIN),
            "a list of browser origins such as https://ml.example.com (scheme, host, port)",
            allow_empty=True,
        ),
    )

    registry = RegistrySettings(
        namespace=r.string(
            "registryNamespace",
            f"gristmill/{environment}",
            _matches(_ECR_NAMESPACE),
            "an ECR repository prefix: lowercase words joined by '/', '.', '_' or '-', "
            "such as gristmill/dev",
        ),
        keep_images=r.integer("registryKeepImages", 200, 1, 10000),
        untagged_days=r.integer("registryUntaggedDays", 7, 1, 3650),
        force_delete=r.boolean("registryForceDelete", False),
    )

    monitoring = MonitoringSettings(
        prometheus_retention=r.string(
            "prometheusRetention",
            "15d",
            _matches(_DURATION),
            "a Prometheus retention such as 15d, 2w or 48h",
        ),
        prometheus_storage_gib=r.integer("prometheusStorageGiB", 50, 10, 16384),
        alert_webhook_url=r.string(
            "alertWebhookUrl",
            "",
            _matches(_HTTPS_URL),
            "an https:// URL Alertmanager posts alerts to",
        ),
    )

    platform = PlatformSettings(
        image=image,
        namespace=r.string(
            "platformNamespace",
            "gristmill",
            _matches(_DNS_LABEL),
            "a Kubernetes namespace name (lowercase letters, digits, '-')",
        ),
        workers_namespace=r.string(
            "workersNamespace",
            "gristmill-workers",
            _matches(_DNS_LABEL),
            "a Kubernetes namespace name (lowercase letters, digits, '-')",
        ),
        builds_namespace=r.string(
            "buildsNamespace",
            "gristmill-builds",
            _matches(_DNS_LABEL),
            "a Kubernetes namespace name (lowercase letters, digits, '-')",
        ),
        # Two or more, so the PodDisruptionBudget can keep one serving while a node drains.
        replicas=r.integer("platformReplicas", 2, 2, 20),
        cpu=r.string(
            "platformCpu", "500m", _matches(_CPU_QUANTITY), "a CPU quantity such as 500m or 1"
        ),
        memory=r.string(
            "platformMemory", "1Gi", _matches(_MEMORY_QUANTITY), "a memory quantity such as 1Gi"
        ),
        workers_cpu_quota=r.string(
            "workersCpuQuota", "64", _matches(_CPU_QUANTITY), "a CPU quantity such as 64"
        ),
        workers_memory_quota=r.string(
            "workersMemoryQuota",
            "256Gi",
            _matches(_MEMORY_QUANTITY),
            "a memory quantity such as 256Gi",
        ),
        workers_gpu_quota=r.integer("workersGpuQuota", 8, 0, 1024),
        workers_pod_quota=r.integer("workersPodQuota", 500, 10, 100000),
        elastic_pool_size=r.integer("elasticPoolSize", 1, 0, 50),
        elastic_pool_idle_s=r.integer("elasticPoolIdleSeconds", 300, 30, 86400),
    )
    system_namespaces = ("default", "kube-system", "kube-public", "kube-node-lease")
    for key, value in (
        ("platformNamespace", platform.namespace),
        ("workersNamespace", platform.workers_namespace),
        ("buildsNamespace", platform.builds_namespace),
    ):
        if value in system_namespaces:
            r.problem(key, "a namespace of its own, not a system one", value)
    if platform.builds_namespace in (platform.namespace, platform.workers_namespace):
        r.problem(
            "buildsNamespace",
            "a namespace of its own: image builds need a looser Pod Security level than "
            "step pods and the control service",
            platform.builds_namespace,
        )
    if platform.namespace == platform.workers_namespace:
        r.problem(
            "workersNamespace",
            "different from gristmill:platformNamespace: step pods run user code and get "
            "stricter network policies than the control service",
            platform.workers_namespace,
        )

    tags = r.mapping(
        "tags",
        'a JSON object of string tags, such as {"team": "ml-platform"} '
        "(keys up to 128 characters, not starting with aws:)",
    )

    return EnvironmentConfig(
        environment=environment,
        region=region or "",
        network=network,
        cluster=cluster,
        cpu_pool=cpu_pool,
        gpu_pool=gpu_settings if gpu_enabled else None,
        datastore=datastore,
        registry=registry,
        database=database,
        ingress=IngressSettings(domain=domain, hosted_zone_id=hosted_zone_id),
        monitoring=monitoring,
        platform=platform,
        protect_data=r.boolean("protectData", True),
        tags={"gristmill:environment": environment, "managed-by": "pulumi", **tags},
    )


def load_config() -> EnvironmentConfig:
    """Reads the current stack's `gristmill:*` and `aws:region` values and parses them."""
    prefix = f"{NAMESPACE}:"
    # Pulumi has no public call listing the configured keys; both places it keeps them are
    # read so that a misspelt key is reported instead of silently ignored.
    configured: set[str] = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    values: dict[str, str] = {}
    for full_key in configured:
        if full_key.startswith(prefix):
            raw = runtime_config.get_config(full_key)
            if raw is not None:
                values[full_key[len(prefix) :]] = raw if isinstance(raw, str) else json.dumps(raw)
    return parse_config(
        values,
        environment=pulumi.get_stack(),
        region=pulumi.Config("aws").get("region"),
    )
