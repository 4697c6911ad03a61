"""The control service and the namespaces its workers and image builds run in.

The control service gets its namespace, a service account bound to its IAM role, settings
and secrets, a migration Job, a Deployment (read-only root filesystem, data on a volume),
Service, PodDisruptionBudget and Ingress. Step pods run in a second namespace and image
builds in a third, where the control service's RBAC is limited to the objects it launches;
the workers' namespace has a ResourceQuota and LimitRange, and priority classes order
control service > warm workers > elastic steps > builds > shadow-only warm workers when the
cluster is full."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random
from pulumi_kubernetes.apps.v1 import DeploymentSpecArgsDict
from pulumi_kubernetes.networking.v1 import IngressSpecArgsDict
from pulumi_kubernetes.rbac.v1 import PolicyRuleArgsDict

from gristmill_infra.config import PlatformSettings
from gristmill_infra.labels import CONTROL_ROLE, CPU_POOL, POOL_LABEL, ROLE_LABEL

CONTROL_NAME = "gristmill-control"
SERVICE_ACCOUNT = CONTROL_NAME
# The accounts the Kubernetes backend puts on step pods and on image-build Jobs.
WORKER_SERVICE_ACCOUNT = "gristmill-worker"
BUILDER_SERVICE_ACCOUNT = "gristmill-builder"
PORT = 8080
HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
# Migrations run once per rollout, in the migration Job, never by each replica.
COMMAND = ["gristmill", "serve", "--host", "0.0.0.0", "--port", str(PORT), "--no-migrate"]
MIGRATE_COMMAND = ["gristmill", "db", "upgrade"]
# The image's user (platform/Dockerfile): it only needs to read its files.
RUN_AS = 10001
# The root filesystem is read-only; the service writes only here (GRISTMILL_DATA_DIR) and
# in /tmp. Its durable state is in PostgreSQL and S3: the volume holds caches only.
DATA_DIR = "/var/lib/gristmill"
TMP_DIR = "/tmp"  # noqa: S108 - a pod-private emptyDir, not a shared host directory

CONTROL_PRIORITY_CLASS = "gristmill-control"
# What the control service's settings name for the pods it launches.
WORKER_PRIORITY_CLASSES = {
    "gristmill-warm-worker": 100_000,
    "gristmill-step": 10_000,
    "gristmill-build": 1_000,
    # Warm workers that only run shadow copies (docs/rollout.md): the first evicted when
    # anything else needs room, and, like steps and builds, they wait rather than evict.
    "gristmill-shadow-worker": 100,
}
PRIORITY_CLASSES = {CONTROL_PRIORITY_CLASS: 1_000_000, **WORKER_PRIORITY_CLASSES}


def control_labels() -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "gristmill",
        "app.kubernetes.io/component": "control",
        ROLE_LABEL: CONTROL_ROLE,
    }


def control_rbac_rules() -> list[PolicyRuleArgsDict]:
    """Step pods, image-build Jobs, warm-worker Deployments, their Services and
    PodDisruptionBudgets, in the
    workers' namespace only: no Secrets, nothing cluster-wide."""
    manage = ["get", "list", "watch", "create", "update", "patch", "delete"]
    return [
        {"api_groups": [""], "resources": ["pods"], "verbs": manage},
        {"api_groups": [""], "resources": ["pods/log"], "verbs": ["get", "list"]},
        {"api_groups": [""], "resources": ["services"], "verbs": manage},
        {"api_groups": ["batch"], "resources": ["jobs"], "verbs": manage},
        {"api_groups": ["apps"], "resources": ["deployments"], "verbs": manage},
        # the warm workers' disruption budgets (applied with their Deployment, deleted
        # with it by label)
        {"api_groups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": manage},
    ]


