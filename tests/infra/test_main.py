"""The Pulumi program itself: nothing happens at import, and `__main__.py` exports the
outputs of a stack built from the stack's config."""

from __future__ import annotations

import importlib.util
import runpy
import sys
from pathlib import Path
from typing import Any

import pulumi
import pytest

import gristmill_infra
from tests.infra.helpers import ROOT, run_pulumi, stack_file_values
from tests.infra.mocks import GristmillMocks


def test_importing_the_package_creates_nothing(mocks: GristmillMocks) -> None:
    def program() -> int:
        # Each module's code runs again under a throwaway name, leaving the imported
        # modules (and their classes) untouched for the other tests.
        package = Path(gristmill_infra.__file__).parent
        for path in sorted(package.glob("*.py")):
            spec = importlib.util.spec_from_file_location(f"_import_check_{path.stem}", path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module  # dataclasses look their module up here
            try:
                spec.loader.exec_module(module)
            finally:
                del sys.modules[spec.name]
        return 0

    run_pulumi(program)
    assert mocks.registrations == []
    assert mocks.calls == []


def run_main(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    exported: dict[str, Any] = {}
    monkeypatch.setattr(pulumi, "export", lambda name, value: exported.__setitem__(name, value))

    def program() -> dict[str, Any]:
        runpy.run_path(str(ROOT / "infra" / "__main__.py"), run_name="__main__")
        return exported

    result: dict[str, Any] = run_pulumi(program)
    return result


def test_main_exports_what_the_sdk_needs(
    mocks: GristmillMocks, monkeypatch: pytest.MonkeyPatch
) -> None:
    pulumi.runtime.set_all_config(stack_file_values("dev"))
    exported = run_main(monkeypatch)
    assert set(exported) == {
        "environment_url",
        "datastore_bucket",
        "registry_url",
        "kubeconfig",
        "cluster_name",
    }
    assert exported["environment_url"] == "https://dev.ml.example.com"
    assert len(mocks.of_type("aws:eks/cluster:Cluster")) == 1


def test_main_stops_on_bad_config_before_creating_anything(
    mocks: GristmillMocks, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = stack_file_values("dev")
    values["gristmill:gpuInstanceTypes"] = "[]"
    pulumi.runtime.set_all_config(values)
    with pytest.raises(
        ValueError,
        match="gristmill:gpuInstanceTypes must be a non-empty list of EC2 instance types",
    ):
        run_main(monkeypatch)
    assert mocks.registrations == []


def test_a_failing_check_inside_the_program_fails_the_test() -> None:
    """The harness itself: an assertion that fails inside an apply reaches pytest."""

    def program() -> pulumi.Output[None]:
        def check(value: str) -> None:
            assert value == "expected"

        return pulumi.Output.from_input("actual").apply(check)

    with pytest.raises(AssertionError):
        run_pulumi(program)
