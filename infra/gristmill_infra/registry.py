"""Container registry: ECR repositories for the runtime base images, the per-step images and
their build cache, and the IAM role in-cluster image builds push with."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from gristmill_infra.config import RegistrySettings
from gristmill_infra.iam import irsa_role
from gristmill_infra.policies import PolicyDocument, ecr_lifecycle_policy, image_builder_policy

# The names the control service's Kubernetes backend uses under the registry URL
# (<registry>/gristmill-runtime/<family>, <registry>/gristmill-steps, <registry>/gristmill-cache).
RUNTIME_REPOSITORIES = ("gristmill-runtime/python", "gristmill-runtime/python-cuda")
STEP_REPOSITORY = "gristmill-steps"
CACHE_REPOSITORY = "gristmill-cache"
STEP_REPOSITORIES = (STEP_REPOSITORY, CACHE_REPOSITORY)
# Where the control service uploads build contexts in the data store; the builder may read
# nothing else.
BUILD_CONTEXT_PREFIX = ".gristmill/builds/"


def registry_url(repository_url: str, namespace: str) -> str:
    """`<account>.dkr.ecr.<region>.amazonaws.com/<namespace>`: the prefix under which the
    runtime images are found and step images are pushed."""
    host = repository_url.split("/", 1)[0]
    return f"{host}/{namespace}"


@dataclass(frozen=True)
class RegistryArgs:
    settings: RegistrySettings
    oidc_provider_arn: pulumi.Input[str]
    oidc_issuer_url: pulumi.Input[str]
    # Build contexts are uploaded to the data store.
    bucket_arn: pulumi.Input[str]
    # The service account image-build Jobs run as.
    builder_namespace: str
    builder_service_account: str
    # `protect`: Pulumi refuses to delete the repositories (and the images in use).
    protect: bool = False


def repository_lifecycle(short_name: str, settings: RegistrySettings) -> PolicyDocument:
    """Runtime and step images are referenced by tag for as long as a step uses them, so
    only their untagged leftovers expire; the build cache can always be rebuilt, so it is
    also capped by count."""
    keep = settings.keep_images if short_name == CACHE_REPOSITORY else None
    return ecr_lifecycle_policy(settings.untagged_days, keep_images=keep)


def tag_mutability(short_name: str) -> str:
    """Step images are content-addressed: a tag, once pushed, never names other content,
    and a build cannot overwrite another step's image. Runtime tags such as
    python:3.12-slim move to rebuilt images, and the cache tag is rewritten by every build."""
    return "IMMUTABLE" if short_name == STEP_REPOSITORY else "MUTABLE"


class Registry(pulumi.ComponentResource):
    url: pulumi.Output[str]
    repository_urls: dict[str, pulumi.Output[str]]
    builder_role_arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: RegistryArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gristmill:infra:Registry", name, None, opts)
        settings = args.settings

        self.repository_urls = {}
        arns: dict[str, pulumi.Output[str]] = {}
        for short_name in (*RUNTIME_REPOSITORIES, *STEP_REPOSITORIES):
            resource_name = f"{name}-{short_name.replace('/', '-')}"
            repository = aws.ecr.Repository(
                resource_name,
                name=f"{settings.namespace}/{short_name}",
                image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(
                    scan_on_push=True
                ),
                image_tag_mutability=tag_mutability(short_name),
                encryption_configurations=[
                    aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="AES256")
                ],
                force_delete=settings.force_delete,
                opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
            )
            aws.ecr.LifecyclePolicy(
                resource_name,
                repository=repository.name,
                policy=json.dumps(repository_lifecycle(short_name, settings)),
                opts=pulumi.ResourceOptions(parent=repository),
            )
            self.repository_urls[short_name] = repository.repository_url
            arns[short_name] = repository.arn

        builder_role = irsa_role(
            f"{name}-image-builder",
            oidc_provider_arn=args.oidc_provider_arn,
            oidc_issuer_url=args.oidc_issuer_url,
            namespace=args.builder_namespace,
            service_account=args.builder_service_account,
            parent=self,
        )
        aws.iam.RolePolicy(
            f"{name}-image-builder",
            role=builder_role.id,
            policy=pulumi.Output.all(
                [arns[n] for n in STEP_REPOSITORIES],
                [arns[n] for n in (*RUNTIME_REPOSITORIES, *STEP_REPOSITORIES)],
                args.bucket_arn,
            ).apply(
                lambda v: json.dumps(
                    image_builder_policy(v[0], v[1], v[2], context_prefix=BUILD_CONTEXT_PREFIX)
                )
            ),
            opts=pulumi.ResourceOptions(parent=builder_role),
        )

        self.url = self.repository_urls[STEP_REPOSITORIES[0]].apply(
            lambda url: registry_url(url, settings.namespace)
        )
        self.builder_role_arn = builder_role.arn
        self.register_outputs({"url": self.url, "builder_role_arn": self.builder_role_arn})
