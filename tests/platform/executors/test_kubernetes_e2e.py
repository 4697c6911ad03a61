"""The executor against a real cluster (kind, EKS): skipped unless a kubeconfig is given.

    kind create cluster --name gristmill
    kind get kubeconfig --name gristmill > /tmp/kind.kubeconfig
    GRISTMILL_E2E_KUBECONFIG=/tmp/kind.kubeconfig \\
        .venv/bin/python -m pytest tests/platform/executors/test_kubernetes_e2e.py -q

The pods run a public Python image (the runtime images need a registry), in their own
namespace (GRISTMILL_E2E_NAMESPACE, default gristmill-e2e), deleted at the end. The waits
below are time limits for a real cluster, not assertions on durations.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gristmill_platform.executors.kubernetes.config import KubernetesConfig
from gristmill_platform.executors.kubernetes.executor import KubernetesExecutor
from gristmill_platform.executors.spec import (
    FailureCode,
    Handle,
    LaunchSpec,
    PollResult,
    Resources,
    WorkerState,
)

KUBECONFIG = os.environ.get("GRISTMILL_E2E_KUBECONFIG")
NAMESPACE = os.environ.get("GRISTMILL_E2E_NAMESPACE", "gristmill-e2e")
IMAGE = os.environ.get("GRISTMILL_E2E_IMAGE", "python:3.12.11-slim-bookworm")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not KUBECONFIG, reason="set GRISTMILL_E2E_KUBECONFIG to run on a cluster"),
]


@pytest.fixture()
async def cluster_executor() -> AsyncIterator[KubernetesExecutor]:
    import kr8s
    from kr8s.asyncio.objects import Namespace

    cfg = KubernetesConfig(
        namespace=NAMESPACE,
        kubeconfig=KUBECONFIG,
        service_account=None,  # the namespace's default account: nothing to install
        image_pull_policy="IfNotPresent",
    )
    executor = KubernetesExecutor(cfg)
    api = await executor.api()
    namespace = Namespace({"metadata": {"name": NAMESPACE}}, api=api)
    if not await namespace.exists():
        await namespace.create()
    yield executor
    with contextlib.suppress(kr8s.NotFoundError):
        await namespace.delete()


def spec(script: str, **changes: Any) -> LaunchSpec:
    execution_id = f"e2e-{uuid.uuid4().hex[:8]}"
    values: dict[str, Any] = {
        "execution_id": execution_id,
        "step_name": "e2e",
        "pipeline_name": "e2e",
        "language": "python:3.12-slim",
        "argv": ("python", "-c", script),
        "env": {"GREETING": "hello"},
        "image": IMAGE,
        "resources": Resources(cpu=0.1, memory_bytes=128 * 1024**2),
        "timeout_s": 120,
    }
    values.update(changes)
    return LaunchSpec(**values)


async def wait_for(
    executor: KubernetesExecutor,
    handle: Handle,
    done: tuple[WorkerState, ...] = (WorkerState.SUCCEEDED, WorkerState.FAILED),
    code: FailureCode | None = None,
    limit_s: float = 180,
) -> PollResult:
    outcome = await executor.poll(handle)
    for _ in range(int(limit_s)):
        if outcome.state in done or (code is not None and outcome.code == code):
            return outcome
        await asyncio.sleep(1)
        outcome = await executor.poll(handle)
    pytest.fail(f"no outcome within {limit_s} s: {outcome}")


async def test_success_logs_and_cleanup(cluster_executor: KubernetesExecutor) -> None:
    handle = await cluster_executor.submit(
        spec("import os; print(os.environ['GREETING'], os.environ['GRISTMILL_POD_NAME'])")
    )
    assert await cluster_executor.submit(spec("x", execution_id=handle["execution_id"])) == handle
    outcome = await wait_for(cluster_executor, handle)
    assert outcome.state == WorkerState.SUCCEEDED, outcome
    lines = await cluster_executor.logs(handle)
    assert [line.message for line in lines] == [f"hello {handle['name']}"]
    await cluster_executor.cleanup(handle)


async def test_non_zero_exit(cluster_executor: KubernetesExecutor) -> None:
    handle = await cluster_executor.submit(spec("raise SystemExit(3)"))
    outcome = await wait_for(cluster_executor, handle)
    assert (outcome.state, outcome.code, outcome.exit_code) == (
        WorkerState.FAILED,
        FailureCode.EXIT_CODE,
        3,
    )
    await cluster_executor.cleanup(handle)


async def test_out_of_memory(cluster_executor: KubernetesExecutor) -> None:
    handle = await cluster_executor.submit(
        spec("x = bytearray(512 * 1024 * 1024)", resources=Resources(memory_bytes=64 * 1024**2))
    )
    outcome = await wait_for(cluster_executor, handle)
    assert outcome.code == FailureCode.OOM_KILLED, outcome
    await cluster_executor.cleanup(handle)


async def test_deadline_and_cancel(cluster_executor: KubernetesExecutor) -> None:
    timed_out = await cluster_executor.submit(spec("import time; time.sleep(600)", timeout_s=5))
    cancelled = await cluster_executor.submit(spec("import time; time.sleep(600)"))
    await wait_for(cluster_executor, cancelled, done=(WorkerState.RUNNING,))
    await cluster_executor.cancel(cancelled)
    assert (await wait_for(cluster_executor, timed_out)).code == FailureCode.DEADLINE_EXCEEDED
    assert (await wait_for(cluster_executor, cancelled)).code == FailureCode.CANCELLED
    for handle in (timed_out, cancelled):
        await cluster_executor.cleanup(handle)


async def test_gpu_worker_without_gpu_nodes_is_unschedulable(
    cluster_executor: KubernetesExecutor,
) -> None:
    handle = await cluster_executor.submit(spec("print(1)", resources=Resources(gpu=1)))
    outcome = await wait_for(cluster_executor, handle, code=FailureCode.UNSCHEDULABLE, limit_s=60)
    assert outcome.reason is not None and "GPU" in outcome.reason
    await cluster_executor.cancel(handle)
