"""Pure builders for the elastic pool (elastic_pool.py): the pre-started pod of a step, and
the patch that turns it into one execution's pod once it takes that execution.

A pool pod is an execution pod without an execution: same image, same security context,
same default resources, ``restartPolicy: Never``, but its mode label is ``elastic-pool`` (the
pod watcher and the orphan sweeper, which select ``elastic``, leave it alone) and its
environment holds nothing of any execution: the environment URL, the step folder and a
pool token that lets it ask for one execution of its own step. The execution's variables,
its id and its scoped token arrive with the assignment (``POST /runtime/pool/claim``).

When it takes an execution, ``assignment_patch`` gives it the execution's labels and
annotations and the ``elastic`` mode: from then on it is that execution's pod for the
watcher, the reconciler, the sweeper, ``cancel`` and ``cleanup``, exactly as a cold pod.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gristmill_platform.executors.kubernetes import manifests
from gristmill_platform.executors.kubernetes.config import KubernetesConfig
from gristmill_platform.executors.kubernetes.naming import label_value, resource_name
from gristmill_platform.executors.spec import Resources

Manifest = dict[str, Any]

MODE_POOL = "elastic-pool"
POOL_PREFIX = "gm-pool-"
ANNOTATION_STEP_ID = "gristmill.io/step-id"
LABEL_POOL = "gristmill.io/pool-step"

# What the pool pod's runner reads (sdk/gristmill/runtime/pool.py).
POOL_TOKEN_VAR = "GRISTMILL_POOL_TOKEN"  # noqa: S105 - a variable's name
POOL_STEP_VAR = "GRISTMILL_POOL_STEP_ID"
POOL_WAIT_VAR = "GRISTMILL_POOL_CLAIM_WAIT_S"
POOL_COMMAND = ("python", "-m", "gristmill.runtime", "pool")
STEP_DIR = "/app"


@dataclass(frozen=True)
class PoolShape:
    """What every pool pod of one step is: the step's image and identity. Only executions
    that ask for nothing else (default resources, no GPU) are given to a pool pod."""

    step_id: str
    step_name: str
    pipeline_name: str
    language: str
    image: str


def pool_pod_name(step_id: str, suffix: str) -> str:
    """``gm-pool-<step>-<suffix>``: unique per pod (the suffix is random), readable."""
    if not re.fullmatch(r"[a-z0-9]{1,16}", suffix):
        raise ValueError(f"a pool pod suffix is lowercase letters and digits, got {suffix!r}")
    return resource_name(POOL_PREFIX, f"{step_id[:20]}-{suffix}")


def pool_selector() -> dict[str, str]:
    """Labels of every pool pod not yet given an execution."""
    return {manifests.LABEL_MANAGED_BY: "gristmill", manifests.LABEL_MODE: MODE_POOL}


def pool_env(environment_url: str, token: str, step_id: str, claim_wait_s: float,
             io_dir: str) -> dict[str, str]:
    """A pool pod's environment: where the control service is and the pool token; no
    execution's variable, id or token."""
    return {
        "GRISTMILL_ENVIRONMENT_URL": environment_url,
        "CRAFT_AI_ENVIRONMENT_URL": environment_url,
        "CRAFT_AI_CONTROL_URL": environment_url,
        "GRISTMILL_STEP_DIR": STEP_DIR,
        # always there: which execution will need it is not known yet
        "GRISTMILL_IO_DIR": io_dir,
        "SDK_VERBOSE_LOG": "false",
        "PYTHONUNBUFFERED": "1",
        POOL_TOKEN_VAR: token,
        POOL_STEP_VAR: step_id,
        POOL_WAIT_VAR: f"{claim_wait_s:g}",
    }


def pool_pod(shape: PoolShape, name: str, env: Mapping[str, str],
             cfg: KubernetesConfig) -> Manifest:
    """The pre-started pod of a step's pool: the runner waits there for one execution."""
    if not shape.image:
        raise ValueError("a pool pod needs the step's image")
    if not name.startswith(POOL_PREFIX):
        raise ValueError(f"a pool pod's name starts with {POOL_PREFIX!r}, got {name!r}")
    ours = {
        manifests.LABEL_ROLE: manifests.ROLE_WORKER,  # the workers' network policies apply
        manifests.LABEL_MODE: MODE_POOL,
        manifests.LABEL_STEP: shape.step_name,
        manifests.LABEL_PIPELINE: shape.pipeline_name,
        LABEL_POOL: shape.step_id,
    }
    container: dict[str, Any] = {
        "name": manifests.CONTAINER,
        "image": shape.image,
        "imagePullPolicy": cfg.image_pull_policy,
        "command": list(POOL_COMMAND),
        "env": manifests._env(env, {}),
        "resources": manifests._resources(Resources(), 0, cfg),
        "securityContext": manifests._container_security(cfg),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": manifests.IO_VOLUME, "mountPath": cfg.io_dir}],
    }
    pod_spec = manifests.step_pod_spec(
        cfg, container, 0, [{"name": manifests.IO_VOLUME, "emptyDir": {}}])
    annotations = {
        manifests.ANNOTATION_STEP: shape.step_name,
        manifests.ANNOTATION_PIPELINE: shape.pipeline_name,
        ANNOTATION_STEP_ID: shape.step_id,
        # an idle pool pod may be moved; one running an execution may not (assignment_patch)
        manifests.ANNOTATION_SAFE_TO_EVICT: "true",
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": cfg.namespace,
            "labels": manifests._labels(cfg, {}, ours),
            "annotations": dict(sorted(annotations.items())),
        },
        "spec": dict(sorted(pod_spec.items())),
    }


def assignment_patch(execution_id: str, deployment_name: str | None,
                     deadline_s: int | None) -> Manifest:
    """The merge patch that makes a pool pod the pod of ``execution_id``: its labels and
    annotations as a cold pod would carry them (the watcher and sweeper find it), and its
    deadline. ``activeDeadlineSeconds`` counts from the pod's start, so the caller adds the
    time the pod waited idle to the execution's timeout."""
    if deadline_s is not None and deadline_s <= 0:
        raise ValueError(f"the deadline must be > 0 s, got {deadline_s}")
    labels: dict[str, str | None] = {
        manifests.LABEL_MODE: manifests.MODE_ELASTIC,
        manifests.LABEL_EXECUTION: label_value(execution_id),
    }
    annotations: dict[str, str] = {
        manifests.ANNOTATION_EXECUTION: execution_id,
        manifests.ANNOTATION_SAFE_TO_EVICT: "false",
    }
    if deployment_name is not None:
        labels[manifests.LABEL_DEPLOYMENT] = label_value(deployment_name)
        annotations[manifests.ANNOTATION_DEPLOYMENT] = deployment_name
    patch: Manifest = {"metadata": {"labels": labels, "annotations": annotations}}
    if deadline_s is not None:
        patch["spec"] = {"activeDeadlineSeconds": deadline_s}
    return patch


def assignment_env(execution_env: Mapping[str, str], pod_env: Mapping[str, str]
                   ) -> dict[str, str]:
    """What the assignment delivers: the execution's environment minus what the pool pod
    already has with the same value (the step folder, the URLs)."""
    return {name: value for name, value in execution_env.items()
            if pod_env.get(name) != value}
