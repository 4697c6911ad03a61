"""The environment's front door: Traefik behind a Network Load Balancer that terminates TLS
with an ACM certificate, and the DNS record that gives the environment its URL.

The AWS Load Balancer Controller makes the load balancer (the in-tree cloud provider's
NLB support gets no new features and cannot target pod IPs); it learns the VPC and region
from its values, not from instance metadata, which pods cannot reach (nodepools.py).

ingress-nginx, the usual choice, stopped receiving fixes in March 2026; Traefik is
maintained and reads the same Ingress objects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from gristmill_infra import charts
from gristmill_infra.iam import irsa_role
from gristmill_infra.labels import CPU_POOL, POOL_LABEL
from gristmill_infra.policies import (
    LOAD_BALANCER_CONTROLLER_SERVICE_ACCOUNT,
    load_balancer_controller_policy,
)

NAMESPACE = "traefik"
# Named like the chart, so the chart names its Service "traefik" too (read back below).
RELEASE = "traefik"
INGRESS_CLASS = "traefik"
# The AWS Load Balancer Controller reads these on a LoadBalancer Service of its class.
_LB = "service.beta.kubernetes.io/aws-load-balancer-"
LOAD_BALANCER_CLASS = "service.k8s.aws/nlb"
TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
LBC_NAMESPACE, LBC_SERVICE_ACCOUNT = LOAD_BALANCER_CONTROLLER_SERVICE_ACCOUNT


def load_balancer_controller_values(
    cluster_name: str, region: str, vpc_id: pulumi.Input[str], role_arn: pulumi.Input[str]
) -> dict[str, Any]:
    return {
        "clusterName": cluster_name,
        # Given here: the controller would otherwise ask the instance metadata service,
        # out of reach of pods with a hop limit of 1.
        "region": region,
        "vpcId": vpc_id,
        "replicaCount": 2,
        "serviceAccount": {
            "create": True,
            "name": LBC_SERVICE_ACCOUNT,
            "annotations": {"eks.amazonaws.com/role-arn": role_arn},
        },
        # Only Services that ask for its class (Traefik's): it does not take over others.
        "enableServiceMutatorWebhook": False,
        "nodeSelector": {POOL_LABEL: CPU_POOL},
        "resources": {
            "requests": {"cpu": "50m", "memory": "128Mi"},
            "limits": {"memory": "256Mi"},
        },
    }


def traefik_values(certificate_arn: pulumi.Input[str]) -> dict[str, Any]:
    return {
        "deployment": {"replicas": 2},
        "podDisruptionBudget": {"enabled": True, "minAvailable": 1},
        "ingressClass": {"enabled": True, "isDefaultClass": True, "name": INGRESS_CLASS},
        "providers": {
            # Copies the load balancer's hostname into each Ingress status.
            "kubernetesIngress": {"enabled": True, "publishedService": {"enabled": True}},
        },
        "ports": {
            # HTTPS only: nothing listens on port 80, so no request travels in clear text.
            "web": {"expose": {"default": False}},
            # TLS ends at the load balancer, which forwards plain HTTP inside the VPC.
            # Chart 39 moved the entry point's TLS under `http` and refuses unknown keys.
            "websecure": {"http": {"tls": {"enabled": False}}},
        },
        "service": {
            "type": "LoadBalancer",
            "spec": {"loadBalancerClass": LOAD_BALANCER_CLASS},
            "annotations": {
                f"{_LB}type": "external",
                f"{_LB}scheme": "internet-facing",
                # Straight to Traefik's pods, not through a node port.
                f"{_LB}nlb-target-type": "ip",
                f"{_LB}ssl-cert": certificate_arn,
                f"{_LB}ssl-ports": "443",
                f"{_LB}backend-protocol": "tcp",
                f"{_LB}ssl-negotiation-policy": TLS_POLICY,
                f"{_LB}attributes": "load_balancing.cross_zone.enabled=true",
            },
        },
        "nodeSelector": {POOL_LABEL: CPU_POOL},
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "traefik"}},
            }
        ],
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
        "logs": {"access": {"enabled": True}},
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
    }


@dataclass(frozen=True)
class IngressArgs:
    domain: str
    hosted_zone_id: str
    cluster_name: str
    region: str
    vpc_id: pulumi.Input[str]
    oidc_provider_arn: pulumi.Input[str]
    oidc_issuer_url: pulumi.Input[str]


class Ingress(pulumi.ComponentResource):
    url: pulumi.Output[str]
    # Resolves once Traefik is installed, so Ingress objects that use it wait for it.
    ingress_class: pulumi.Output[str]
    load_balancer_hostname: pulumi.Output[str]

    def __init__(
        self, name: str, args: IngressArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gristmill:infra:Ingress", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        certificate = aws.acm.Certificate(
            f"{name}-certificate",
            domain_name=args.domain,
            validation_method="DNS",
            opts=child,
        )
        validation_option = certificate.domain_validation_options[0]
        validation_record = aws.route53.Record(
            f"{name}-certificate-validation",
            zone_id=args.hosted_zone_id,
            name=validation_option.resource_record_name,
            type=validation_option.resource_record_type,
            records=[validation_option.resource_record_value],
            ttl=300,
            allow_overwrite=True,
            opts=child,
        )
        validation = aws.acm.CertificateValidation(
            f"{name}-certificate",
            certificate_arn=certificate.arn,
            validation_record_fqdns=[validation_record.fqdn],
            opts=child,
        )

        controller_role = irsa_role(
            f"{name}-load-balancer-controller",
            oidc_provider_arn=args.oidc_provider_arn,
            oidc_issuer_url=args.oidc_issuer_url,
            namespace=LBC_NAMESPACE,
            service_account=LBC_SERVICE_ACCOUNT,
            parent=self,
        )
        controller_policy = aws.iam.RolePolicy(
            f"{name}-load-balancer-controller",
            role=controller_role.id,
            policy=json.dumps(load_balancer_controller_policy()),
            opts=pulumi.ResourceOptions(parent=controller_role),
        )
        controller = k8s.helm.v3.Release(
            f"{name}-load-balancer-controller",
            name="aws-load-balancer-controller",
            chart=charts.AWS_LOAD_BALANCER_CONTROLLER.name,
            version=charts.AWS_LOAD_BALANCER_CONTROLLER.version,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(
                repo=charts.AWS_LOAD_BALANCER_CONTROLLER.repository
            ),
            namespace=LBC_NAMESPACE,
            values=load_balancer_controller_values(
                args.cluster_name, args.region, args.vpc_id, controller_role.arn
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[controller_policy]),
        )

        release = k8s.helm.v3.Release(
            f"{name}-traefik",
            name=RELEASE,
            chart=charts.TRAEFIK.name,
            version=charts.TRAEFIK.version,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=charts.TRAEFIK.repository),
            namespace=NAMESPACE,
            create_namespace=True,
            # The load balancer's listener cannot use a certificate that is not issued yet.
            values=traefik_values(validation.certificate_arn),
            # The controller must be running to give Traefik's Service its load balancer.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[controller]),
        )
        service = k8s.core.v1.Service.get(
            f"{name}-traefik-service",
            pulumi.Output.concat(release.status.namespace, "/", RELEASE),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[release]),
        )
        hostname: pulumi.Output[str] = service.status.load_balancer.ingress[0].hostname

        # A CNAME, so the domain must be below the zone apex (ml.example.com in example.com).
        aws.route53.Record(
            f"{name}-dns",
            zone_id=args.hosted_zone_id,
            name=args.domain,
            type="CNAME",
            records=[hostname],
            ttl=300,
            opts=child,
        )

        self.url = pulumi.Output.from_input(f"https://{args.domain}")
        self.ingress_class = release.status.name.apply(lambda _: INGRESS_CLASS)
        self.load_balancer_hostname = hostname
        self.register_outputs({"url": self.url, "load_balancer_hostname": hostname})
