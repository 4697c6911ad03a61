from __future__ import annotations

from typing import Any

from gristmill_infra.platform_service import (
    PlatformService,
    PlatformServiceArgs,
    control_rbac_rules,
    control_settings,
)
from tests.infra.helpers import run_pulumi, stack_config
from tests.infra.mocks import GristmillMocks, reveal

SETTINGS = control_settings(
    public_url="https://dev.ml.example.com",
    workers_namespace="gristmill-workers",
    registry="123456789012.dkr.ecr.eu-west-3.amazonaws.com/gristmill/dev",
    bucket="gristmill-dev-data-abc",
    region="eu-west-3",
    prometheus_url="http://kube-prometheus-stack-prometheus.monitoring.svc.cluster.local:9090",
)
ROLE_ARN = "arn:aws:iam::123456789012:role/control"
BUILDER_ROLE_ARN = "arn:aws:iam::123456789012:role/builder"
DB_URL = "postgresql+psycopg://gristmill:pw@db:5432/gristmill?sslmode=require"


def build(mocks: GristmillMocks, **overrides: str) -> dict[str, Any]:
    cfg = stack_config("dev", **overrides)
    run_pulumi(
        lambda: (
            PlatformService(
                "dev-platform",
                PlatformServiceArgs(
                    settings=cfg.platform,
                    domain="dev.ml.example.com",
                    ingress_class="traefik",
                    control_role_arn=ROLE_ARN,
                    builder_role_arn=BUILDER_ROLE_ARN,
                    database_url=DB_URL,
                    service_settings=SETTINGS,
                ),
            ).namespace
        )
    )
    return {
        r.type.split(":")[-1]: r for r in mocks.registrations if r.type.startswith("kubernetes:")
    }


