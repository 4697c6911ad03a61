from __future__ import annotations

import json

from gristmill_infra.database import Database, DatabaseArgs, database_url
from tests.infra.helpers import run_pulumi, stack_config
from tests.infra.mocks import GristmillMocks, is_secret, reveal


def build(**overrides: str) -> dict[str, object]:
    cfg = stack_config("dev", **overrides)

    def program() -> dict[str, object]:
        import pulumi

        database = Database(
            "dev-database",
            DatabaseArgs(
                settings=cfg.database,
                environment="dev",
                vpc_id="vpc-1",
                subnet_ids=["subnet-db-a", "subnet-db-b"],
                client_security_group_ids=["sg-0cluster"],
            ),
        )
        return {
            "url": database.url,
            "url_is_secret": pulumi.Output.from_input(database.url.is_secret()),
        }

    result: dict[str, object] = run_pulumi(program)
    return result


def test_database_is_private_and_encrypted(mocks: GristmillMocks) -> None:
    build()
    instance = mocks.one("aws:rds/instance:Instance").inputs
    assert instance["engine"] == "postgres"
    assert instance["storageEncrypted"] is True
    assert instance["publiclyAccessible"] is False
    subnets = mocks.one("aws:rds/subnetGroup:SubnetGroup").inputs
    assert subnets["subnetIds"] == ["subnet-db-a", "subnet-db-b"]


def test_only_the_cluster_can_connect(mocks: GristmillMocks) -> None:
    build()
    group = mocks.one("aws:ec2/securityGroup:SecurityGroup").inputs
    (rule,) = group["ingress"]
    assert rule["securityGroups"] == ["sg-0cluster"]
    assert (rule["fromPort"], rule["toPort"], rule["protocol"]) == (5432, 5432, "tcp")
    assert not rule.get("cidrBlocks")
    assert group["egress"] == []


def test_dev_settings_reach_rds(mocks: GristmillMocks) -> None:
    build()
    instance = mocks.one("aws:rds/instance:Instance").inputs
    assert instance["instanceClass"] == "db.t4g.micro"
    assert instance["multiAz"] is False
    assert instance["deletionProtection"] is False
    assert instance["skipFinalSnapshot"] is True


def test_protected_settings_keep_a_final_snapshot(mocks: GristmillMocks) -> None:
    build(
        databaseDeletionProtection="true", databaseSkipFinalSnapshot="false", databaseMultiAz="true"
    )
    instance = mocks.one("aws:rds/instance:Instance").inputs
    assert instance["deletionProtection"] is True
    assert instance["multiAz"] is True
    assert instance["finalSnapshotIdentifier"] == "gristmill-dev-final"


def test_password_is_generated_and_kept_in_secrets_manager(mocks: GristmillMocks) -> None:
    result = build()
    password = mocks.one("random:index/randomPassword:RandomPassword")
    assert password.inputs["length"] == 32
    assert password.inputs["special"] is False
    instance = mocks.one("aws:rds/instance:Instance").inputs
    assert is_secret(instance["password"])
    assert reveal(instance["password"]) == password.state["result"]
    secret_string = mocks.one("aws:secretsmanager/secretVersion:SecretVersion").inputs[
        "secretString"
    ]
    assert is_secret(secret_string)
    stored = json.loads(reveal(secret_string))
    assert stored["password"] == password.state["result"]
    assert stored["host"] == "gristmill-dev.cexample.eu-west-3.rds.amazonaws.com"
    assert result["url_is_secret"] is True
    assert result["url"] == database_url(
        "gristmill", password.state["result"], stored["host"], 5432, "gristmill"
    )


def test_database_url_escapes_credentials() -> None:
    assert database_url("app", "p@ss/word", "db.internal", 5432, "gristmill") == (
        "postgresql+psycopg://app:p%40ss%2Fword@db.internal:5432/gristmill?sslmode=require"
    )


def test_performance_insights_and_logs_with_a_bounded_retention(mocks: GristmillMocks) -> None:
    build(databaseInstanceClass="db.t4g.medium", databasePerformanceInsights="true")
    instance = mocks.one("aws:rds/instance:Instance").inputs
    assert instance["performanceInsightsEnabled"] is True
    assert instance["performanceInsightsRetentionPeriod"] == 7
    assert instance["enabledCloudwatchLogsExports"] == ["postgresql", "upgrade"]
    groups = sorted(
        r.inputs["name"] for r in mocks.of_type("aws:cloudwatch/logGroup:LogGroup")
    )
    assert groups == [
        "/aws/rds/instance/gristmill-dev/postgresql",
        "/aws/rds/instance/gristmill-dev/upgrade",
    ]
