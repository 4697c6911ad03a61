"""EKS managed add-ons, pinned per Kubernetes minor version so that `pulumi up` is repeatable
and coredns or kube-proxy never drift from what was reviewed.

Upgrading the cluster's minor version is a reviewed change here too: list what EKS offers
with `aws eks describe-addon-versions --kubernetes-version 1.35 --addon-name <name>
--query 'addons[].addonVersions[].addonVersion'` and pin the newest. Each pin's source is in
docs/environments-on-aws.md ("Pinned versions and where each was confirmed"), checked on
2026-12-05 without AWS access: vpc-cni, coredns and kube-proxy are the newest versions the EKS
user guide's version tables list for each minor; the aws-ebs-csi-driver builds could not be
confirmed from an AWS source (the upstream releases exist). `pulumi preview` against a real
account is the check for all of them.
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
        VPC_CNI: "v1.21.1-eksbuild.7",
        COREDNS: "v1.13.2-eksbuild.4",
        KUBE_PROXY: "v1.33.10-eksbuild.2",
        EBS_CSI: "v1.48.0-eksbuild.2",
    },
    "1.34": {
        VPC_CNI: "v1.21.1-eksbuild.7",
        COREDNS: "v1.13.2-eksbuild.4",
        KUBE_PROXY: "v1.34.6-eksbuild.2",
        EBS_CSI: "v1.48.0-eksbuild.2",
    },
    "1.35": {
        VPC_CNI: "v1.21.1-eksbuild.7",
        COREDNS: "v1.13.2-eksbuild.4",
        KUBE_PROXY: "v1.35.3-eksbuild.2",
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
