"""Every pinned version is recorded, with where it was confirmed, in
docs/environments-on-aws.md ("Pinned versions and where each was confirmed"): a pin bumped
without its source recorded fails here."""

from __future__ import annotations

import pytest

from gristmill_infra import charts
from gristmill_infra.eks_addons import ADDON_VERSIONS
from gristmill_platform.executors.kubernetes.config import KubernetesConfig
from tests.infra.helpers import ROOT

SECTION = "## Pinned versions and where each was confirmed"


def _section() -> str:
    docs = (ROOT / "docs" / "environments-on-aws.md").read_text()
    start = docs.index(SECTION)
    end = docs.index("\n## ", start + len(SECTION))
    return docs[start:end]


def _row(section: str, first_cell: str) -> str:
    rows = [line for line in section.splitlines() if line.startswith(f"| {first_cell} |")]
    assert len(rows) == 1, f"one row for {first_cell} in {SECTION!r}, found {len(rows)}"
    return rows[0]


@pytest.mark.parametrize("addon", sorted({a for pins in ADDON_VERSIONS.values() for a in pins}))
def test_each_add_on_row_lists_the_pins_of_every_supported_minor(addon: str) -> None:
    section = _section()
    header = _row(section, "add-on")
    row = _row(section, f"`{addon}`")
    minors = [cell.strip() for cell in header.split("|")[2:-3]]
    assert minors == sorted(ADDON_VERSIONS), "the table's columns are the supported minors"
    cells = [cell.strip() for cell in row.split("|")[2 : 2 + len(minors)]]
    assert cells == [ADDON_VERSIONS[minor][addon] for minor in minors]


@pytest.mark.parametrize(
    "chart",
    [
        charts.TRAEFIK,
        charts.KUBE_PROMETHEUS_STACK,
        charts.DCGM_EXPORTER,
        charts.NVIDIA_DEVICE_PLUGIN,
        charts.CLUSTER_AUTOSCALER,
        charts.AWS_LOAD_BALANCER_CONTROLLER,
    ],
    ids=lambda chart: chart.name,
)
def test_each_chart_row_names_the_pinned_version(chart: charts.Chart) -> None:
    row = _row(_section(), chart.name)
    pinned = row.split("|")[2].strip().strip("*")
    assert pinned == chart.version


@pytest.mark.parametrize("field", ["buildkit_image", "builder_tools_image"])
def test_the_build_images_are_listed(field: str) -> None:
    image = getattr(KubernetesConfig(), field)
    _row(_section(), f"`{image}`")
