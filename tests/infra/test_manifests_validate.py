"""Every Kubernetes object the Pulumi program declares (dev and prod stacks), validated
offline against the Kubernetes API's own schemas with unknown fields refused
(`kubernetes-validate --strict`), for the cluster version the stack pins."""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra.helpers import stack_config
from tests.infra.mocks import GristmillMocks, reveal
from tests.infra.test_stack import build

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is not installed (pip install -e .[dev])"
)


def _plain(value: Any) -> Any:
    value = reveal(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def declared_objects(mocks: GristmillMocks) -> list[dict[str, Any]]:
    """The objects as the provider sends them: inputs, with the generated name."""
    objects = []
    for registration in mocks.registrations:
        if not registration.type.startswith("kubernetes:") or registration.read:
            continue
        if registration.type.startswith("kubernetes:helm.sh"):
            continue  # chart values, checked against the charts (test_chart_values.py)
        if registration.type.startswith("kubernetes:monitoring.coreos.com"):
            # the Prometheus operator's kinds have no schema in kubernetes-validate; their
            # content is checked by promtool and the metric-name tests (test_monitoring_assets)
            continue
        manifest = _plain(registration.inputs)
        manifest["metadata"] = _plain(registration.state["metadata"])
        objects.append(manifest)
    return objects


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_object_the_program_declares_is_valid(mocks: GristmillMocks, stack: str) -> None:
    build(stack)
    version = f"{stack_config(stack).cluster.kubernetes_version}.0"
    objects = declared_objects(mocks)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Job", "ResourceQuota", "LimitRange", "PriorityClass",
            "NetworkPolicy", "Ingress", "StorageClass"} <= kinds
    for manifest in objects:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as error:  # name the object
            raise AssertionError(
                f"{manifest['kind']} {manifest['metadata'].get('name')}: {error}"
            ) from error
