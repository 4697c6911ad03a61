"""The control service and the namespace its workers run in.

The control service gets its namespace, a service account bound to its IAM role, settings
and secrets, a Deployment, Service, PodDisruptionBudget and Ingress. Step pods and image
builds run in a second namespace, where the control service's RBAC is limited to the
objects it launches, with the two service accounts those pods use."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

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
COMMAND = ["gristmill", "serve", "--host", "0.0.0.0", "--port", str(PORT)]
# Any fixed non-root identity: the image only needs to read its files.
RUN_AS = 10001


def control_labels() -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "gristmill",
        "app.kubernetes.io/component": "control",
        ROLE_LABEL: CONTROL_ROLE,
    }


def control_rbac_rules() -> list[PolicyRuleArgsDict]:
    """Step pods, image-build Jobs, warm-worker Deployments and their Services, in the
    workers' namespace only: no Secrets, nothing cluster-wide."""
    manage = ["get", "list", "watch", "create", "update", "patch", "delete"]
    return [
        {"api_groups": [""], "resources": ["pods"], "verbs": manage},
        {"api_groups": [""], "resources": ["pods/log"], "verbs": ["get", "list"]},
        {"api_groups": [""], "resources": ["services"], "verbs": manage},
        {"api_groups": ["batch"], "resources": ["jobs"], "verbs": manage},
        {"api_groups": ["apps"], "resources": ["deployments"], "verbs": manage},
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
) -> dict[str, pulumi.Input[str]]:
    """The non-secret GRISTMILL_* settings that select the Kubernetes, S3 and Prometheus
    adapters of the control service."""
    internal = ({"GRISTMILL_INTERNAL_URL": internal_url(control_namespace)}
                if control_namespace else {})
    return {
        "GRISTMILL_PUBLIC_URL": public_url,
        # step pods reach the control service inside the cluster, not through the load
        # balancer (the workers' egress policy lets them)
        **internal,
        "GRISTMILL_EXECUTOR": "kubernetes",
        "GRISTMILL_KUBERNETES_NAMESPACE": workers_namespace,
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
                            "requests": {"cpu": settings.cpu, "memory": settings.memory},
                            "limits": {"memory": settings.memory},
                        },
                        # Start-up may include database migrations: allow three minutes
                        # before the liveness probe may restart the container.
                        "startup_probe": {
                            "http_get": {"path": HEALTH_PATH, "port": "http"},
                            "period_seconds": 5,
                            "failure_threshold": 36,
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
                        "security_context": {
                            "allow_privilege_escalation": False,
                            "capabilities": {"drop": ["ALL"]},
                        },
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
                    # Image builds (Kaniko) run as root, unprivileged: baseline, not
                    # restricted. Step pods themselves meet restricted.
                    "pod-security.kubernetes.io/enforce": "baseline",
                    "pod-security.kubernetes.io/warn": "restricted",
                },
            ),
            opts=child,
        )
        workers_ns = workers.metadata.name
        in_workers = pulumi.ResourceOptions(parent=workers)

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
        k8s.core.v1.ServiceAccount(
            f"{name}-builder-service-account",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=BUILDER_SERVICE_ACCOUNT,
                namespace=workers_ns,
                annotations={"eks.amazonaws.com/role-arn": args.builder_role_arn},
            ),
            opts=in_workers,
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

        deployment = k8s.apps.v1.Deployment(
            f"{name}-control",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=CONTROL_NAME, namespace=ns, labels=labels),
            spec=control_deployment_spec(
                settings=settings,
                config_map_name=config_map.metadata.name,
                secret_name=secret.metadata.name,
            ),
            opts=in_namespace,
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
        self.register_outputs({"namespace": ns, "workers_namespace": workers_ns})
