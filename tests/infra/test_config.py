from __future__ import annotations

import re

import pulumi
import pytest

from gristmill_infra.config import (
    ConfigError,
    EnvironmentConfig,
    known_keys,
    load_config,
    parse_config,
)
from tests.infra.helpers import REQUIRED, ROOT, stack_config


def parse(**values: str) -> EnvironmentConfig:
    return parse_config({**REQUIRED, **values}, environment="dev", region="eu-west-3")


def problems_of(
    values: dict[str, str], environment: str = "dev", region: str | None = "eu-west-3"
) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(values, environment=environment, region=region)
    return str(caught.value)


def test_defaults_with_only_the_required_keys() -> None:
    cfg = parse_config(REQUIRED, environment="dev", region="eu-west-3")

    assert cfg.environment_url == "https://ml.example.com"
    assert cfg.cluster.name == "gristmill-dev"
    assert cfg.cluster.kubernetes_version == "1.35"
    assert cfg.cluster.log_types == ("api", "audit", "authenticator")
    assert cfg.network.vpc_cidr == "10.0.0.0/16"
    assert cfg.network.availability_zone_count == 3
    assert cfg.network.nat_gateways == "perAz"
    assert cfg.cpu_pool.instance_types == ("m7i.xlarge",)
    assert (cfg.cpu_pool.min_nodes, cfg.cpu_pool.max_nodes) == (2, 6)
    assert cfg.gpu_pool is not None
    assert cfg.gpu_pool.instance_types == ("g5.xlarge",)
    assert (cfg.gpu_pool.min_nodes, cfg.gpu_pool.max_nodes) == (0, 2)
    assert cfg.database.multi_az is True
    assert cfg.database.deletion_protection is True
    assert cfg.database.skip_final_snapshot is False
    assert cfg.datastore.force_destroy is False
    assert cfg.datastore.cors_origins == ("https://ml.example.com",)
    assert cfg.registry.namespace == "gristmill/dev"
    assert cfg.platform.replicas == 2
    assert cfg.platform.namespace == "gristmill"
    assert cfg.platform.workers_namespace == "gristmill-workers"
    assert cfg.tags == {"gristmill:environment": "dev", "managed-by": "pulumi"}


