"""Pulumi runs against mocks for every infra test: one mocks object for the whole process
(`set_mocks` keeps only the last call), no preview so every output is known."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pulumi
import pytest

from tests.infra.mocks import GristmillMocks

# Pulumi's runtime keeps Futures from the event loop current when it first ran; the
# service tests elsewhere in the same process run and close loops of their own (and
# `asyncio.run` leaves none current). One loop, owned here and made current before every
# infra test, lets a plain single-process `pytest` run these tests too.
PULUMI_LOOP = asyncio.new_event_loop()
asyncio.set_event_loop(PULUMI_LOOP)
MOCKS = GristmillMocks()
pulumi.runtime.set_mocks(MOCKS, project="gristmill", stack="dev", preview=False)


@pytest.fixture(autouse=True)
def _pulumi_loop() -> Iterator[None]:
    asyncio.set_event_loop(PULUMI_LOOP)
    yield


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
