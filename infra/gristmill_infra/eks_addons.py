"""EKS managed add-ons, pinned per Kubernetes minor version so that `pulumi up` is repeatable
and coredns or kube-proxy never drift from what was reviewed.

Upgrading the cluster's minor version is a reviewed change here too: list what EKS offers
with `aws eks describe-addon-versions --kubernetes-version 1.35 --addon-name <name>
--query 'addons[].addonVersions[].addonVersion'` and pin the newest. These were written
without AWS access (December 2026): `pulumi preview` against a real account is the check.
"""

from __future__ import annotations

from collections.abc import Mapping

VPC_CNI = "vpc-cni"
COREDNS = "coredns"
KUBE_PROXY = "kube-proxy"
EBS_CSI = "aws-ebs-csi-driver"
ADDONS = (VPC_CNI, COREDNS, KUBE_PROXY, EBS_CSI)

ADDON_VERSIONS: Mapping[str, Mapping[str, str]] = {
    "1.33": {
        VPC_CNI: "v1.20.4-eksbuild.1",
        COREDNS: "v1.12.1-eksbuild.2",
        KUBE_PROXY: "v1.33.3-eksbuild.6",
        EBS_CSI: "v1.48.0-eksbuild.2",
    },
    "1.34": {
        VPC_CNI: "v1.20.4-eksbuild.1",
        COREDNS: "v1.12.3-eksbuild.1",
        KUBE_PROXY: "v1.34.0-eksbuild.4",
        EBS_CSI: "v1.48.0-eksbuild.2",
    },
    "1.35": {
        VPC_CNI: "v1.21.1-eksbuild.1",
        COREDNS: "v1.13.1-eksbuild.1",
        KUBE_PROXY: "v1.35.0-eksbuild.2",
        EBS_CSI: "v1.53.0-eksbuild.1",
    },
}


def addon_version(kubernetes_version: str, addon: str) -> str:
    """The pinned version of one add-on; KeyError names what to add to ADDON_VERSIONS."""
    try:
        return ADDON_VERSIONS[kubernetes_version][addon]
    except KeyError:
        raise KeyError(
            f"no pinned version of the {addon} add-on for Kubernetes {kubernetes_version}: "
            "add one to gristmill_infra/eks_addons.py"
        ) from None