def container(mocks: GristmillMocks) -> dict[str, Any]:
    deployment = mocks.one("kubernetes:apps/v1:Deployment").inputs
    (control,) = deployment["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = control
    return result


def test_two_replicas_with_probes_on_the_health_endpoints(mocks: GristmillMocks) -> None:
    build(mocks)
    spec = mocks.one("kubernetes:apps/v1:Deployment").inputs["spec"]
    control = container(mocks)
    assert spec["replicas"] == 2
    assert control["image"] == "ghcr.io/gristmill/platform:0.1.0"
    assert control["command"] == [
        "gristmill", "serve", "--host", "0.0.0.0", "--port", "8080", "--no-migrate"
    ]
    assert control["ports"] == [{"name": "http", "containerPort": 8080}]
    assert control["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert control["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert spec["template"]["metadata"]["labels"]["gristmill.io/role"] == "control"


def test_replicas_follow_the_config(mocks: GristmillMocks) -> None:
    build(mocks, platformReplicas="3")
    assert mocks.one("kubernetes:apps/v1:Deployment").inputs["spec"]["replicas"] == 3


def test_a_disruption_budget_keeps_one_replica_serving(mocks: GristmillMocks) -> None:
    build(mocks)
    budget = mocks.one("kubernetes:policy/v1:PodDisruptionBudget").inputs["spec"]
    assert budget["minAvailable"] == 1
    assert budget["selector"]["matchLabels"]["gristmill.io/role"] == "control"


def test_runs_as_non_root_without_privilege_escalation(mocks: GristmillMocks) -> None:
    build(mocks)
    pod = mocks.one("kubernetes:apps/v1:Deployment").inputs["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container(mocks)["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def test_settings_and_secrets_reach_the_container(mocks: GristmillMocks) -> None:
    build(mocks)
    config_map = mocks.one("kubernetes:core/v1:ConfigMap")
    secret = mocks.one("kubernetes:core/v1:Secret")
    assert config_map.inputs["data"] == SETTINGS
    assert config_map.inputs["data"]["GRISTMILL_EXECUTOR"] == "kubernetes"
    assert config_map.inputs["data"]["GRISTMILL_DATASTORE_BACKEND"] == "s3"
    assert config_map.inputs["data"]["GRISTMILL_METRICS_BACKEND"] == "prometheus"
    data = reveal(secret.inputs["stringData"])
    assert data["GRISTMILL_DATABASE_URL"] == DB_URL
    assert len(data["GRISTMILL_SECRET_KEY"]) >= 64
    assert container(mocks)["envFrom"] == [
        {"configMapRef": {"name": config_map.state["metadata"]["name"]}},
        {"secretRef": {"name": secret.state["metadata"]["name"]}},
    ]


def service_accounts(mocks: GristmillMocks) -> dict[str, dict[str, Any]]:
    return {
        r.inputs["metadata"]["name"]: r.inputs
        for r in mocks.of_type("kubernetes:core/v1:ServiceAccount")
    }


def test_service_account_carries_the_data_store_role(mocks: GristmillMocks) -> None:
    build(mocks)
    account = service_accounts(mocks)["gristmill-control"]["metadata"]
    assert account["namespace"] == "gristmill"
    assert account["annotations"] == {"eks.amazonaws.com/role-arn": ROLE_ARN}
    pod = mocks.one("kubernetes:apps/v1:Deployment").inputs["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "gristmill-control"


def test_workers_get_no_api_token_and_builds_get_the_builder_role(mocks: GristmillMocks) -> None:
    build(mocks)
    accounts = service_accounts(mocks)
    worker = accounts["gristmill-worker"]
    builder = accounts["gristmill-builder"]
    assert worker["metadata"]["namespace"] == "gristmill-workers"
    assert builder["metadata"]["namespace"] == "gristmill-builds"
    assert worker["automountServiceAccountToken"] is False
    assert builder["automountServiceAccountToken"] is False
    assert "annotations" not in worker["metadata"]
    assert builder["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": BUILDER_ROLE_ARN}


def test_rbac_covers_what_the_backend_launches_in_the_workers_namespace_only(
    mocks: GristmillMocks,
) -> None:
    build(mocks)
    role = mocks.one("kubernetes:rbac.authorization.k8s.io/v1:Role", "platform-role").inputs
    binding = mocks.one(
        "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding", "platform-role-binding"
    ).inputs
    assert role["metadata"]["namespace"] == "gristmill-workers"
    assert binding["metadata"]["namespace"] == "gristmill-workers"
    resources = {resource for rule in role["rules"] for resource in rule["resources"]}
    assert resources == {"pods", "pods/log", "services", "jobs", "deployments",
                         "poddisruptionbudgets"}
    verbs = {verb for rule in role["rules"] for verb in rule["verbs"]}
    assert "*" not in verbs and "escalate" not in verbs
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "gristmill-control", "namespace": "gristmill"}
    ]
    assert not mocks.of_type("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole")
    assert not mocks.of_type("kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding")


def test_rbac_rules_never_grant_secrets() -> None:
    for rule in control_rbac_rules():
        assert "secrets" not in rule["resources"]
        assert "*" not in rule["resources"]


def test_ingress_routes_the_domain_to_the_service(mocks: GristmillMocks) -> None:
    build(mocks)
    ingress = mocks.one("kubernetes:networking.k8s.io/v1:Ingress").inputs
    service = mocks.one("kubernetes:core/v1:Service").inputs
    assert ingress["spec"]["ingressClassName"] == "traefik"
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "dev.ml.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"] == {
        "name": "gristmill-control",
        "port": {"name": "http"},
    }
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http"}]
    assert service["spec"]["selector"]["gristmill.io/role"] == "control"


def test_namespaces_enforce_pod_security(mocks: GristmillMocks) -> None:
    build(mocks, workersNamespace="steps")
    namespaces = {
        r.inputs["metadata"]["name"]: r.inputs["metadata"]["labels"]
        for r in mocks.of_type("kubernetes:core/v1:Namespace")
    }
    assert namespaces["gristmill"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert namespaces["steps"]["pod-security.kubernetes.io/enforce"] == "baseline"


def test_step_pods_reach_the_control_service_inside_the_cluster() -> None:
    settings = control_settings(
        public_url="https://dev.ml.example.com", workers_namespace="gristmill-workers",
        registry="r", bucket="b", region="eu-west-3", prometheus_url="http://p",
        control_namespace="gristmill")
    assert settings["GRISTMILL_INTERNAL_URL"] == (
        "http://gristmill-control.gristmill.svc.cluster.local")
    assert "GRISTMILL_INTERNAL_URL" not in SETTINGS


def test_the_root_filesystem_is_read_only_and_data_goes_to_a_volume(mocks: GristmillMocks) -> None:
    build(mocks)
    pod = mocks.one("kubernetes:apps/v1:Deployment").inputs["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in container(mocks)["volumeMounts"]}
    assert mounts == {"data": "/var/lib/gristmill", "tmp": "/tmp"}
    assert {v["name"] for v in pod["volumes"]} == {"data", "tmp"}
    assert all("emptyDir" in v for v in pod["volumes"])
    assert SETTINGS["GRISTMILL_DATA_DIR"] == "/var/lib/gristmill"
    assert pod["priorityClassName"] == "gristmill-control"


def test_migrations_run_once_in_a_job_before_the_deployment(mocks: GristmillMocks) -> None:
    build(mocks)
    job = mocks.one("kubernetes:batch/v1:Job").inputs
    pod = job["spec"]["template"]["spec"]
    (migrate,) = pod["containers"]
    assert migrate["command"] == ["gristmill", "db", "upgrade"]
    assert migrate["image"] == "ghcr.io/gristmill/platform:0.1.0"
    assert migrate["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["restartPolicy"] == "Never"
    env_from = container(mocks)["envFrom"]
    assert migrate["envFrom"] == env_from


def test_workers_namespace_has_a_quota_defaults_and_priorities(mocks: GristmillMocks) -> None:
    build(mocks, workersCpuQuota="32", workersGpuQuota="4")
    quota = mocks.one("kubernetes:core/v1:ResourceQuota").inputs
    assert quota["metadata"]["namespace"] == "gristmill-workers"
    assert quota["spec"]["hard"] == {
        "requests.cpu": "32",
        "requests.memory": "256Gi",
        "limits.memory": "256Gi",
        "requests.nvidia.com/gpu": "4",
        "pods": "500",
    }
    (limits,) = mocks.one("kubernetes:core/v1:LimitRange").inputs["spec"]["limits"]
    assert limits["type"] == "Container"
    assert set(limits["defaultRequest"]) == {"cpu", "memory", "ephemeral-storage"}
    # a default disk limit would be every step's (they state none), evicted past it
    assert limits["default"] == {"memory": "1Gi"}
    assert limits["max"]["ephemeral-storage"] == "200Gi"
    classes = {
        r.inputs["metadata"]["name"]: r.inputs
        for r in mocks.of_type("kubernetes:scheduling.k8s.io/v1:PriorityClass")
    }
    order = sorted(classes, key=lambda name: -classes[name]["value"])
    assert order == ["gristmill-control", "gristmill-warm-worker", "gristmill-step",
                     "gristmill-build", "gristmill-shadow-worker"]
    assert classes["gristmill-build"]["preemptionPolicy"] == "Never"
    # shadow-only workers are evicted by every other class and evict none themselves
    assert classes["gristmill-shadow-worker"]["preemptionPolicy"] == "Never"
    assert classes["gristmill-warm-worker"]["preemptionPolicy"] == "PreemptLowerPriority"
    assert not any(c["globalDefault"] for c in classes.values())


def test_builds_have_their_own_namespace_and_rbac(mocks: GristmillMocks) -> None:
    build(mocks)
    role = mocks.one("kubernetes:rbac.authorization.k8s.io/v1:Role", "builds-role").inputs
    assert role["metadata"]["namespace"] == "gristmill-builds"
    resources = {resource for rule in role["rules"] for resource in rule["resources"]}
    assert resources == {"jobs", "pods", "pods/log"}
