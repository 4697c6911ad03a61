"""The kubeconfig handed to Pulumi's Kubernetes provider and exported to operators."""

from __future__ import annotations

from typing import Any


def build_kubeconfig(
    cluster_name: str, endpoint: str, certificate_authority_data: str, region: str
) -> dict[str, Any]:
    """A kubeconfig that fetches short-lived tokens with the AWS CLI instead of embedding a
    long-lived credential, so the exported stack output grants nothing by itself."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster_name,
                "cluster": {
                    "server": endpoint,
                    "certificate-authority-data": certificate_authority_data,
                },
            }
        ],
        "contexts": [
            {"name": cluster_name, "context": {"cluster": cluster_name, "user": cluster_name}}
        ],
        "current-context": cluster_name,
        "users": [
            {
                "name": cluster_name,
                "user": {
                    "exec": {
                        "apiVersion": "client.authentication.k8s.io/v1beta1",
                        "command": "aws",
                        "args": [
                            "eks",
                            "get-token",
                            "--cluster-name",
                            cluster_name,
                            "--region",
                            region,
                            "--output",
                            "json",
                        ],
                        "interactiveMode": "Never",
                    }
                },
            }
        ],
    }
