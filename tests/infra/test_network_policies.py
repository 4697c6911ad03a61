from __future__ import annotations

from gristmill_infra.network_policies import (
    NetworkPolicies,
    NetworkPoliciesArgs,
    worker_egress_spec,
    worker_ingress_spec,
)
from tests.infra.helpers import run_pulumi
from tests.infra.mocks import GristmillMocks

DATABASE_CIDRS = ["10.0.240.0/22", "10.0.244.0/22"]


def test_worker_egress_excludes_the_database_and_instance_metadata() -> None:
    spec = worker_egress_spec(DATABASE_CIDRS)
    # Every pod of the workers' namespace: step pods and image builds alike.
    assert spec["pod_selector"] == {}
    assert spec["policy_types"] == ["Egress"]
    ip_blocks = [
        peer["ip_block"] for rule in spec["egress"] for peer in rule["to"] if "ip_block" in peer
    ]
    assert ip_blocks == [{"cidr": "0.0.0.0/0", "except_": [*DATABASE_CIDRS, "169.254.169.254/32"]}]


def test_only_the_control_service_reaches_workers() -> None:
    spec = worker_ingress_spec("gristmill")
    assert spec["policy_types"] == ["Ingress"]
    assert spec["ingress"] == [
        {
            "from_": [
                {
                    "namespace_selector": {
                        "match_labels": {"kubernetes.io/metadata.name": "gristmill"}
                    },
                    "pod_selector": {"match_labels": {"gristmill.io/role": "control"}},
                }
            ]
        }
    ]


def test_policies_reach_the_cluster_in_kubernetes_terms(mocks: GristmillMocks) -> None:
    run_pulumi(
        lambda: (
            NetworkPolicies(
                "dev-network-policies",
                NetworkPoliciesArgs(
                    namespace="gristmill-workers",
                    control_namespace="gristmill",
                    database_cidrs=DATABASE_CIDRS,
                ),
            ).urn
        )
    )
    policies = {
        r.inputs["metadata"]["name"]: r.inputs
        for r in mocks.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
    }
    egress = policies["gristmill-worker-egress"]
    assert egress["metadata"]["namespace"] == "gristmill-workers"
    assert egress["spec"]["egress"][1]["to"][0]["ipBlock"] == {
        "cidr": "0.0.0.0/0",
        "except": [*DATABASE_CIDRS, "169.254.169.254/32"],
    }
    ingress = policies["gristmill-worker-ingress"]
    assert ingress["metadata"]["namespace"] == "gristmill-workers"
    assert ingress["spec"]["ingress"][0]["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gristmill"}},
            "podSelector": {"matchLabels": {"gristmill.io/role": "control"}},
        }
    ]
