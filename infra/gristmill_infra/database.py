"""The control service's PostgreSQL: RDS in the isolated database subnets, encrypted,
reachable only from the cluster's security group, with a generated password kept in
Secrets Manager."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from gristmill_infra.config import DatabaseSettings

DATABASE_NAME = "gristmill"
USERNAME = "gristmill"
PORT = 5432


def database_url(username: str, password: str, host: str, port: int, database: str) -> str:
    """The SQLAlchemy URL the control service reads from GRISTMILL_DATABASE_URL.

    RDS for PostgreSQL 15+ refuses unencrypted connections; `sslmode=require` says so on the
    client side too.
    """
    return (
        f"postgresql+psycopg://{quote(username, safe='')}:{quote(password, safe='')}"
        f"@{host}:{port}/{quote(database, safe='')}?sslmode=require"
    )


@dataclass(frozen=True)
class DatabaseArgs:
    settings: DatabaseSettings
    environment: str
    vpc_id: pulumi.Input[str]
    subnet_ids: Sequence[pulumi.Input[str]]
    # Only these security groups (the cluster's) may open connections.
    client_security_group_ids: Sequence[pulumi.Input[str]]
    # `protect`: Pulumi refuses to delete the instance.
    protect: bool = False
    log_retention_days: int = 30


# PostgreSQL's own log (slow queries, errors, connections) and the upgrade log, in CloudWatch.
LOG_EXPORTS = ["postgresql", "upgrade"]
# Seven days of Performance Insights history are included in the instance price.
PERFORMANCE_INSIGHTS_RETENTION_DAYS = 7


class Database(pulumi.ComponentResource):
    address: pulumi.Output[str]
    url: pulumi.Output[str]
    secret_arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: DatabaseArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gristmill:infra:Database", name, None, opts)
        settings = args.settings
        child = pulumi.ResourceOptions(parent=self)

        # Letters and digits only: the password goes into a URL and RDS refuses '/', '@',
        # '"' and spaces. 32 such characters still carry about 190 bits.
        password = random.RandomPassword(f"{name}-password", length=32, special=False, opts=child)

        subnet_group = aws.rds.SubnetGroup(
            f"{name}-subnets",
            subnet_ids=list(args.subnet_ids),
            description=f"Gristmill {args.environment} database subnets (no route out)",
            opts=child,
        )
        security_group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            vpc_id=args.vpc_id,
            description=f"Gristmill {args.environment} PostgreSQL: cluster only",
            ingress=[
                aws.ec2.SecurityGroupIngressArgs(
                    description="PostgreSQL from the EKS cluster",
                    protocol="tcp",
                    from_port=PORT,
                    to_port=PORT,
                    security_groups=list(args.client_security_group_ids),
                )
            ],
            egress=[],
            opts=child,
        )
        identifier = f"gristmill-{args.environment}"
        # Owned here so exported logs expire; RDS would create them without a retention.
        log_groups = [
            aws.cloudwatch.LogGroup(
                f"{name}-{log}-logs",
                name=f"/aws/rds/instance/{identifier}/{log}",
                retention_in_days=args.log_retention_days,
                opts=child,
            )
            for log in LOG_EXPORTS
        ]
        instance = aws.rds.Instance(
            f"{name}-postgres",
            identifier=identifier,
            engine="postgres",
            engine_version=settings.engine_version,
            instance_class=settings.instance_class,
            allocated_storage=settings.storage_gib,
            max_allocated_storage=settings.max_storage_gib,
            storage_type="gp3",
            storage_encrypted=True,
            db_name=DATABASE_NAME,
            username=USERNAME,
            password=password.result,
            port=PORT,
            db_subnet_group_name=subnet_group.name,
            vpc_security_group_ids=[security_group.id],
            publicly_accessible=False,
            multi_az=settings.multi_az,
            backup_retention_period=settings.backup_retention_days,
            copy_tags_to_snapshot=True,
            auto_minor_version_upgrade=True,
            deletion_protection=settings.deletion_protection,
            skip_final_snapshot=settings.skip_final_snapshot,
            final_snapshot_identifier=None
            if settings.skip_final_snapshot
            else f"{identifier}-final",
            # Automated backups outlive the instance (until their retention ends), so a
            # deleted database can still be restored to a point in time.
            delete_automated_backups=settings.skip_final_snapshot,
            enabled_cloudwatch_logs_exports=LOG_EXPORTS,
            performance_insights_enabled=settings.performance_insights,
            performance_insights_retention_period=PERFORMANCE_INSIGHTS_RETENTION_DAYS
            if settings.performance_insights
            else None,
            opts=pulumi.ResourceOptions(parent=self, depends_on=log_groups, protect=args.protect),
        )

        url = pulumi.Output.all(password.result, instance.address).apply(
            lambda v: database_url(USERNAME, v[0], v[1], PORT, DATABASE_NAME)
        )
        secret = aws.secretsmanager.Secret(
            f"{name}-credentials",
            name_prefix=f"gristmill/{args.environment}/database-",
            description=f"Gristmill {args.environment} PostgreSQL credentials",
            opts=child,
        )
        aws.secretsmanager.SecretVersion(
            f"{name}-credentials",
            secret_id=secret.id,
            secret_string=pulumi.Output.all(password.result, instance.address).apply(
                lambda v: json.dumps(
                    {
                        "engine": "postgres",
                        "host": v[1],
                        "port": PORT,
                        "dbname": DATABASE_NAME,
                        "username": USERNAME,
                        "password": v[0],
                    }
                )
            ),
            opts=pulumi.ResourceOptions(parent=secret),
        )

        self.address = instance.address
        self.url = pulumi.Output.secret(url)
        self.secret_arn = secret.arn
        self.register_outputs(
            {"address": self.address, "url": self.url, "secret_arn": self.secret_arn}
        )
