"""Network policies for the workers' namespace. Step pods and image builds run user code,
so they cannot open connections to the database subnets nor to the node's instance
metadata (the node's IAM credentials), and only the control service may call into them.
Enforced by the VPC CNI's policy agent."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.networking.v1 import NetworkPolicySpecArgsDict

from gristmill_infra.labels import CONTROL_ROLE, ROLE_LABEL

INSTANCE_METADATA = "169.254.169.254/32"


def worker_egress_spec(denied_cidrs: Sequence[str]) -> NetworkPolicySpecArgsDict:
    """Every pod of the namespace: step pods (role=worker) and image builds (role=builder),
    whose Dockerfile RUN lines are user code too."""
    return {
        "pod_selector": {},
        "policy_types": ["Egress"],
        "egress": [
            # Other pods (DNS, the control service): pod addresses live in the node subnets,
            # never in the database ones.
            {"to": [{"namespace_selector": {}}]},
            {
                "to": [
                    {
                        "ip_block": {
                            "cidr": "0.0.0.0/0",
                            "except_": [*denied_cidrs, INSTANCE_METADATA],
                        }
                    }
                ]
            },
        ],
    }


def worker_ingress_spec(control_namespace: str) -> NetworkPolicySpecArgsDict:
    """Warm workers serve the control service, and nobody else."""
    return {
        "pod_selector": {},
        "policy_types": ["Ingress"],
        "ingress": [
            {
                "from_": [
                    {
                        "namespace_selector": {
                            "match_labels": {"kubernetes.io/metadata.name": control_namespace}
                        },
                        "pod_selector": {"match_labels": {ROLE_LABEL: CONTROL_ROLE}},
                    }
                ]
            }
        ],
    }


@dataclass(frozen=True)
class NetworkPoliciesArgs:
    # The workers' namespace, which the policies apply to.
    namespace: pulumi.Input[str]
    control_namespace: str
    database_cidrs: Sequence[str]


class NetworkPolicies(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: NetworkPoliciesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gristmill:infra:NetworkPolicies", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        k8s.networking.v1.NetworkPolicy(
            f"{name}-worker-egress",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name="gristmill-worker-egress", namespace=args.namespace
            ),
            spec=worker_egress_spec(args.database_cidrs),
            opts=child,
        )
        k8s.networking.v1.NetworkPolicy(
            f"{name}-worker-ingress",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name="gristmill-worker-ingress", namespace=args.namespace
            ),
            spec=worker_ingress_spec(args.control_namespace),
            opts=child,
        )
        self.register_outputs({})