@pytest.mark.parametrize("key", ["domain", "hostedZoneId", "platformImage"])
def test_each_required_key_is_named_when_missing(key: str) -> None:
    values = {k: v for k, v in REQUIRED.items() if k != key}
    message = problems_of(values)
    assert f"gristmill:{key} is required and must be" in message
    assert f"pulumi config set gristmill:{key}" in message


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("gpuInstanceTypes", "[]", "must be a non-empty list of EC2 instance types"),
        ("gpuInstanceTypes", '["m7i.xlarge"]', "must be a non-empty list of EC2 instance types"),
        ("gpuInstanceTypes", '["g5g.xlarge"]', "with NVIDIA GPUs on x86_64"),
        ("gpuInstanceTypes", '["g4ad.xlarge"]', "with NVIDIA GPUs on x86_64"),
        ("cpuInstanceTypes", "big machine", "must be a non-empty list of EC2 instance types"),
        ("cpuInstanceTypes", '["m7i.xlarge", 3]', "must be a non-empty list of EC2 instance types"),
        ("vpcCidr", "10.0.0.0/24", "must be a private IPv4 CIDR block from /16 to /20"),
        ("vpcCidr", "8.8.0.0/16", "must be a private IPv4 CIDR block from /16 to /20"),
        ("vpcCidr", "10.0.0.1/16", "must be a private IPv4 CIDR block"),
        ("availabilityZoneCount", "1", "must be an integer from 2 to 3"),
        ("availabilityZoneCount", "two", "must be an integer from 2 to 3"),
        ("availabilityZones", '["eu-west-3a"]', "empty (automatic) or a list of 2 or 3 zones"),
        ("availabilityZones", '["eu-west-3a", "eu-west-3a"]', "a list of distinct zones"),
        ("availabilityZones", '["us-east-1a", "us-east-1b"]', "zones of the stack's region"),
        ("natGateways", "none", "must be one of single, perAz"),
        ("kubernetesVersion", "1.3", "must be a Kubernetes minor version"),
        ("clusterName", "1cluster", "must be an EKS cluster name"),
        ("clusterLogTypes", '["api", "debug"]', "must be a list of EKS control-plane log types"),
        ("clusterLogRetentionDays", "8", "must be a CloudWatch retention period"),
        ("clusterEndpointPublicCidrs", '["10.0.0.300/24"]', "a list of IPv4 CIDR blocks"),
        ("gpuInstanceTypes", '["g9x.xlarge"]', "a GPU family Gristmill knows the accelerator"),
        ("gpuInstanceTypes", '["g5.xlarge", "g5.xlarge"]', "a list of distinct instance types"),
        ("kubernetesVersion", "1.29", "a version the EKS add-ons are pinned for"),
        ("buildsNamespace", "gristmill-workers", "a namespace of its own"),
        ("alertWebhookUrl", "http://hooks.example.com/x", "an https:// URL"),
        ("clusterAdminRoleArns", '["arn:aws:iam::123456789012:user/bob"]', "IAM role ARNs"),
        ("cpuCapacityType", "spot", "must be one of ON_DEMAND, SPOT"),
        ("gpuCapacityType", "cheap", "must be one of ON_DEMAND, SPOT"),
        ("cpuMinNodes", "0", "must be an integer from 1 to 100"),
        ("gpuMinNodes", "-1", "must be an integer from 0 to 100"),
        ("gpuMaxNodes", "0", "must be an integer from 1 to 100"),
        ("gpuDiskSizeGiB", "20", "must be an integer from 50 to 16384"),
        ("gpuEnabled", "yes", "must be true or false"),
        ("platformImage", "ghcr.io/gristmill/platform", "pinned to a tag or digest"),
        ("platformImage", "ghcr.io/gristmill/platform:latest", "other than latest"),
        ("domain", "localhost", "the environment's DNS name"),
        ("domain", "ml_example.com", "the environment's DNS name"),
        ("hostedZoneId", "example.com", "the ID of the Route 53 public hosted zone"),
        ("databaseInstanceClass", "t4g.micro", "must be an RDS instance class"),
        ("databaseEngineVersion", "latest", "must be a PostgreSQL major"),
        ("databaseBackupRetentionDays", "40", "must be an integer from 0 to 35"),
        ("databaseMultiAz", "1", "must be true or false"),
        (
            "datastoreCorsOrigins",
            '["ftp://files.example.com"]',
            "must be a list of browser origins",
        ),
        ("datastoreAbortIncompleteUploadDays", "0", "must be an integer from 1 to 365"),
        ("registryNamespace", "Gristmill/Dev", "must be an ECR repository prefix"),
        ("registryKeepImages", "0", "must be an integer from 1 to 10000"),
        ("prometheusRetention", "15 days", "must be a Prometheus retention"),
        ("prometheusStorageGiB", "5", "must be an integer from 10 to 16384"),
        ("platformReplicas", "1", "must be an integer from 2 to 20"),
        ("elasticPoolSize", "-1", "must be an integer from 0 to 50"),
        ("elasticPoolSize", "many", "must be an integer from 0 to 50"),
        ("elasticPoolIdleSeconds", "5", "must be an integer from 30 to 86400"),
        ("platformNamespace", "kube-system", "must be a namespace of its own"),
        ("platformNamespace", "Gristmill", "must be a Kubernetes namespace name"),
        ("workersNamespace", "default", "must be a namespace of its own"),
        ("workersNamespace", "gristmill", "different from gristmill:platformNamespace"),
        ("platformCpu", "half", "must be a CPU quantity"),
        ("platformMemory", "1GB", "must be a memory quantity"),
        ("tags", '{"aws:owner": "me"}', "must be a JSON object of string tags"),
        ("tags", "team=ml", "must be a JSON object of string tags"),
        ("tags", '{"team": 3}', "must be a JSON object of string tags"),
    ],
)
def test_invalid_value_names_the_key_and_what_is_expected(
    key: str, value: str, expected: str
) -> None:
    message = problems_of({**REQUIRED, key: value})
    assert f"gristmill:{key} must be" in message or f"gristmill:{key} is" in message
    assert expected in message
    assert repr(value) in message or key == "availabilityZones"


def test_the_issue_example_message_for_gpu_instance_types() -> None:
    message = problems_of({**REQUIRED, "gpuInstanceTypes": "[]"})
    assert "gristmill:gpuInstanceTypes must be a non-empty list of EC2 instance types" in message


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            {"cpuMinNodes": "4", "cpuMaxNodes": "3"},
            "gristmill:cpuMaxNodes must be at least gristmill:cpuMinNodes (4)",
        ),
        (
            {"gpuMinNodes": "3", "gpuMaxNodes": "2"},
            "gristmill:gpuMaxNodes must be at least gristmill:gpuMinNodes (3)",
        ),
        (
            {"databaseStorageGiB": "200", "databaseMaxStorageGiB": "100"},
            "gristmill:databaseMaxStorageGiB must be at least gristmill:databaseStorageGiB (200)",
        ),
    ],
)
def test_bounds_must_be_ordered(values: dict[str, str], expected: str) -> None:
    assert expected in problems_of({**REQUIRED, **values})


def test_a_misspelt_key_is_reported_with_a_suggestion() -> None:
    message = problems_of({**REQUIRED, "gpuInstanceType": '["g5.xlarge"]'})
    assert (
        "gristmill:gpuInstanceType is not a Gristmill setting; "
        "did you mean gristmill:gpuInstanceTypes?" in message
    )


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {
                "hostedZoneId": "Z0123456789ABC",
                "platformImage": "x:1",
                "cpuMinNodes": "zero",
                "clusterEndpointPublicCidrs": "[]",
            },
            environment="dev",
            region="eu-west-3",
        )
    problems = caught.value.problems
    assert len(problems) == 2
    assert problems[0].startswith("gristmill:domain is required")
    assert problems[1].startswith("gristmill:cpuMinNodes must be an integer from 1 to 100")


