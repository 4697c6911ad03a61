"""Wires the components of one environment together; called once by `infra/__main__.py`."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from gristmill_infra.cluster import Cluster, ClusterArgs
from gristmill_infra.cluster_addons import ClusterAddons, ClusterAddonsArgs
from gristmill_infra.config import ConfigError, EnvironmentConfig, NetworkSettings
from gristmill_infra.database import Database, DatabaseArgs
from gristmill_infra.datastore import DataStore, DataStoreArgs
from gristmill_infra.ingress import Ingress, IngressArgs
from gristmill_infra.monitoring import (
    ControlServiceMonitoring,
    ControlServiceMonitoringArgs,
    Monitoring,
    MonitoringArgs,
    control_metrics_settings,
)
from gristmill_infra.network import Network, NetworkArgs
from gristmill_infra.network_policies import NetworkPolicies, NetworkPoliciesArgs
from gristmill_infra.nodepools import NodePools, NodePoolsArgs
from gristmill_infra.platform_service import (
    BUILDER_SERVICE_ACCOUNT,
    SERVICE_ACCOUNT,
    PlatformService,
    PlatformServiceArgs,
    control_labels,
    control_settings,
)
from gristmill_infra.registry import Registry, RegistryArgs


@dataclass(frozen=True)
class EnvironmentOutputs:
    """What a data scientist and the SDK need, plus the operator's way into the cluster."""

    environment_url: pulumi.Output[str]
    datastore_bucket: pulumi.Output[str]
    registry_url: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    cluster_name: pulumi.Output[str]

    def as_dict(self) -> dict[str, pulumi.Output[str]]:
        return {
            "environment_url": self.environment_url,
            "datastore_bucket": self.datastore_bucket,
            "registry_url": self.registry_url,
            "kubeconfig": self.kubeconfig,
            "cluster_name": self.cluster_name,
        }


def pick_zone(available: list[str], index: int, settings: NetworkSettings, region: str) -> str:
    """The index-th zone of the region in name order, or a config error naming the key."""
    zones = sorted(available)
    if len(zones) < settings.availability_zone_count:
        raise ConfigError(
            [
                f"gristmill:availabilityZoneCount must be at most {len(zones)}, the number of "
                f"availability zones {region} offers without opt-in "
                f"(got {settings.availability_zone_count})"
            ]
        )
    return zones[index]


def _zones(cfg: EnvironmentConfig, provider: aws.Provider) -> list[pulumi.Input[str]]:
    network = cfg.network
    if network.availability_zones:
        return list(network.availability_zones)
    available = aws.get_availability_zones_output(
        state="available",
        # Local Zones and Wavelength Zones cannot host EKS nodes.
        filters=[
            aws.GetAvailabilityZonesFilterArgs(name="opt-in-status", values=["opt-in-not-required"])
        ],
        opts=pulumi.InvokeOutputOptions(provider=provider),
    ).names

    def zone(index: int) -> pulumi.Output[str]:
        return available.apply(lambda names: pick_zone(names, index, network, cfg.region))

    return [zone(i) for i in range(network.availability_zone_count)]


