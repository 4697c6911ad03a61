from __future__ import annotations

import json

import pulumi
import pytest

from gristmill_infra.config import ConfigError
from gristmill_infra.network import plan_subnets
from gristmill_infra.stack import build_environment, pick_zone
from tests.infra.helpers import run_pulumi, stack_config
from tests.infra.mocks import LOAD_BALANCER_HOSTNAME, GristmillMocks, reveal

DEV_RESOURCE_TYPES = {
    "pulumi:providers:aws",
    "pulumi:providers:kubernetes",
    "gristmill:infra:Network",
    "gristmill:infra:Cluster",
    "gristmill:infra:NodePools",
    "gristmill:infra:ClusterAddons",
    "gristmill:infra:DataStore",
    "gristmill:infra:Registry",
    "gristmill:infra:Database",
    "gristmill:infra:Ingress",
    "gristmill:infra:Monitoring",
    "gristmill:infra:ControlServiceMonitoring",
    "kubernetes:monitoring.coreos.com/v1:ServiceMonitor",
    "kubernetes:monitoring.coreos.com/v1:PrometheusRule",
    "gristmill:infra:PlatformService",
    "gristmill:infra:NetworkPolicies",
    # network
    "aws:ec2/vpc:Vpc",
    "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup",
    "aws:ec2/internetGateway:InternetGateway",
    "aws:ec2/subnet:Subnet",
    "aws:ec2/routeTable:RouteTable",
    "aws:ec2/routeTableAssociation:RouteTableAssociation",
    "aws:ec2/eip:Eip",
    "aws:ec2/natGateway:NatGateway",
    "aws:ec2/vpcEndpoint:VpcEndpoint",
    # cluster, node pools, add-ons
    "aws:iam/role:Role",
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
    "aws:iam/rolePolicy:RolePolicy",
    "aws:iam/openIdConnectProvider:OpenIdConnectProvider",
    "aws:kms/key:Key",
    "aws:cloudwatch/logGroup:LogGroup",
    "aws:eks/cluster:Cluster",
    "aws:eks/addon:Addon",
    "aws:eks/nodeGroup:NodeGroup",
    "kubernetes:storage.k8s.io/v1:StorageClass",
    # data store and registry
    "aws:s3/bucket:Bucket",
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls",
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "aws:s3/bucketVersioning:BucketVersioning",
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
    "aws:s3/bucketCorsConfiguration:BucketCorsConfiguration",
    "aws:s3/bucketPolicy:BucketPolicy",
    "aws:ecr/repository:Repository",
    "aws:ecr/lifecyclePolicy:LifecyclePolicy",
    # database
    "random:index/randomPassword:RandomPassword",
    "aws:rds/subnetGroup:SubnetGroup",
    "aws:ec2/securityGroup:SecurityGroup",
    "aws:rds/instance:Instance",
    "aws:secretsmanager/secret:Secret",
    "aws:secretsmanager/secretVersion:SecretVersion",
    # ingress
    "aws:acm/certificate:Certificate",
    "aws:acm/certificateValidation:CertificateValidation",
    "aws:route53/record:Record",
    "kubernetes:helm.sh/v3:Release",
    "kubernetes:core/v1:Service",
    # platform service and policies
    "kubernetes:core/v1:Namespace",
    "kubernetes:core/v1:ServiceAccount",
    "kubernetes:rbac.authorization.k8s.io/v1:Role",
    "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding",
    "kubernetes:core/v1:Secret",
    "kubernetes:core/v1:ConfigMap",
    "kubernetes:apps/v1:Deployment",
    "kubernetes:policy/v1:PodDisruptionBudget",
    "kubernetes:networking.k8s.io/v1:Ingress",
    "kubernetes:networking.k8s.io/v1:NetworkPolicy",
    "kubernetes:batch/v1:Job",
    "kubernetes:core/v1:LimitRange",
    "kubernetes:core/v1:ResourceQuota",
    "kubernetes:scheduling.k8s.io/v1:PriorityClass",
    # node launch templates (IMDSv2, hop limit 1)
    "aws:ec2/launchTemplate:LaunchTemplate",
}


