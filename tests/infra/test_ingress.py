from __future__ import annotations

import json

from gristmill_infra.ingress import TLS_POLICY, Ingress, IngressArgs, traefik_values
from tests.infra.helpers import run_pulumi
from tests.infra.mocks import LOAD_BALANCER_HOSTNAME, OIDC_ISSUER, GristmillMocks

LB = "service.beta.kubernetes.io/aws-load-balancer-"


def build() -> dict[str, str]:
    def program() -> dict[str, object]:
        ingress = Ingress(
            "dev-ingress",
            IngressArgs(
                domain="dev.ml.example.com",
                hosted_zone_id="Z0123456789ABC",
                cluster_name="gristmill-dev",
                region="eu-west-3",
                vpc_id="vpc-0dev",
                oidc_provider_arn="arn:aws:iam::123456789012:oidc-provider/x",
                oidc_issuer_url=OIDC_ISSUER,
            ),
        )
        return {
            "url": ingress.url,
            "ingress_class": ingress.ingress_class,
            "hostname": ingress.load_balancer_hostname,
        }

    result: dict[str, str] = run_pulumi(program)
    return result


def test_traefik_serves_https_only_behind_a_tls_load_balancer() -> None:
    values = traefik_values("arn:aws:acm:eu-west-3:123456789012:certificate/abc")
    annotations = values["service"]["annotations"]
    # The AWS Load Balancer Controller's annotations, not the in-tree provider's `nlb`.
    assert annotations[f"{LB}type"] == "external"
    assert annotations[f"{LB}nlb-target-type"] == "ip"
    assert annotations[f"{LB}scheme"] == "internet-facing"
    assert values["service"]["spec"] == {"loadBalancerClass": "service.k8s.aws/nlb"}
    assert annotations[f"{LB}ssl-cert"] == "arn:aws:acm:eu-west-3:123456789012:certificate/abc"
    assert annotations[f"{LB}ssl-ports"] == "443"
    assert annotations[f"{LB}ssl-negotiation-policy"] == TLS_POLICY
    assert values["ports"]["web"]["expose"] == {"default": False}
    assert values["deployment"]["replicas"] == 2
    assert values["podDisruptionBudget"] == {"enabled": True, "minAvailable": 1}


def test_certificate_is_validated_through_dns(mocks: GristmillMocks) -> None:
    build()
    certificate = mocks.one("aws:acm/certificate:Certificate")
    assert certificate.inputs["domainName"] == "dev.ml.example.com"
    assert certificate.inputs["validationMethod"] == "DNS"
    records = {r.name: r.inputs for r in mocks.of_type("aws:route53/record:Record")}
    validation_record = records["dev-ingress-certificate-validation"]
    assert validation_record["name"] == "_x1.dev.ml.example.com."
    assert validation_record["zoneId"] == "Z0123456789ABC"
    validation = mocks.one("aws:acm/certificateValidation:CertificateValidation").inputs
    assert validation["validationRecordFqdns"] == ["_x1.dev.ml.example.com."]


def test_traefik_uses_the_validated_certificate(mocks: GristmillMocks) -> None:
    build()
    certificate = mocks.one("aws:acm/certificate:Certificate")
    release = mocks.releases()["traefik"]
    assert release["chart"] == "traefik"
    assert release["values"]["service"]["annotations"][f"{LB}ssl-cert"] == certificate.state["arn"]


def test_environment_url_points_at_the_load_balancer(mocks: GristmillMocks) -> None:
    result = build()
    assert result == {
        "url": "https://dev.ml.example.com",
        "ingress_class": "traefik",
        "hostname": LOAD_BALANCER_HOSTNAME,
    }
    record = mocks.of_type("aws:route53/record:Record")
    (dns,) = [r.inputs for r in record if r.name == "dev-ingress-dns"]
    assert dns == {
        "zoneId": "Z0123456789ABC",
        "name": "dev.ml.example.com",
        "type": "CNAME",
        "records": [LOAD_BALANCER_HOSTNAME],
        "ttl": 300,
    }
    (service,) = [r for r in mocks.of_type("kubernetes:core/v1:Service") if r.read]
    assert service.name == "dev-ingress-traefik-service"


def test_the_load_balancer_controller_runs_with_its_own_scoped_role(mocks: GristmillMocks) -> None:
    build()
    release = mocks.releases()["aws-load-balancer-controller"]
    assert release["chart"] == "aws-load-balancer-controller"
    assert release["namespace"] == "kube-system"
    values = release["values"]
    # From its values, never from instance metadata (out of pods' reach, hop limit 1).
    assert (values["clusterName"], values["region"], values["vpcId"]) == (
        "gristmill-dev", "eu-west-3", "vpc-0dev"
    )
    role = mocks.one("aws:iam/role:Role", "load-balancer-controller")
    assert values["serviceAccount"]["annotations"] == {
        "eks.amazonaws.com/role-arn": role.state["arn"]
    }
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]["Condition"]
    assert (
        "system:serviceaccount:kube-system:aws-load-balancer-controller"
        in trust["StringEquals"].values()
    )
    policy = json.loads(mocks.one("aws:iam/rolePolicy:RolePolicy").inputs["policy"])
    actions = {a for st in policy["Statement"] for a in _actions(st)}
    assert not any(a.startswith(("wafv2:", "waf-regional:", "shield:", "cognito-idp:"))
                   for a in actions)
    deleting = [st for st in policy["Statement"] if "elasticloadbalancing:DeleteLoadBalancer"
                in _actions(st)]
    assert deleting and all("aws:ResourceTag/elbv2.k8s.aws/cluster" in st["Condition"]["Null"]
                            for st in deleting)


def _actions(statement: dict[str, object]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)  # type: ignore[call-overload]
