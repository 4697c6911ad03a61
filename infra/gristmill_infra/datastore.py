"""The environment's data store: one private, encrypted, versioned S3 bucket, and the IAM
role (for the control service's Kubernetes service account) that can use only this bucket."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from gristmill_infra.config import DatastoreSettings
from gristmill_infra.iam import irsa_role
from gristmill_infra.policies import bucket_access_policy, deny_insecure_transport_policy


def lifecycle_rules(
    settings: DatastoreSettings,
) -> list[aws.s3.BucketLifecycleConfigurationRuleArgs]:
    return [
        # Interrupted presigned multipart uploads leave parts that are billed but invisible.
        aws.s3.BucketLifecycleConfigurationRuleArgs(
            id="abort-incomplete-multipart-uploads",
            status="Enabled",
            filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
            abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                days_after_initiation=settings.abort_incomplete_upload_days
            ),
        ),
        # Versioning protects against overwrites and deletes; old versions still cost, so
        # they are kept for a bounded time.
        aws.s3.BucketLifecycleConfigurationRuleArgs(
            id="expire-noncurrent-versions",
            status="Enabled",
            filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
            noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                noncurrent_days=settings.noncurrent_version_days
            ),
            expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(
                expired_object_delete_marker=True
            ),
        ),
    ]


def cors_rules(origins: Sequence[str]) -> list[aws.s3.BucketCorsConfigurationCorsRuleArgs]:
    """Browsers on the environment's pages upload and download with presigned URLs; ETag is
    exposed because multipart uploads must send every part's ETag back to complete."""
    if not origins:
        return []
    return [
        aws.s3.BucketCorsConfigurationCorsRuleArgs(
            allowed_methods=["GET", "HEAD", "PUT", "POST"],
            allowed_origins=list(origins),
            allowed_headers=["*"],
            expose_headers=["ETag"],
            max_age_seconds=3000,
        )
    ]


@dataclass(frozen=True)
class DataStoreArgs:
    settings: DatastoreSettings
    environment: str
    oidc_provider_arn: pulumi.Input[str]
    oidc_issuer_url: pulumi.Input[str]
    # The control service's service account, the only one that may use the bucket.
    namespace: str
    service_account: str
    # `protect`: Pulumi refuses to delete the bucket.
    protect: bool = False


class DataStore(pulumi.ComponentResource):
    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]
    control_role_arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: DataStoreArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gristmill:infra:DataStore", name, None, opts)
        settings = args.settings

        bucket = aws.s3.Bucket(
            f"{name}-bucket",
            # S3 caps prefixes at 37 characters; the stack name is at most 20.
            bucket_prefix=f"gristmill-{args.environment}-data-",
            # False by default so `pulumi destroy` cannot erase data; dev stacks opt in.
            force_destroy=settings.force_destroy,
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
        )
        bucket_child = pulumi.ResourceOptions(parent=bucket)
        ownership = aws.s3.BucketOwnershipControls(
            f"{name}-ownership",
            bucket=bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=bucket_child,
        )
        public_access = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=bucket_child,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=bucket.id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                        sse_algorithm="AES256"
                    ),
                    bucket_key_enabled=True,
                )
            ],
            opts=bucket_child,
        )
        versioning = aws.s3.BucketVersioning(
            f"{name}-versioning",
            bucket=bucket.id,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(
                status="Enabled"
            ),
            opts=bucket_child,
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            bucket=bucket.id,
            rules=lifecycle_rules(settings),
            # Noncurrent-version rules need versioning switched on first.
            opts=pulumi.ResourceOptions(parent=bucket, depends_on=[versioning]),
        )
        rules = cors_rules(settings.cors_origins)
        if rules:
            aws.s3.BucketCorsConfiguration(
                f"{name}-cors", bucket=bucket.id, cors_rules=rules, opts=bucket_child
            )
        aws.s3.BucketPolicy(
            f"{name}-tls-only",
            bucket=bucket.id,
            policy=bucket.arn.apply(lambda arn: json.dumps(deny_insecure_transport_policy(arn))),
            opts=pulumi.ResourceOptions(parent=bucket, depends_on=[public_access, ownership]),
        )

        control_role = irsa_role(
            f"{name}-control-service",
            oidc_provider_arn=args.oidc_provider_arn,
            oidc_issuer_url=args.oidc_issuer_url,
            namespace=args.namespace,
            service_account=args.service_account,
            parent=self,
        )
        aws.iam.RolePolicy(
            f"{name}-control-service",
            role=control_role.id,
            policy=bucket.arn.apply(lambda arn: json.dumps(bucket_access_policy(arn))),
            opts=pulumi.ResourceOptions(parent=control_role),
        )

        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self.control_role_arn = control_role.arn
        self.register_outputs(
            {
                "bucket_name": self.bucket_name,
                "bucket_arn": self.bucket_arn,
                "control_role_arn": self.control_role_arn,
            }
        )
