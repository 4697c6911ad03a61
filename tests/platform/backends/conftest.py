"""One control service per backend, for the behavioural suite that runs on each:

* ``local``: workers are local processes (the embedded default);
* ``kubernetes``: ``executor=kubernetes`` against the kmock API emulator, whose pods a
  kubelet double (kubelet.py) runs as local processes, the worker Deployments of
  low-latency deployments included (their pods are reached at 127.0.0.1:<port>);
* ``kubernetes-real``: a real cluster (kind, EKS), when ``GRISTMILL_E2E_KUBECONFIG`` is
  set; skipped otherwise (docs/kubernetes-testing.md says how to run it).

The environments live as long as the package's tests; tests use unique names.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kmock
import pytest

from tests.conftest import GristmillEnv, ServerThread, free_port, mint_admin_token
from tests.conftest import start_environment as start_local_environment
from tests.datastore_conformance.conftest import Moto, moto
from tests.platform.backends.kubelet import ContainerRunner, KubeletDouble
from tests.platform.executors.emulator import NAMESPACE, Emulator, write_kubeconfig
from tests.platform.executors.worker_cluster import WorkerCluster

__all__ = ["Backend", "moto"]  # moto: the S3 server fixture, shared with the data store suite

BACKENDS = ("local", "kubernetes", "kubernetes-real")
REGISTRY = "registry.example/gristmill"
E2E_VARIABLES = {
    "GRISTMILL_E2E_KUBECONFIG": "a kubeconfig of the cluster",
    "GRISTMILL_E2E_WORKER_HOST": "the address pods reach this machine at (kind: the "
    "docker network's gateway, e.g. 172.18.0.1)",
    "GRISTMILL_E2E_REGISTRY": "the registry holding the runtime images and receiving step "
    "images (kind: localhost:5001 with a local registry)",
}


class EmulatorThread:
    """The emulator (and the kubelet double) on an event loop of their own: the suite's
    tests make blocking HTTP calls, which would stall a loop shared with them."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.emulator: Emulator | None = None
        self.url = ""
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="kmock", daemon=True)

    def _run(self) -> None:
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with Emulator() as emulator, kmock.Server(emulator):
            self.emulator = emulator
            self.url = str(emulator.url)
            self.ready.set()
            await self._stop.wait()

    def start(self) -> Emulator:
        self._thread.start()
        if not self.ready.wait(30):
            raise RuntimeError("the Kubernetes API emulator did not start")
        assert self.emulator is not None
        return self.emulator

    def call(self, coroutine: Any) -> Any:
        """Run a coroutine on the emulator's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(60)

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)


@dataclass
class Backend:
    name: str
    env: GristmillEnv
    kubelet: KubeletDouble | None = None
    emulator: Emulator | None = None
    real_api: Any = None  # kr8s.Api of the real cluster
    state: Any = None  # the control service's AppState, on the emulator
    server: Any = None  # its ServerThread, on the emulator

    @property
    def on_kubernetes(self) -> bool:
        return self.name != "local"

    def pod_exists(self, execution_id: str) -> bool:
        from gristmill_platform.executors.kubernetes.manifests import execution_pod_name

        name = execution_pod_name(execution_id)
        if self.emulator is not None:
            return self.emulator.has("v1/pods", name)
        if self.real_api is not None:
            import kr8s

            return bool(list(kr8s.get("pods", name, namespace=self.real_namespace,
                                      api=self.real_api)))
        return False

    def worker_exists(self, deployment_name: str) -> bool:
        """Whether the worker Deployment of a low-latency deployment is in the cluster."""
        from gristmill_platform.executors.kubernetes.manifests import worker_name

        name = worker_name(deployment_name)
        if self.emulator is not None:
            return self.emulator.has("apps/v1/deployments", name)
        if self.real_api is not None:
            import kr8s

            return bool(list(kr8s.get("deployments", name, namespace=self.real_namespace,
                                      api=self.real_api)))
        return False

    real_namespace: str = "gristmill-e2e"


def _image_of(state: Any, step_id: str, environment_key: str | None) -> tuple[str, Path]:
    """(python, code folder): what the step's image would hold."""
    from gristmill_platform.steps.environments import python_of

    python = sys.executable  # the image's Python has the SDK, as this one does
    if environment_key:
        candidate = python_of(state.builds.environment_dir(environment_key))
        if Path(candidate).exists():
            python = str(candidate)
    return python, state.builds.code_dir(step_id)


def query_one(database: Path | str, sql: str, params: tuple[Any, ...]) -> Any:
    """One row of the control service's database: a SQLite file, or a PostgreSQL URL
    (``?`` placeholders either way)."""
    if isinstance(database, Path):
        with sqlite3.connect(database) as db:
            return db.execute(sql, params).fetchone()
    import psycopg

    url = database.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as db:
        return db.execute(sql.replace("?", "%s"), params).fetchone()


def _locator(state: Any, database: Path | str) -> Any:
    """(pod env) -> (python, code folder) of an elastic pod's execution's step."""

    def locate(env: Mapping[str, str]) -> tuple[str, Path]:
        if "GRISTMILL_EXECUTION_ID" not in env:  # an elastic pool's pod: its step's image
            row = query_one(database, "SELECT id, environment_key FROM steps WHERE id = ?",
                            (env["GRISTMILL_POOL_STEP_ID"],))
            if row is None:
                raise LookupError(f"no step {env['GRISTMILL_POOL_STEP_ID']}")
            return _image_of(state, *row)
        row = query_one(
            database, "SELECT s.id, s.environment_key FROM executions e JOIN steps s "
            "ON s.id = e.step_id WHERE e.id = ?", (env["GRISTMILL_EXECUTION_ID"],))
        if row is None:
            raise LookupError(f"no step for execution {env['GRISTMILL_EXECUTION_ID']}")
        return _image_of(state, *row)

    return locate


