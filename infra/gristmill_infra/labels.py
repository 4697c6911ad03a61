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


# The cluster autoscaler's AWS provider knows a node is a GPU node by this label (its
# `GPULabel`): without it, a node whose GPU is not advertised yet looks idle and unready,
# and the autoscaler can remove it or add a second one for the same pod.
ACCELERATOR_LABEL = "k8s.amazonaws.com/accelerator"

# The GPU each NVIDIA instance family carries, as the label's value.
GPU_ACCELERATORS = {
    "g4dn": "nvidia-tesla-t4",
    "g5": "nvidia-a10g",
    "g6": "nvidia-l4",
    "g6e": "nvidia-l40s",
    "gr6": "nvidia-l4",
    "p3": "nvidia-tesla-v100",
    "p3dn": "nvidia-tesla-v100",
    "p4d": "nvidia-tesla-a100",
    "p4de": "nvidia-tesla-a100",
    "p5": "nvidia-h100",
    "p5e": "nvidia-h200",
    "p5en": "nvidia-h200",
}


def accelerator_label(instance_type: str) -> str | None:
    """`g6e.2xlarge` -> `nvidia-l40s`; None for a family not in GPU_ACCELERATORS."""
    return GPU_ACCELERATORS.get(instance_type.split(".", 1)[0])