def builder_rbac_rules() -> list[PolicyRuleArgsDict]:
    """Image-build Jobs and reading their pods and logs, in the builds' namespace only."""
    manage = ["get", "list", "watch", "create", "update", "patch", "delete"]
    return [
        {"api_groups": ["batch"], "resources": ["jobs"], "verbs": manage},
        {"api_groups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"api_groups": [""], "resources": ["pods/log"], "verbs": ["get", "list"]},
    ]


def workers_quota(settings: PlatformSettings) -> dict[str, str]:
    """A ceiling on what steps can ask for together, so a runaway loop of executions queues
    instead of scaling the node groups to their maximum."""
    return {
        "requests.cpu": settings.workers_cpu_quota,
        "requests.memory": settings.workers_memory_quota,
        "limits.memory": settings.workers_memory_quota,
        "requests.nvidia.com/gpu": str(settings.workers_gpu_quota),
        "pods": str(settings.workers_pod_quota),
    }


def workers_limit_range() -> list[dict[str, object]]:
    """Defaults for a container that states nothing (the quota needs every pod to have
    requests), and a per-container ceiling no single step can exceed.

    No default ephemeral-storage limit: step pods state none (their disk is not a setting
    of a step), so a default would become every step's limit, and the kubelet evicts a
    pod whose writable layer, logs and emptyDirs pass it (file inputs and outputs, model
    downloads, scratch files). Kubernetes then defaults the limit to the max."""
    return [
        {
            "type": "Container",
            "default_request": {"cpu": "100m", "memory": "256Mi", "ephemeral-storage": "1Gi"},
            "default": {"memory": "1Gi"},
            "max": {"memory": "512Gi", "ephemeral-storage": "200Gi"},
        }
    ]


def internal_url(control_namespace: str) -> str:
    return f"http://{CONTROL_NAME}.{control_namespace}.svc.cluster.local"


def control_settings(
    *,
    public_url: pulumi.Input[str],
    workers_namespace: str,
    registry: pulumi.Input[str],
    bucket: pulumi.Input[str],
    region: str,
    prometheus_url: str,
    control_namespace: str | None = None,
    builds_namespace: str | None = None,
    elastic_pool_size: int = 0,
    elastic_pool_idle_s: int = 300,
) -> dict[str, pulumi.Input[str]]:
    """The non-secret GRISTMILL_* settings that select the Kubernetes, S3 and Prometheus
    adapters of the control service."""
    internal = ({"GRISTMILL_INTERNAL_URL": internal_url(control_namespace)}
                if control_namespace else {})
    builds = ({"GRISTMILL_KUBERNETES_BUILD_NAMESPACE": builds_namespace}
              if builds_namespace else {})
    return {
        "GRISTMILL_PUBLIC_URL": public_url,
        # step pods reach the control service inside the cluster, not through the load
        # balancer (the workers' egress policy lets them)
        **internal,
        "GRISTMILL_EXECUTOR": "kubernetes",
        "GRISTMILL_KUBERNETES_NAMESPACE": workers_namespace,
        **builds,
        # Warm pods per step so an elastic execution skips pod start-up (docs/kubernetes.md).
        "GRISTMILL_KUBERNETES_ELASTIC_POOL_SIZE": str(elastic_pool_size),
        "GRISTMILL_KUBERNETES_ELASTIC_POOL_IDLE_S": str(elastic_pool_idle_s),
        "GRISTMILL_DATA_DIR": DATA_DIR,
        "GRISTMILL_REGISTRY": registry,
        "GRISTMILL_DATASTORE_BACKEND": "s3",
        "GRISTMILL_S3_BUCKET": bucket,
        "GRISTMILL_S3_REGION": region,
        "GRISTMILL_METRICS_BACKEND": "prometheus",
        "GRISTMILL_PROMETHEUS_URL": prometheus_url,
    }


def control_deployment_spec(
    *,
    settings: PlatformSettings,
    config_map_name: pulumi.Input[str],
    secret_name: pulumi.Input[str],
) -> DeploymentSpecArgsDict:
    labels = control_labels()
    return {
        "replicas": settings.replicas,
        "selector": {"match_labels": labels},
        # Never fewer ready replicas than asked for during a rollout.
        "strategy": {
            "type": "RollingUpdate",
            "rolling_update": {"max_unavailable": 0, "max_surge": 1},
        },
        "template": {
            "metadata": {"labels": labels},
            "spec": {
                "service_account_name": SERVICE_ACCOUNT,
                "node_selector": {POOL_LABEL: CPU_POOL},
                # Replicas on different zones and nodes, so one failure leaves one serving.
                "topology_spread_constraints": [
                    {
                        "max_skew": 1,
                        "topology_key": key,
                        "when_unsatisfiable": "ScheduleAnyway",
                        "label_selector": {"match_labels": labels},
                    }
                    for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
                ],
                "security_context": {
                    "run_as_non_root": True,
                    "run_as_user": RUN_AS,
                    "run_as_group": RUN_AS,
                    "fs_group": RUN_AS,
                    "seccomp_profile": {"type": "RuntimeDefault"},
                },
                "termination_grace_period_seconds": 30,
                "priority_class_name": CONTROL_PRIORITY_CLASS,
                # It calls the Kubernetes API with this token (the workers' namespace).
                "automount_service_account_token": True,
                "volumes": [
                    {"name": "data", "empty_dir": {"size_limit": "1Gi"}},
                    {"name": "tmp", "empty_dir": {"size_limit": "1Gi"}},
                ],
                "containers": [
                    {
                        "name": "control",
                        "image": settings.image,
                        "command": COMMAND,
                        "ports": [{"name": "http", "container_port": PORT}],
                        # Named objects whose names change with their content (Pulumi
                        # auto-naming), so a new setting or secret rolls the pods.
                        "env_from": [
                            {"config_map_ref": {"name": config_map_name}},
                            {"secret_ref": {"name": secret_name}},
                        ],
                        "resources": {
                            "requests": {
                                "cpu": settings.cpu,
                                "memory": settings.memory,
                                "ephemeral-storage": "256Mi",
                            },
                            "limits": {"memory": settings.memory, "ephemeral-storage": "2Gi"},
                        },
                        "volume_mounts": [
                            {"name": "data", "mount_path": DATA_DIR},
                            {"name": "tmp", "mount_path": TMP_DIR},
                        ],
                        # Migrations ran before (the migration Job): start-up is the
                        # import and the first database connection.
                        "startup_probe": {
                            "http_get": {"path": HEALTH_PATH, "port": "http"},
                            "period_seconds": 2,
                            "failure_threshold": 30,
                        },
                        "liveness_probe": {
                            "http_get": {"path": HEALTH_PATH, "port": "http"},
                            "period_seconds": 10,
                            "timeout_seconds": 2,
                            "failure_threshold": 3,
                        },
                        "readiness_probe": {
                            "http_get": {"path": READY_PATH, "port": "http"},
                            "period_seconds": 5,
                            "timeout_seconds": 2,
                            "failure_threshold": 3,
                        },
                        "security_context": container_security_context(),
                    }
                ],
            },
        },
    }


def container_security_context() -> Any:
    return {
        "allow_privilege_escalation": False,
        "read_only_root_filesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def migration_job_spec(
    *, image: str, config_map_name: pulumi.Input[str], secret_name: pulumi.Input[str]
) -> Any:
    """`gristmill db upgrade` once per rollout, before the Deployment changes: replicas
    never race each other on the schema. Its pod spec changes with the image (and the
    settings' names), so Pulumi replaces the Job, and the migrations run, on each upgrade."""
    return {
        "backoff_limit": 2,
        "active_deadline_seconds": 900,
        "template": {
            "metadata": {"labels": {"app.kubernetes.io/name": "gristmill",
                                    "app.kubernetes.io/component": "migrations"}},
            "spec": {
                "restart_policy": "Never",
                "service_account_name": SERVICE_ACCOUNT,
                "automount_service_account_token": False,
                "node_selector": {POOL_LABEL: CPU_POOL},
                "priority_class_name": CONTROL_PRIORITY_CLASS,
                "security_context": {
                    "run_as_non_root": True,
                    "run_as_user": RUN_AS,
                    "run_as_group": RUN_AS,
                    "seccomp_profile": {"type": "RuntimeDefault"},
                },
                "volumes": [
                    {"name": "data", "empty_dir": {"size_limit": "256Mi"}},
                    {"name": "tmp", "empty_dir": {"size_limit": "256Mi"}},
                ],
                "containers": [
                    {
                        "name": "migrate",
                        "image": image,
                        "command": MIGRATE_COMMAND,
                        "env_from": [
                            {"config_map_ref": {"name": config_map_name}},
                            {"secret_ref": {"name": secret_name}},
                        ],
                        "resources": {
                            "requests": {"cpu": "100m", "memory": "256Mi",
                                         "ephemeral-storage": "64Mi"},
                            "limits": {"memory": "512Mi", "ephemeral-storage": "512Mi"},
                        },
                        "volume_mounts": [
                            {"name": "data", "mount_path": DATA_DIR},
                            {"name": "tmp", "mount_path": TMP_DIR},
                        ],
                        "security_context": container_security_context(),
                    }
                ],
            },
        },
    }


def control_ingress_spec(
    domain: str, ingress_class: pulumi.Input[str], service_name: str
) -> IngressSpecArgsDict:
    return {
        "ingress_class_name": ingress_class,
        "rules": [
            {
                "host": domain,
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "path_type": "Prefix",
                            "backend": {
                                "service": {"name": service_name, "port": {"name": "http"}}
                            },
                        }
                    ]
                },
            }
        ],
    }


