"""Pulumi runs against mocks for every infra test: one mocks object for the whole process
(`set_mocks` keeps only the last call), no preview so every output is known."""

from __future__ import annotations

from collections.abc import Iterator

import pulumi
import pytest

from tests.infra.mocks import GristmillMocks

MOCKS = GristmillMocks()
pulumi.runtime.set_mocks(MOCKS, project="gristmill", stack="dev", preview=False)


@pytest.fixture
def mocks() -> Iterator[GristmillMocks]:
    MOCKS.reset()
    yield MOCKS
    MOCKS.reset()


@pytest.fixture(autouse=True)
def _no_stack_config() -> Iterator[None]:
    """Stack config is process-wide; no test sees another's values."""
    pulumi.runtime.set_all_config({})
    yield
    pulumi.runtime.set_all_config({})