def _worker_locator(state: Any, database: Path | str) -> Any:
    """(worker pod) -> (python, code folder) of its step, named by the pod's annotation."""
    from gristmill_platform.executors.kubernetes.manifests import ANNOTATION_STEP

    def locate(pod: Mapping[str, Any]) -> tuple[str, Path]:
        step = (pod["metadata"].get("annotations") or {})[ANNOTATION_STEP]
        row = query_one(database, "SELECT id, environment_key FROM steps WHERE name = ?",
                        (step,))
        if row is None:
            raise LookupError(f"no step named {step}")
        return _image_of(state, *row)

    return locate


def _emulated(root: Path, moto: Moto, container: ContainerRunner | None = None,
              database_url: str | None = None, **overrides: Any) -> Iterator[Backend]:
    thread = EmulatorThread()
    emulator = thread.start()
    kubeconfig = write_kubeconfig(thread.url, root / "kubeconfig")
    database: Path | str = database_url or root / "gristmill.sqlite3"
    # Kubernetes mode needs a data store the cluster reaches (the build Jobs read build contexts
    # from the bucket): S3, here moto's.
    server, env, _ = start_local_environment(
        root / "data", database_url or f"sqlite:///{database}", executor="kubernetes",
        registry=REGISTRY,
        kubernetes_namespace=NAMESPACE, kubernetes_kubeconfig=str(kubeconfig),
        kubernetes_watch_interval_s=0.2, **moto.s3_settings(moto.new_bucket()), **overrides)
    state = server.server.config.app.state.gristmill
    workers = WorkerCluster(emulator, NAMESPACE, locate=_worker_locator(state, database))
    kubelet = KubeletDouble(emulator, NAMESPACE, _locator(state, database), workers=workers,
                            container=container)
    # the pool reaches worker pods where the double runs them, not at their (made-up) IPs;
    # it reads their statuses as often as the executor's watch does
    pool = state.services.executions.workers.inner  # the backend's, in GraphWorkerPools
    pool.address = workers.address
    pool.refresh_s = 0.2

    async def start_kubelet() -> None:
        kubelet.start()

    thread.call(start_kubelet())
    backend = Backend("kubernetes", env, kubelet=kubelet, emulator=emulator, state=state,
                      server=server)
    try:
        yield backend
    finally:
        backend.server.stop()  # the one running now, if a test restarted it
        thread.call(kubelet.stop())
        thread.stop()


def _real(root: Path) -> Iterator[Backend]:
    missing = [f"{name} ({why})" for name, why in E2E_VARIABLES.items()
               if not os.environ.get(name)]
    if "GRISTMILL_E2E_KUBECONFIG" not in os.environ:
        pytest.skip("set GRISTMILL_E2E_KUBECONFIG to run the behavioural suite on a real "
                    "cluster (see docs/kubernetes-testing.md)")
    if os.environ.get("GRISTMILL_DATASTORE_BACKEND") != "s3":
        missing.append("GRISTMILL_DATASTORE_BACKEND=s3 and GRISTMILL_S3_* (a bucket the "
                       "cluster reaches)")
    if missing:
        pytest.skip("the real-cluster run also needs " + "; ".join(missing))
    import kr8s

    from gristmill_platform.bootstrap import prepare_environment
    from gristmill_platform.settings import Settings, resolve_settings

    namespace = os.environ.get("GRISTMILL_E2E_NAMESPACE", "gristmill-e2e")
    # The S3 data store (which the build Jobs in the cluster must reach too) is read from the
    # usual GRISTMILL_DATASTORE_BACKEND / GRISTMILL_S3_* variables.
    port = free_port()
    settings = resolve_settings(Settings(
        data_dir=root / "data", host="0.0.0.0", port=port,
        database_url=f"sqlite:///{root / 'gristmill.sqlite3'}", log_level="warning",
        executor="kubernetes", registry=os.environ["GRISTMILL_E2E_REGISTRY"],
        internal_url=f"http://{os.environ['GRISTMILL_E2E_WORKER_HOST']}:{port}",
        kubernetes_namespace=namespace,
        kubernetes_kubeconfig=os.environ["GRISTMILL_E2E_KUBECONFIG"],
        kubernetes_worker_service_account="", kubernetes_builder_service_account=""))
    token = prepare_environment(settings).sdk_token or mint_admin_token(settings)
    server = ServerThread(settings)
    env = GristmillEnv(url=settings.environment_url, sdk_token=token, data_dir=root,
                       database=None, settings=settings)  # type: ignore[arg-type]
    server.start(env.url)
    api = kr8s.api(kubeconfig=os.environ["GRISTMILL_E2E_KUBECONFIG"])
    try:
        yield Backend("kubernetes-real", env, real_api=api, real_namespace=namespace)
    finally:
        server.stop()


@pytest.fixture(scope="package", params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Backend]:
    root = tmp_path_factory.mktemp(f"backend-{request.param}")
    if request.param == "local":
        database = root / "gristmill.sqlite3"
        server, env, _ = start_local_environment(root / "data", f"sqlite:///{database}")
        try:
            yield Backend("local", env)
        finally:
            server.stop()
        return
    if request.param == "kubernetes":
        yield from _emulated(root, request.getfixturevalue("moto"))
        return
    yield from _real(root)


@pytest.fixture
def api(backend: Backend) -> Iterator[Any]:
    with backend.env.client() as client:
        yield client


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:8]