PROTECTED: set[str] = set()


def _record_protect(args: pulumi.ResourceTransformationArgs) -> None:
    """Resource options never reach the mocks: a stack transformation sees them."""
    if args.opts.protect:
        PROTECTED.add(args.name)


def build(stack: str = "dev", **overrides: str) -> dict[str, object]:
    cfg = stack_config(stack, **overrides)
    PROTECTED.clear()

    def program() -> dict[str, object]:
        pulumi.runtime.register_stack_transformation(_record_protect)  # type: ignore[arg-type]
        outputs = build_environment(cfg).as_dict()
        return {
            **outputs,
            "kubeconfig_is_secret": pulumi.Output.from_input(outputs["kubeconfig"].is_secret()),
        }

    result: dict[str, object] = run_pulumi(program)
    return result


def test_dev_stack_creates_the_whole_environment(mocks: GristmillMocks) -> None:
    build()
    assert mocks.types() == DEV_RESOURCE_TYPES
    assert set(mocks.releases()) == {
        "cluster-autoscaler",
        "nvidia-device-plugin",
        "aws-load-balancer-controller",
        "traefik",
        "kube-prometheus-stack",
        "dcgm-exporter",
    }
    # the CPU group and one group per GPU type (g5.xlarge, g6.xlarge)
    assert len(mocks.of_type("aws:eks/nodeGroup:NodeGroup")) == 3
    assert set() == PROTECTED
    assert len(mocks.of_type("aws:ec2/natGateway:NatGateway")) == 1
    assert len(mocks.of_type("aws:ec2/subnet:Subnet")) == 6


def test_dev_stack_outputs(mocks: GristmillMocks) -> None:
    outputs = build()
    assert set(outputs) - {"kubeconfig_is_secret"} == {
        "environment_url",
        "datastore_bucket",
        "registry_url",
        "kubeconfig",
        "cluster_name",
    }
    assert outputs["environment_url"] == "https://dev.ml.example.com"
    assert str(outputs["datastore_bucket"]).startswith("gristmill-dev-data-")
    assert outputs["registry_url"] == "123456789012.dkr.ecr.eu-west-3.amazonaws.com/gristmill/dev"
    assert outputs["cluster_name"] == "gristmill-dev"
    assert outputs["kubeconfig_is_secret"] is True
    kubeconfig = json.loads(str(outputs["kubeconfig"]))
    assert kubeconfig["current-context"] == "gristmill-dev"


def test_the_elastic_pool_follows_the_config(mocks: GristmillMocks) -> None:
    build(elasticPoolSize="0", elasticPoolIdleSeconds="60")
    settings = mocks.one("kubernetes:core/v1:ConfigMap", "platform-settings").inputs["data"]
    assert settings["GRISTMILL_KUBERNETES_ELASTIC_POOL_SIZE"] == "0"
    assert settings["GRISTMILL_KUBERNETES_ELASTIC_POOL_IDLE_S"] == "60"


