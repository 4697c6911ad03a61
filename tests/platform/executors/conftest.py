"""A Kubernetes API emulator (kmock) on 127.0.0.1 and an executor connected to it.

kmock keeps objects in memory and serves them over real HTTP, but it never runs a pod:
tests move pod statuses themselves, the way a kubelet would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import kmock
import pytest

from gristmill_platform.executors.kubernetes.config import KubernetesConfig
from gristmill_platform.executors.kubernetes.executor import KubernetesExecutor

from .emulator import NAMESPACE, Emulator, write_kubeconfig

__all__ = ["NAMESPACE", "NOW", "Emulator", "LogKeeper"]

NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=timezone.utc)


@pytest.fixture()
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator() as handler, kmock.Server(handler):
        yield handler


@pytest.fixture()
def kubeconfig(emulator: Emulator, tmp_path: Path) -> Path:
    """A kubeconfig pointing at the emulator: the executor connects as it would to kind."""
    return write_kubeconfig(str(emulator.url), tmp_path / "kubeconfig")


@pytest.fixture()
def k8s_config(kubeconfig: Path) -> KubernetesConfig:
    return KubernetesConfig(
        namespace=NAMESPACE,
        registry="registry.example/acme",
        kubeconfig=str(kubeconfig),
        unschedulable_timeout_s=600,
    )


class LogKeeper:
    """A log sink that keeps what it is given, or fails on demand."""

    def __init__(self) -> None:
        self.kept: dict[str, list[Any]] = {}
        self.fail = False

    async def __call__(self, handle: Mapping[str, Any], lines: Any) -> None:
        if self.fail:
            raise OSError("the log store is down")
        self.kept[handle["execution_id"]] = list(lines)


@pytest.fixture()
def log_keeper() -> LogKeeper:
    return LogKeeper()


@pytest.fixture()
def clock() -> list[datetime]:
    """The executor's notion of now, movable by the test (never the wall clock)."""
    return [NOW]


@pytest.fixture()
def executor(
    k8s_config: KubernetesConfig, log_keeper: LogKeeper, clock: list[datetime]
) -> KubernetesExecutor:
    return KubernetesExecutor(k8s_config, log_sink=log_keeper, clock=lambda: clock[0])