@dataclass(frozen=True)
class PlatformServiceArgs:
    settings: PlatformSettings
    domain: str
    ingress_class: pulumi.Input[str]
    control_role_arn: pulumi.Input[str]
    builder_role_arn: pulumi.Input[str]
    database_url: pulumi.Input[str]
    service_settings: Mapping[str, pulumi.Input[str]]


class PlatformService(pulumi.ComponentResource):
    namespace: pulumi.Output[str]
    workers_namespace: pulumi.Output[str]
    builds_namespace: pulumi.Output[str]

    def __init__(
        self, name: str, args: PlatformServiceArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gristmill:infra:PlatformService", name, None, opts)
        settings = args.settings
        child = pulumi.ResourceOptions(parent=self)
        labels = control_labels()

        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=settings.namespace,
                labels={"pod-security.kubernetes.io/enforce": "restricted"},
            ),
            opts=child,
        )
        ns = namespace.metadata.name
        in_namespace = pulumi.ResourceOptions(parent=namespace)
        workers = k8s.core.v1.Namespace(
            f"{name}-workers-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=settings.workers_namespace,
                labels={
                    # Step pods meet restricted; users' own images may need baseline
                    # (a root user), and get a warning.
                    "pod-security.kubernetes.io/enforce": "baseline",
                    "pod-security.kubernetes.io/warn": "restricted",
                },
            ),
            opts=child,
        )
        workers_ns = workers.metadata.name
        in_workers = pulumi.ResourceOptions(parent=workers)
        builds = k8s.core.v1.Namespace(
            f"{name}-builds-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=settings.builds_namespace,
                labels={
                    # Rootless BuildKit runs as uid 1000 without privileges, but in user
                    # namespaces it creates itself, which the default seccomp and
                    # AppArmor profiles forbid: its pods set them Unconfined, which only
                    # the privileged level admits. Nothing else runs here.
                    "pod-security.kubernetes.io/enforce": "privileged",
                    "pod-security.kubernetes.io/warn": "baseline",
                },
            ),
            opts=child,
        )
        builds_ns = builds.metadata.name
        in_builds = pulumi.ResourceOptions(parent=builds)

        for class_name, value in PRIORITY_CLASSES.items():
            k8s.scheduling.v1.PriorityClass(
                f"{name}-{class_name}",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=class_name, labels=labels),
                value=value,
                global_default=False,
                # Builds, elastic steps and shadow-only workers wait for room rather than
                # evict others (a copy's result is not worth a build or step evicted).
                preemption_policy="PreemptLowerPriority"
                if value >= PRIORITY_CLASSES["gristmill-warm-worker"]
                else "Never",
                description=f"Gristmill: {class_name}",
                opts=child,
            )
        k8s.core.v1.ResourceQuota(
            f"{name}-workers-quota",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="gristmill-workers", namespace=workers_ns),
            spec=k8s.core.v1.ResourceQuotaSpecArgs(hard=workers_quota(settings)),
            opts=in_workers,
        )
        k8s.core.v1.LimitRange(
            f"{name}-workers-limits",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="gristmill-workers", namespace=workers_ns),
            spec=k8s.core.v1.LimitRangeSpecArgs(limits=workers_limit_range()),  # type: ignore[arg-type]
            opts=in_workers,
        )

        k8s.core.v1.ServiceAccount(
            f"{name}-service-account",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=SERVICE_ACCOUNT,
                namespace=ns,
                labels=labels,
                annotations={"eks.amazonaws.com/role-arn": args.control_role_arn},
            ),
            opts=in_namespace,
        )
        role = k8s.rbac.v1.Role(
            f"{name}-role",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=SERVICE_ACCOUNT, namespace=workers_ns, labels=labels
            ),
            rules=control_rbac_rules(),
            opts=in_workers,
        )
        k8s.rbac.v1.RoleBinding(
            f"{name}-role-binding",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=SERVICE_ACCOUNT, namespace=workers_ns, labels=labels
            ),
            role_ref=k8s.rbac.v1.RoleRefArgs(
                api_group="rbac.authorization.k8s.io", kind="Role", name=role.metadata.name
            ),
            subjects=[
                k8s.rbac.v1.SubjectArgs(kind="ServiceAccount", name=SERVICE_ACCOUNT, namespace=ns)
            ],
            opts=in_workers,
        )
        k8s.core.v1.ServiceAccount(
            f"{name}-worker-service-account",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=WORKER_SERVICE_ACCOUNT, namespace=workers_ns),
            # Step code never needs the Kubernetes API.
            automount_service_account_token=False,
            opts=in_workers,
        )
        builds_role = k8s.rbac.v1.Role(
            f"{name}-builds-role",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=SERVICE_ACCOUNT, namespace=builds_ns, labels=labels
            ),
            rules=builder_rbac_rules(),
            opts=in_builds,
        )
        k8s.rbac.v1.RoleBinding(
            f"{name}-builds-role-binding",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=SERVICE_ACCOUNT, namespace=builds_ns, labels=labels
            ),
            role_ref=k8s.rbac.v1.RoleRefArgs(
                api_group="rbac.authorization.k8s.io",
                kind="Role",
                name=builds_role.metadata.name,
            ),
            subjects=[
                k8s.rbac.v1.SubjectArgs(kind="ServiceAccount", name=SERVICE_ACCOUNT, namespace=ns)
            ],
            opts=in_builds,
        )
        k8s.core.v1.ServiceAccount(
            f"{name}-builder-service-account",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=BUILDER_SERVICE_ACCOUNT,
                namespace=builds_ns,
                annotations={"eks.amazonaws.com/role-arn": args.builder_role_arn},
            ),
            # No Kubernetes API token in a pod that runs users' RUN lines; the IAM role's
            # web identity token is projected into the registry-login container only.
            automount_service_account_token=False,
            opts=in_builds,
        )

        signing_key = random.RandomPassword(
            f"{name}-secret-key", length=64, special=False, opts=child
        )
        secret = k8s.core.v1.Secret(
            f"{name}-secrets",
            metadata=k8s.meta.v1.ObjectMetaArgs(namespace=ns, labels=labels),
            string_data={
                "GRISTMILL_DATABASE_URL": args.database_url,
                "GRISTMILL_SECRET_KEY": signing_key.result,
            },
            opts=in_namespace,
        )
        config_map = k8s.core.v1.ConfigMap(
            f"{name}-settings",
            metadata=k8s.meta.v1.ObjectMetaArgs(namespace=ns, labels=labels),
            data=dict(args.service_settings),
            opts=in_namespace,
        )

        migrations = k8s.batch.v1.Job(
            f"{name}-migrations",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                namespace=ns, labels={**labels, "app.kubernetes.io/component": "migrations"}
            ),
            spec=migration_job_spec(
                image=settings.image,
                config_map_name=config_map.metadata.name,
                secret_name=secret.metadata.name,
            ),
            opts=in_namespace,
        )
        deployment = k8s.apps.v1.Deployment(
            f"{name}-control",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=CONTROL_NAME, namespace=ns, labels=labels),
            spec=control_deployment_spec(
                settings=settings,
                config_map_name=config_map.metadata.name,
                secret_name=secret.metadata.name,
            ),
            # Pulumi waits for the Job to complete: new replicas start on the new schema.
            opts=pulumi.ResourceOptions(parent=namespace, depends_on=[migrations]),
        )
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-control",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=CONTROL_NAME, namespace=ns, labels=labels),
            spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
                min_available=1,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels),
            ),
            opts=in_namespace,
        )
        service = k8s.core.v1.Service(
            f"{name}-control",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=CONTROL_NAME, namespace=ns, labels=labels),
            spec=k8s.core.v1.ServiceSpecArgs(
                type="ClusterIP",
                selector=labels,
                ports=[k8s.core.v1.ServicePortArgs(name="http", port=80, target_port="http")],
            ),
            opts=pulumi.ResourceOptions(parent=namespace, depends_on=[deployment]),
        )
        k8s.networking.v1.Ingress(
            f"{name}-control",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=CONTROL_NAME,
                namespace=ns,
                labels=labels,
                annotations={"traefik.ingress.kubernetes.io/router.entrypoints": "websecure"},
            ),
            spec=control_ingress_spec(args.domain, args.ingress_class, CONTROL_NAME),
            opts=pulumi.ResourceOptions(parent=namespace, depends_on=[service]),
        )

        self.namespace = ns
        self.workers_namespace = workers_ns
        self.builds_namespace = builds_ns
        self.register_outputs(
            {"namespace": ns, "workers_namespace": workers_ns, "builds_namespace": builds_ns}
        )