def test_control_service_is_wired_to_the_environment(mocks: GristmillMocks) -> None:
    outputs = build()
    settings = mocks.one("kubernetes:core/v1:ConfigMap", "platform-settings").inputs["data"]
    assert settings == {
        "GRISTMILL_PUBLIC_URL": "https://dev.ml.example.com",
        "GRISTMILL_INTERNAL_URL": "http://gristmill-control.gristmill.svc.cluster.local",
        "GRISTMILL_EXECUTOR": "kubernetes",
        "GRISTMILL_KUBERNETES_NAMESPACE": "gristmill-workers",
        "GRISTMILL_KUBERNETES_BUILD_NAMESPACE": "gristmill-builds",
        "GRISTMILL_KUBERNETES_ELASTIC_POOL_SIZE": "1",
        "GRISTMILL_KUBERNETES_ELASTIC_POOL_IDLE_S": "300",
        "GRISTMILL_DATA_DIR": "/var/lib/gristmill",
        "GRISTMILL_REGISTRY": outputs["registry_url"],
        "GRISTMILL_DATASTORE_BACKEND": "s3",
        "GRISTMILL_S3_BUCKET": outputs["datastore_bucket"],
        "GRISTMILL_S3_REGION": "eu-west-3",
        "GRISTMILL_METRICS_BACKEND": "prometheus",
        "GRISTMILL_PROMETHEUS_URL": "http://kube-prometheus-stack-prometheus.monitoring.svc.cluster.local:9090",
        # scraped by the ServiceMonitor on its own port, never through the ingress
        "GRISTMILL_METRICS_PORT": "9464",
        "GRISTMILL_METRICS_HOST": "0.0.0.0",
    }
    secret = reveal(mocks.one("kubernetes:core/v1:Secret").inputs["stringData"])
    rds = mocks.one("aws:rds/instance:Instance").state
    assert f"@{rds['address']}:5432/gristmill" in secret["GRISTMILL_DATABASE_URL"]
    accounts = {
        r.inputs["metadata"]["name"]: r.inputs["metadata"]
        for r in mocks.of_type("kubernetes:core/v1:ServiceAccount")
    }
    control_role = mocks.one("aws:iam/role:Role", "control-service").state["arn"]
    builder_role = mocks.one("aws:iam/role:Role", "image-builder").state["arn"]
    assert accounts["gristmill-control"]["annotations"] == {
        "eks.amazonaws.com/role-arn": control_role
    }
    assert accounts["gristmill-builder"]["annotations"] == {
        "eks.amazonaws.com/role-arn": builder_role
    }
    dns = [
        r.inputs
        for r in mocks.of_type("aws:route53/record:Record")
        if r.inputs["type"] == "CNAME" and r.inputs["name"] == "dev.ml.example.com"
    ]
    assert dns[0]["records"] == [LOAD_BALANCER_HOSTNAME]


def test_database_accepts_the_cluster_and_policies_shut_workers_out(mocks: GristmillMocks) -> None:
    build()
    group = mocks.one("aws:ec2/securityGroup:SecurityGroup").inputs
    assert group["ingress"][0]["securityGroups"] == ["sg-0cluster"]
    subnet_group = mocks.one("aws:rds/subnetGroup:SubnetGroup").inputs
    assert subnet_group["subnetIds"] == ["dev-network-database-0-id", "dev-network-database-1-id"]
    cluster = mocks.one("aws:eks/cluster:Cluster").inputs
    assert cluster["vpcConfig"]["subnetIds"] == [
        "dev-network-private-0-id",
        "dev-network-private-1-id",
    ]
    for group_ in mocks.of_type("aws:eks/nodeGroup:NodeGroup"):
        assert group_.inputs["subnetIds"] == [
            "dev-network-private-0-id",
            "dev-network-private-1-id",
        ]
    database_subnets = [
        r.inputs["cidrBlock"]
        for r in mocks.of_type("aws:ec2/subnet:Subnet")
        if r.inputs["tags"]["gristmill.io/tier"] == "database"
    ]
    assert database_subnets == list(plan_subnets("10.0.0.0/16", 2).database)
    # one such policy per namespace that runs step code (workers, image builds); the mocks
    # register them in no fixed order
    egresses = {
        r.inputs["metadata"]["namespace"]: r.inputs
        for r in mocks.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
        if r.inputs["metadata"]["name"] == "gristmill-worker-egress"
    }
    assert "gristmill-workers" in egresses
    for egress in egresses.values():
        excluded = egress["spec"]["egress"][1]["to"][0]["ipBlock"]["except"]
        assert set(database_subnets) <= set(excluded)


def test_every_resource_uses_the_stack_providers(mocks: GristmillMocks) -> None:
    build()
    (aws_provider,) = mocks.of_type("pulumi:providers:aws")
    assert aws_provider.inputs["region"] == "eu-west-3"
    assert json.loads(aws_provider.inputs["defaultTags"])["tags"] == {
        "gristmill:environment": "dev",
        "managed-by": "pulumi",
        "team": "ml-platform",
        "cost-center": "gristmill-dev",
    }
    for registration in mocks.registrations:
        if registration.type.startswith("aws:"):
            assert registration.provider and "::dev-aws::" in registration.provider, (
                registration.name
            )
        if registration.type.startswith("kubernetes:"):
            assert registration.provider and "::dev-kubernetes::" in registration.provider, (
                registration.name
            )