def test_region_and_stack_name_are_checked() -> None:
    assert "aws:region is required" in problems_of(REQUIRED, region=None)
    assert "aws:region is required and must be an AWS region" in problems_of(
        REQUIRED, region="paris"
    )
    assert "the stack name must be 1-20 lowercase letters" in problems_of(
        REQUIRED, environment="Prod_EU"
    )


def test_lists_may_be_json_or_comma_separated() -> None:
    from_json = parse(gpuInstanceTypes='["g5.xlarge", "g6.xlarge"]')
    from_cli = parse(gpuInstanceTypes="g5.xlarge, g6.xlarge")
    assert from_json.gpu_pool is not None and from_cli.gpu_pool is not None
    assert from_json.gpu_pool.instance_types == ("g5.xlarge", "g6.xlarge")
    assert from_cli.gpu_pool.instance_types == ("g5.xlarge", "g6.xlarge")


def test_gpu_pool_can_be_switched_off() -> None:
    assert parse(gpuEnabled="false").gpu_pool is None
    assert parse(gpuEnabled="TRUE").gpu_pool is not None


def test_user_tags_are_added_to_the_environment_tags() -> None:
    cfg = parse(tags='{"team": "ml-platform"}')
    assert cfg.tags == {
        "gristmill:environment": "dev",
        "managed-by": "pulumi",
        "team": "ml-platform",
    }


def test_example_stack_files_are_valid() -> None:
    dev = stack_config("dev")
    prod = stack_config("prod")
    assert dev.network.nat_gateways == "single"
    assert dev.gpu_pool is not None and dev.gpu_pool.capacity_type == "SPOT"
    assert dev.datastore.force_destroy is True
    assert prod.network.availability_zone_count == 3
    assert prod.database.multi_az is True
    assert prod.cluster.endpoint_public_cidrs == ("203.0.113.0/24",)


def test_load_config_reads_the_stack_config() -> None:
    pulumi.runtime.set_all_config(
        {
            "aws:region": "eu-west-3",
            "gristmill:domain": "dev.ml.example.com",
            "gristmill:hostedZoneId": "Z0123456789ABC",
            "gristmill:platformImage": "ghcr.io/gristmill/platform:0.1.0",
            "gristmill:gpuInstanceTypes": '["g6.xlarge"]',
            "gristmill:gpuMaxNodes": "3",
            "gristmill:clusterEndpointPublicCidrs": '["203.0.113.0/24"]',
        }
    )
    cfg = load_config()
    assert cfg.environment == "dev"
    assert cfg.region == "eu-west-3"
    assert cfg.gpu_pool is not None
    assert cfg.gpu_pool.instance_types == ("g6.xlarge",)
    assert cfg.gpu_pool.max_nodes == 3


def test_load_config_reports_unknown_keys_of_the_stack() -> None:
    pulumi.runtime.set_all_config(
        {
            "aws:region": "eu-west-3",
            **{f"gristmill:{k}": v for k, v in REQUIRED.items()},
            "gristmill:gpuMaxNode": "3",
        }
    )
    with pytest.raises(ConfigError, match=re.escape("did you mean gristmill:gpuMaxNodes?")):
        load_config()


def test_docs_describe_every_setting() -> None:
    docs = (ROOT / "docs" / "environments-on-aws.md").read_text()
    missing = sorted(key for key in known_keys() if f"`gristmill:{key}`" not in docs)
    assert missing == []
    assert len(known_keys()) >= 40


def test_the_api_endpoint_has_no_open_default() -> None:
    values = {k: v for k, v in REQUIRED.items() if k != "clusterEndpointPublicCidrs"}
    message = problems_of(values)
    assert "gristmill:clusterEndpointPublicCidrs is required" in message
    assert "or [] for a private endpoint" in message
    assert parse(clusterEndpointPublicCidrs="[]").cluster.endpoint_public_cidrs == ()
    assert parse().cluster.endpoint_public_cidrs == ("203.0.113.0/24",)


def test_performance_insights_is_refused_where_rds_has_none() -> None:
    message = problems_of({**REQUIRED, "databaseInstanceClass": "db.t4g.micro"})
    assert "gristmill:databasePerformanceInsights must be false with db.t4g.micro" in message
    cfg = parse(databaseInstanceClass="db.t4g.micro", databasePerformanceInsights="false")
    assert cfg.database.performance_insights is False
    assert parse().database.performance_insights is True


def test_stateful_resources_are_protected_unless_a_stack_opts_out() -> None:
    assert parse().protect_data is True
    assert stack_config("prod").protect_data is True
    assert stack_config("dev").protect_data is False
