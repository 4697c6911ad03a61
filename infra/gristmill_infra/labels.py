"""Labels and taints shared by the node pools, the charts and the control service.

The control service's Kubernetes backend schedules pods with these exact values
(`gristmill.io/pool`, the `nvidia.com/gpu` taint, `gristmill.io/role`), so they live in
one place here.
"""

from __future__ import annotations

ROLE_LABEL = "gristmill.io/role"
CONTROL_ROLE = "control"

POOL_LABEL = "gristmill.io/pool"
CPU_POOL = "cpu"
GPU_POOL = "gpu"

GPU_TAINT_KEY = "nvidia.com/gpu"
GPU_TAINT_VALUE = "true"
GPU_TAINT_EFFECT = "NoSchedule"

# Tags the AWS cloud provider reads to pick the subnets of load balancers it creates.
PUBLIC_ELB_TAG = "kubernetes.io/role/elb"
INTERNAL_ELB_TAG = "kubernetes.io/role/internal-elb"


def cluster_tag(cluster_name: str) -> str:
    return f"kubernetes.io/cluster/{cluster_name}"


def gpu_toleration() -> dict[str, str]:
    return {"key": GPU_TAINT_KEY, "operator": "Exists", "effect": GPU_TAINT_EFFECT}


def pool_affinity(pool: str) -> dict[str, object]:
    """Required node affinity for one pool; replaces (not merges with) a chart's default."""
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": POOL_LABEL, "operator": "In", "values": [pool]}]}
                ]
            }
        }
    }