def test_stack_without_gpus_has_no_gpu_pieces(mocks: GristmillMocks) -> None:
    build(gpuEnabled="false")
    assert [r.name for r in mocks.of_type("aws:eks/nodeGroup:NodeGroup")] == ["dev-nodes-cpu"]
    assert set(mocks.releases()) == {
        "cluster-autoscaler", "aws-load-balancer-controller", "traefik", "kube-prometheus-stack"
    }


def test_prod_stack_is_highly_available(mocks: GristmillMocks) -> None:
    build("prod")
    assert len(mocks.of_type("aws:ec2/natGateway:NatGateway")) == 3
    assert len(mocks.of_type("aws:ec2/subnet:Subnet")) == 9
    instance = mocks.one("aws:rds/instance:Instance").inputs
    assert instance["multiAz"] is True
    assert instance["deletionProtection"] is True
    assert instance["performanceInsightsEnabled"] is True
    assert instance["enabledCloudwatchLogsExports"] == ["postgresql", "upgrade"]
    assert instance["finalSnapshotIdentifier"] == "gristmill-prod-final"
    assert instance["deleteAutomatedBackups"] is False
    assert {
        "prod-datastore-bucket",
        "prod-database-postgres",
        "prod-registry-gristmill-steps",
        "prod-registry-gristmill-cache",
        "prod-registry-gristmill-runtime-python",
        "prod-registry-gristmill-runtime-python-cuda",
    } == PROTECTED
    alertmanager = mocks.releases()["kube-prometheus-stack"]["values"]["alertmanager"]
    assert alertmanager["enabled"] is True
    assert alertmanager["config"]["route"]["receiver"] == "webhook"
    # one GPU node group per instance type (g6e.xlarge, g6e.2xlarge)
    gpu_types = sorted(
        r.inputs["instanceTypes"][0]
        for r in mocks.of_type("aws:eks/nodeGroup:NodeGroup")
        if "gpu" in r.name
    )
    assert gpu_types == ["g6e.2xlarge", "g6e.xlarge"]
    assert mocks.one("aws:eks/cluster:Cluster").inputs["vpcConfig"]["publicAccessCidrs"] == [
        "203.0.113.0/24"
    ]
    assert (
        mocks.one("aws:eks/accessEntry:AccessEntry")
        .inputs["principalArn"]
        .endswith(":role/platform-admins")
    )


def test_explicit_zones_skip_the_lookup(mocks: GristmillMocks) -> None:
    build(availabilityZones='["eu-west-3b", "eu-west-3c"]')
    zones = sorted({r.inputs["availabilityZone"] for r in mocks.of_type("aws:ec2/subnet:Subnet")})
    assert zones == ["eu-west-3b", "eu-west-3c"]
    assert "aws:index/getAvailabilityZones:getAvailabilityZones" not in mocks.calls


def test_region_with_too_few_zones_is_a_config_error(mocks: GristmillMocks) -> None:
    mocks.zones = ["eu-west-3a", "eu-west-3b"]
    # The engine re-wraps errors raised while resolving inputs; the message survives.
    with pytest.raises(ValueError, match="gristmill:availabilityZoneCount must be at most 2"):
        build("prod")


def test_zones_are_taken_in_name_order() -> None:
    cfg = stack_config("dev")
    assert (
        pick_zone(["eu-west-3c", "eu-west-3a", "eu-west-3b"], 1, cfg.network, "eu-west-3")
        == "eu-west-3b"
    )
    with pytest.raises(ConfigError, match="gristmill:availabilityZoneCount must be at most 1"):
        pick_zone(["eu-west-3a"], 0, cfg.network, "eu-west-3")
