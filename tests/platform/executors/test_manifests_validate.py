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
