"""The environment's front door: Traefik behind a Network Load Balancer that terminates TLS
with an ACM certificate, and the DNS record that gives the environment its URL.

ingress-nginx, the usual choice, stopped receiving fixes in March 2026; Traefik is
maintained and reads the same Ingress objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from gristmill_infra import charts
from gristmill_infra.labels import CPU_POOL, POOL_LABEL

NAMESPACE = "traefik"
# Named like the chart, so the chart names its Service "traefik" too (read back below).
RELEASE = "traefik"
INGRESS_CLASS = "traefik"
# The in-cluster AWS cloud provider reads these on a LoadBalancer Service.
_LB = "service.beta.kubernetes.io/aws-load-balancer-"
TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"


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
            "websecure": {"tls": {"enabled": False}},
        },
        "service": {
            "type": "LoadBalancer",
            "annotations": {
                f"{_LB}type": "nlb",
                f"{_LB}ssl-cert": certificate_arn,
                f"{_LB}ssl-ports": "443",
                f"{_LB}backend-protocol": "tcp",
                f"{_LB}ssl-negotiation-policy": TLS_POLICY,
                f"{_LB}cross-zone-load-balancing-enabled": "true",
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
            opts=child,
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
