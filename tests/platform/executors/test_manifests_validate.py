"""Every manifest the Kubernetes backend builds, validated offline against the Kubernetes
API's own schemas with unknown fields refused (`kubernetes-validate --strict`), for the
version the environments run (gristmill:kubernetesVersion's default)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is not installed (pip install -e .[dev])"
)

from tests.platform.executors.test_manifests import CASES  # noqa: E402

KUBERNETES_VERSION = "1.35.0"


@pytest.mark.parametrize("case", sorted(CASES))
def test_manifest_is_valid_for_the_cluster_version(case: str) -> None:
    build: Callable[[], dict[str, Any]] = CASES[case]
    kubernetes_validate.validate(build(), KUBERNETES_VERSION, strict=True)


def test_strict_validation_refuses_an_unknown_field() -> None:
    """The check can fail: a misplaced field (Traefik's kind of mistake) is caught."""
    job = CASES["job_image_build"]()
    job["spec"]["template"]["spec"]["containers"][0]["tls"] = {"enabled": False}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)


def test_pool_pod_is_valid_for_the_cluster_version() -> None:
    """The elastic pool's pre-started pod, and that pod once given an execution."""
    from gristmill_platform.executors.kubernetes.config import KubernetesConfig
    from gristmill_platform.executors.kubernetes.pool_manifests import (
        PoolShape,
        assignment_patch,
        pool_env,
        pool_pod,
    )

    cfg = KubernetesConfig(namespace="gm", registry="registry.example/acme",
                           image_pull_secrets=("pull",), labels={"team": "ml"})
    shape = PoolShape("step-1", "echo", "echo", "python:3.12-slim",
                      "registry.example/acme/gristmill-steps:abc")
    pod = pool_pod(shape, "gm-pool-step-1-ab12",
                   pool_env("http://gristmill:8765", "t" * 64, "step-1", 20, cfg.io_dir), cfg)
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
    patch = assignment_patch("exec-1", "dep", 90)
    pod["metadata"]["labels"].update(patch["metadata"]["labels"])
    pod["metadata"]["annotations"].update(patch["metadata"]["annotations"])
    pod["spec"].update(patch["spec"])
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