def build_environment(cfg: EnvironmentConfig) -> EnvironmentOutputs:
    env = cfg.environment
    aws_provider = aws.Provider(
        f"{env}-aws",
        region=cfg.region,
        # Every AWS resource carries the environment's tags, for cost allocation.
        default_tags=aws.ProviderDefaultTagsArgs(tags=dict(cfg.tags)),
    )
    on_aws = pulumi.ResourceOptions(providers=[aws_provider])
    partition = aws.get_partition_output(
        opts=pulumi.InvokeOutputOptions(provider=aws_provider)
    ).partition

    network = Network(
        f"{env}-network",
        NetworkArgs(
            environment=env,
            cluster_name=cfg.cluster.name,
            vpc_cidr=cfg.network.vpc_cidr,
            zones=_zones(cfg, aws_provider),
            nat_gateways=cfg.network.nat_gateways,
            region=cfg.region,
        ),
        on_aws,
    )
    cluster = Cluster(
        f"{env}-cluster",
        ClusterArgs(
            settings=cfg.cluster,
            environment=env,
            region=cfg.region,
            partition=partition,
            subnet_ids=network.private_subnet_ids,
        ),
        on_aws,
    )
    pools = NodePools(
        f"{env}-nodes",
        NodePoolsArgs(
            cluster_name=cluster.name,
            kubernetes_version=cluster.version,
            subnet_ids=network.private_subnet_ids,
            partition=partition,
            cpu=cfg.cpu_pool,
            gpu=cfg.gpu_pool,
        ),
        # Nodes only turn Ready once the VPC CNI (with its IAM role) runs on them.
        pulumi.ResourceOptions(providers=[aws_provider], depends_on=[cluster.vpc_cni]),
    )
    # Everything Kubernetes waits for CPU nodes: charts and the control service need a place
    # to run before Pulumi can see them ready.
    kubernetes = k8s.Provider(
        f"{env}-kubernetes",
        kubeconfig=cluster.kubeconfig,
        opts=pulumi.ResourceOptions(depends_on=[pools.cpu]),
    )
    on_kubernetes = pulumi.ResourceOptions(providers=[kubernetes])
    on_both = pulumi.ResourceOptions(providers=[aws_provider, kubernetes])

    addons = ClusterAddons(
        f"{env}-addons",
        ClusterAddonsArgs(
            cluster_name=cfg.cluster.name,
            kubernetes_version=cfg.cluster.kubernetes_version,
            region=cfg.region,
            partition=partition,
            oidc_provider_arn=cluster.oidc_provider_arn,
            oidc_issuer_url=cluster.oidc_issuer_url,
            gpu_enabled=cfg.gpu_pool is not None,
            nodes=pools.cpu,
        ),
        on_both,
    )
    datastore = DataStore(
        f"{env}-datastore",
        DataStoreArgs(
            settings=cfg.datastore,
            environment=env,
            oidc_provider_arn=cluster.oidc_provider_arn,
            oidc_issuer_url=cluster.oidc_issuer_url,
            namespace=cfg.platform.namespace,
            service_account=SERVICE_ACCOUNT,
            protect=cfg.protect_data,
        ),
        on_aws,
    )
    registry = Registry(
        f"{env}-registry",
        RegistryArgs(
            settings=cfg.registry,
            oidc_provider_arn=cluster.oidc_provider_arn,
            oidc_issuer_url=cluster.oidc_issuer_url,
            bucket_arn=datastore.bucket_arn,
            builder_namespace=cfg.platform.builds_namespace,
            builder_service_account=BUILDER_SERVICE_ACCOUNT,
            protect=cfg.protect_data,
        ),
        on_aws,
    )
    database = Database(
        f"{env}-database",
        DatabaseArgs(
            settings=cfg.database,
            environment=env,
            vpc_id=network.vpc_id,
            subnet_ids=network.database_subnet_ids,
            client_security_group_ids=[cluster.security_group_id],
            protect=cfg.protect_data,
            log_retention_days=cfg.cluster.log_retention_days,
        ),
        on_aws,
    )
    ingress = Ingress(
        f"{env}-ingress",
        IngressArgs(
            domain=cfg.ingress.domain,
            hosted_zone_id=cfg.ingress.hosted_zone_id,
            cluster_name=cfg.cluster.name,
            region=cfg.region,
            vpc_id=network.vpc_id,
            oidc_provider_arn=cluster.oidc_provider_arn,
            oidc_issuer_url=cluster.oidc_issuer_url,
        ),
        on_both,
    )
    monitoring = Monitoring(
        f"{env}-monitoring",
        MonitoringArgs(
            settings=cfg.monitoring,
            storage_class=addons.storage_class_name,
            gpu_enabled=cfg.gpu_pool is not None,
        ),
        on_kubernetes,
    )
    platform = PlatformService(
        f"{env}-platform",
        PlatformServiceArgs(
            settings=cfg.platform,
            domain=cfg.ingress.domain,
            ingress_class=ingress.ingress_class,
            control_role_arn=datastore.control_role_arn,
            builder_role_arn=registry.builder_role_arn,
            database_url=database.url,
            service_settings={
                **control_settings(
                    public_url=ingress.url,
                    workers_namespace=cfg.platform.workers_namespace,
                    registry=registry.url,
                    bucket=datastore.bucket_name,
                    region=cfg.region,
                    prometheus_url=monitoring.prometheus_url,
                    control_namespace=cfg.platform.namespace,
                    builds_namespace=cfg.platform.builds_namespace,
                    elastic_pool_size=cfg.platform.elastic_pool_size,
                    elastic_pool_idle_s=cfg.platform.elastic_pool_idle_s,
                ),
                **control_metrics_settings(),
            },
        ),
        on_kubernetes,
    )
    ControlServiceMonitoring(
        f"{env}-control-monitoring",
        ControlServiceMonitoringArgs(control_namespace=cfg.platform.namespace,
                                     control_labels=control_labels()),
        pulumi.ResourceOptions.merge(
            on_kubernetes, pulumi.ResourceOptions(depends_on=[platform, monitoring])),
    )
    # Step pods and image builds both run users' code: the same walls around both.
    for suffix, namespace in (
        ("network-policies", platform.workers_namespace),
        ("builds-network-policies", platform.builds_namespace),
    ):
        NetworkPolicies(
            f"{env}-{suffix}",
            NetworkPoliciesArgs(
                namespace=namespace,
                control_namespace=cfg.platform.namespace,
                database_cidrs=network.plan.database,
            ),
            on_kubernetes,
        )

    return EnvironmentOutputs(
        environment_url=ingress.url,
        datastore_bucket=datastore.bucket_name,
        registry_url=registry.url,
        kubeconfig=cluster.kubeconfig,
        cluster_name=cluster.name,
    )
