"""Pulumi mocks for the infra tests: records every resource and answers with the outputs
AWS, Helm and Kubernetes would (ARNs, endpoints, load balancer names...)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import pulumi

ACCOUNT = "123456789012"
REGION = "eu-west-3"
ZONES = ["eu-west-3a", "eu-west-3b", "eu-west-3c"]
OIDC_ISSUER = f"https://oidc.eks.{REGION}.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
CLUSTER_SECURITY_GROUP = "sg-0cluster"
LOAD_BALANCER_HOSTNAME = f"a1b2c3-traefik.elb.{REGION}.amazonaws.com"


# How the engine marks a secret value on the wire (pulumi.runtime.rpc).
_SIG_KEY = "4dabf18193072939515e22adb298388d"
_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(_SIG_KEY) == _SECRET_SIG


def reveal(value: Any) -> Any:
    return value["value"] if is_secret(value) else value


@dataclass
class Registration:
    type: str
    name: str
    inputs: dict[str, Any]
    state: dict[str, Any]
    provider: str | None
    read: bool


def _suffix(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:7]


class GristmillMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.registrations: list[Registration] = []
        self.calls: list[str] = []
        self.zones = list(ZONES)

    def reset(self) -> None:
        self.registrations.clear()
        self.calls.clear()
        self.zones = list(ZONES)

    # -- queries used by the tests -------------------------------------------------------
    def of_type(self, type_: str) -> list[Registration]:
        return [r for r in self.registrations if r.type == type_]

    def one(self, type_: str, name_contains: str = "") -> Registration:
        found = [r for r in self.of_type(type_) if name_contains in r.name]
        assert len(found) == 1, f"expected one {type_} named *{name_contains}*, got {found}"
        return found[0]

    def types(self) -> set[str]:
        return {r.type for r in self.registrations}

    def releases(self) -> dict[str, dict[str, Any]]:
        """Helm releases by release name, with their inputs."""
        return {r.inputs["name"]: r.inputs for r in self.of_type("kubernetes:helm.sh/v3:Release")}

    # -- the engine's side -----------------------------------------------------------------
    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        inputs = dict(args.inputs)
        state = dict(inputs)
        name = args.name
        typ = args.typ
        resource_id = args.resource_id or f"{name}-id"
        arn = f"arn:aws:mock:{REGION}:{ACCOUNT}:{name}"

        if typ.startswith("kubernetes:") and not typ.startswith("kubernetes:helm"):
            metadata = dict(state.get("metadata") or {})
            # The Kubernetes provider names unnamed objects <name>-<random>.
            metadata.setdefault("name", f"{name}-{_suffix(name)}")
            state["metadata"] = metadata

        if typ == "aws:eks/cluster:Cluster":
            state.update(
                arn=arn,
                endpoint=f"https://EXAMPLE.gr7.{REGION}.eks.amazonaws.com",
                certificateAuthority={"data": "Q0VSVElGSUNBVEU="},
                identities=[{"oidcs": [{"issuer": OIDC_ISSUER}]}],
                vpcConfig={
                    **(inputs.get("vpcConfig") or {}),
                    "clusterSecurityGroupId": CLUSTER_SECURITY_GROUP,
                },
            )
        elif typ == "aws:iam/role:Role":
            state.update(arn=f"arn:aws:iam::{ACCOUNT}:role/{name}", name=name)
            resource_id = name
        elif typ == "aws:iam/openIdConnectProvider:OpenIdConnectProvider":
            host = OIDC_ISSUER.removeprefix("https://")
            state.update(arn=f"arn:aws:iam::{ACCOUNT}:oidc-provider/{host}")
        elif typ == "aws:s3/bucket:Bucket":
            bucket = f"{inputs.get('bucketPrefix', name)}{_suffix(name)}"
            state.update(bucket=bucket, arn=f"arn:aws:s3:::{bucket}")
            resource_id = bucket
        elif typ == "aws:ecr/repository:Repository":
            state.update(
                arn=arn,
                repositoryUrl=f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{inputs['name']}",
            )
            resource_id = inputs["name"]
        elif typ == "aws:rds/instance:Instance":
            address = f"{inputs['identifier']}.cexample.{REGION}.rds.amazonaws.com"
            state.update(arn=arn, address=address, endpoint=f"{address}:5432")
        elif typ == "aws:acm/certificate:Certificate":
            state.update(
                arn=f"arn:aws:acm:{REGION}:{ACCOUNT}:certificate/{_suffix(name)}",
                domainValidationOptions=[
                    {
                        "domainName": inputs["domainName"],
                        "resourceRecordName": f"_x1.{inputs['domainName']}.",
                        "resourceRecordType": "CNAME",
                        "resourceRecordValue": "_x2.acm-validations.aws.",
                    }
                ],
            )
        elif typ == "aws:route53/record:Record":
            state.update(fqdn=inputs["name"])
        elif typ == "aws:eks/nodeGroup:NodeGroup":
            state.update(arn=arn, nodeGroupName=name)
        elif typ == "random:index/randomPassword:RandomPassword":
            state.update(result="Pw0" * (int(inputs["length"]) // 3 + 1))
        elif typ == "kubernetes:helm.sh/v3:Release":
            state.update(
                status={
                    "name": inputs.get("name", name),
                    "namespace": inputs.get("namespace", "default"),
                    "status": "deployed",
                }
            )
        elif typ == "kubernetes:core/v1:Service" and args.resource_id:
            state.update(
                metadata={"name": args.resource_id.split("/")[-1]},
                status={"loadBalancer": {"ingress": [{"hostname": LOAD_BALANCER_HOSTNAME}]}},
            )
        elif typ.startswith("aws:"):
            state.setdefault("arn", arn)

        self.registrations.append(
            Registration(
                type=typ,
                name=name,
                inputs=inputs,
                state=state,
                provider=args.provider,
                read=bool(args.resource_id),
            )
        )
        return resource_id, state

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:  # type: ignore[override]
        self.calls.append(args.token)
        if args.token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            return {"id": REGION, "names": list(self.zones), "zoneIds": []}
        if args.token == "aws:index/getPartition:getPartition":
            return {"id": "aws", "partition": "aws", "dnsSuffix": "amazonaws.com"}
        return {}
