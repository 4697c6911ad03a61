"""The control service on the Kubernetes backend builds each step's image in the cluster.

Everything runs on the test's event loop: the control service (its lifespan entered
directly, requests through ASGI), the Kubernetes API emulator (kmock) and S3 (a moto
server in a thread). Nothing runs BuildKit here: the tests play it, adding the build pod
with its log and moving the Job to succeeded or failed, as the Job controller would.
"""

from __future__ import annotations

import asyncio
import io
import tarfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import inspect

from gristmill_platform.db import migrate
from gristmill_platform.db.models.steps import Step
from gristmill_platform.executors.kubernetes.images import step_dockerfile
from gristmill_platform.settings import Settings, resolve_settings
from gristmill_platform.state import AppState
from gristmill_platform.steps import image_builds
from gristmill_platform.steps.repository import StepRepository
from tests.conftest import free_port
from tests.datastore_conformance.conftest import Moto
from tests.platform.executors import buildkit_logs
from tests.platform.executors.conftest import NAMESPACE, Emulator
from tests.platform.stepkit import HELLO, archive_of, step_form, write_folder

REGISTRY = buildkit_logs.REGISTRY
BASE = buildkit_logs.BASE
# generous: a bound so a broken build fails the test instead of hanging it, never a
# measurement
WAIT_S = 60.0


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[Moto]:
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                     "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION"):
            patch.delenv(name, raising=False)
        patch.setenv("AWS_CONFIG_FILE", "/nonexistent/gristmill-tests")
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/gristmill-tests")
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            yield Moto(url=f"http://{host}:{port}")
        finally:
            server.stop()


@pytest.fixture(scope="module")
def runtime_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The runner's site folder, copied once for the module rather than per service."""
    from gristmill_platform.runtime_site import ensure_runtime_site

    root = tmp_path_factory.mktemp("runtime")
    ensure_runtime_site(root)
    return root


def new_data_dir(tmp_path: Path, runtime_site: Path) -> Path:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "runtime").symlink_to(runtime_site, target_is_directory=True)
    return data_dir


@dataclass
class Environment:
    settings: Settings
    token: str
    emulator: Emulator
    moto: Moto
    bucket: str

    def s3_object(self, key: str) -> bytes | None:
        try:
            body: bytes = self.moto.client().get_object(Bucket=self.bucket, Key=key)[
                "Body"].read()
        except Exception:
            return None
        return body


@dataclass
class Service:
    client: httpx.AsyncClient
    state: AppState


@pytest.fixture()
async def environment(emulator: Emulator, kubeconfig: Path, moto_s3: Moto, tmp_path: Path,
                      runtime_site: Path, monkeypatch: pytest.MonkeyPatch) -> Environment:
    from gristmill_platform.bootstrap import prepare_environment

    # the builds poll the Job quickly here; in production every few seconds
    monkeypatch.setattr(image_builds, "POLL_INTERVAL_S", 0.02)
    bucket = moto_s3.new_bucket()
    settings = resolve_settings(Settings(
        data_dir=new_data_dir(tmp_path, runtime_site),
        database_url=f"sqlite:///{tmp_path / 'gm.sqlite3'}", executor="kubernetes",
        registry=REGISTRY, kubernetes_namespace=NAMESPACE,
        kubernetes_kubeconfig=str(kubeconfig), step_build_wait_s=0, log_level="warning",
        **moto_s3.s3_settings(bucket)))  # type: ignore[arg-type]
    boot = await asyncio.to_thread(prepare_environment, settings)
    assert boot.sdk_token is not None
    return Environment(settings, boot.sdk_token, emulator, moto_s3, bucket)


@asynccontextmanager
async def running(env: Environment) -> AsyncIterator[Service]:
    """One control service process: started, then stopped (as on a restart)."""
    from gristmill_platform.app import create_app

    app = create_app(env.settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gristmill") as raw:
            refreshed = await raw.post("/api/v1/auth/refresh",
                                       json={"refresh_token": env.token})
            refreshed.raise_for_status()
            token = refreshed.json()["access_token"]
        async with httpx.AsyncClient(
                transport=transport, base_url="http://gristmill/api/v1", timeout=WAIT_S,
                headers={"Authorization": f"Bearer {token}"}) as client:
            yield Service(client, app.state.gristmill)


@pytest.fixture()
async def service(environment: Environment) -> AsyncIterator[Service]:
    async with running(environment) as started:
        yield started


# --- helpers --------------------------------------------------------------------------------


async def until(check: Callable[[], Awaitable[Any]], what: str) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while loop.time() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.02)
    # what the service was doing instead: the place each of its tasks waits at
    waiting = "\n".join(f"{task.get_name()}: {task.get_coro()!r} at "
                        f"{[f'{f.f_code.co_name}:{f.f_lineno}' for f in task.get_stack()]}"
                        for task in asyncio.all_tasks())
    raise AssertionError(f"gave up waiting for {what}; tasks:\n{waiting}")


def submitted_jobs(emulator: Emulator) -> list[dict[str, Any]]:
    """Every build Job the service asked for (a join is a second POST of the same one)."""
    return [request.data for request in emulator.sent("post", "jobs")]


def job_names(emulator: Emulator) -> set[str]:
    return {job["metadata"]["name"] for job in submitted_jobs(emulator)
            if emulator.has("batch/v1/jobs", job["metadata"]["name"])}


async def one_job(emulator: Emulator) -> dict[str, Any]:
    async def created() -> list[dict[str, Any]]:
        return submitted_jobs(emulator)

    jobs = await until(created, "a build Job")
    return dict(jobs[-1])


def build_args(job: dict[str, Any]) -> dict[str, str]:
    """The build's inputs, read from the BuildKit Job: where the context is, the Dockerfile,
    the image pushed and the base image it starts from."""
    pod = job["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    opts = dict(a.removeprefix("--opt=").split("=", 1) for a in args if a.startswith("--opt="))
    (output,) = [a for a in args if a.startswith("--output=")]
    fields = dict(f.split("=", 1) for f in output.removeprefix("--output=").split(","))
    env = {e["name"]: e["value"] for e in pod["initContainers"][0]["env"]}
    return {"context": env["CONTEXT_URL"], "dockerfile": opts["filename"],
            "destination": fields["name"],
            "BASE_IMAGE": opts["build-arg:BASE_IMAGE"]}


def job_pod_labels(emulator: Emulator, job_name: str) -> dict[str, str]:
    """The labels the Job controller gives the Job's pods: its template's, and job-name."""
    job = emulator.objects["batch/v1/jobs", NAMESPACE, job_name]
    labels = job["spec"]["template"]["metadata"]["labels"]
    return {**labels, "job-name": job_name}


def play_build(emulator: Emulator, job_name: str, log: str, *, exit_code: int,
               fetch_exit_code: int = 0) -> str:
    """What the cluster does for a build: a pod of the Job (owned by its uid, as the Job
    controller makes it) fetches the context, runs BuildKit, then the Job records the end.
    Every change goes through the emulator's watches, as a controller's writes do. With
    ``fetch_exit_code``, the fetcher fails: BuildKit never starts, ``log`` is the
    fetcher's. Returns the pod's name."""
    job = emulator.objects["batch/v1/jobs", NAMESPACE, job_name]
    pod = f"{job_name}-{uuid.uuid4().hex[:5]}"
    state: dict[str, Any] = {"terminated": {
        "exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error"}}
    fetch_state = {"terminated": {"exitCode": fetch_exit_code,
                                  "reason": "Completed" if fetch_exit_code == 0 else "Error"}}
    if fetch_exit_code:
        state = {"waiting": {"reason": "PodInitializing"}}
    stamped = "".join(f"2026-11-23T12:00:{i:02d}Z {line}\n"
                      for i, line in enumerate(log.splitlines()))
    emulator.serve_logs(pod, stamped)
    emulator.add_pod(pod, job_pod_labels(emulator, job_name), {
        "phase": "Succeeded" if exit_code == 0 and not fetch_exit_code else "Failed",
        "initContainerStatuses": [{"name": "fetch-context", "image": "aws-cli",
                                   "state": fetch_state}],
        "containerStatuses": [{"name": "buildkit", "image": "buildkit", "state": state}]})
    emulator.update("v1/pods", NAMESPACE, pod, {"metadata": {"ownerReferences": [
        {"apiVersion": "batch/v1", "kind": "Job", "name": job_name,
         "uid": job["metadata"]["uid"], "controller": True}]}})
    if exit_code == 0:
        status: dict[str, Any] = {"succeeded": 1}
    else:
        status = {"failed": 1, "conditions": [
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}
    emulator.update("batch/v1/jobs", NAMESPACE, job_name, {"status": status})
    return pod


async def create_step(client: httpx.AsyncClient, name: str, files: dict[str, str],
                      tmp_path: Path, **container_config: Any) -> httpx.Response:
    folder = write_folder(tmp_path / f"src-{uuid.uuid4().hex[:6]}", files)
    fields = step_form(name, container_config=container_config or None)
    return await client.post("/steps", data=dict(fields),
                             files={"step_file": ("step_file", archive_of(folder))})


async def step_row(state: AppState, name: str) -> Step:
    from gristmill_platform.deps import transaction

    async with transaction(state) as session:
        step = await StepRepository(session).by_name(name)
        assert step is not None
        return step


async def wait_status(service: Service, name: str, status: str) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        body: dict[str, Any] = (await service.client.get(f"/steps/{name}")).json()
        return body if body["creation_info"]["status"] == status else None

    result: dict[str, Any] = await until(reached, f"step {name} {status}")
    return result


def context_files(blob: bytes) -> dict[str, str]:
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read().decode()  # type: ignore[union-attr]
                for m in tar.getmembers() if m.isfile()}


HELLO_FILES = {"src/hello.py": HELLO, "requirements.txt": "httpx==0.28.1\n"}


# --- tests ----------------------------------------------------------------------------------


async def test_a_step_is_built_into_its_image_by_a_buildkit_job(
        service: Service, environment: Environment, tmp_path: Path) -> None:
    created = await create_step(service.client, "hello-k8s", HELLO_FILES, tmp_path,
                                requirements_path="requirements.txt",
                                system_dependencies=["libgomp1"])
    assert created.status_code == 206, created.text
    assert created.json()["creation_info"]["status"] == "creation_pending"

    job = await one_job(environment.emulator)
    args = build_args(job)
    digest = args["destination"].rsplit(":", 1)[1]
    assert args["destination"] == f"{REGISTRY}/gristmill-steps:{digest}"
    assert args["BASE_IMAGE"] == BASE
    assert args["dockerfile"] == "Dockerfile"
    key = f".gristmill/builds/{digest}.tar.gz"
    assert args["context"] == f"s3://{environment.bucket}/{key}"
    env = {item["name"]: item["value"]
           for item in job["spec"]["template"]["spec"]["initContainers"][0]["env"]}
    assert env == {"AWS_REGION": "eu-west-3", "S3_ENDPOINT": environment.moto.url,
                   "S3_FORCE_PATH_STYLE": "true", "CONTEXT_URL": args["context"]}

    # the context BuildKit reads: the generated Dockerfile and, beside it, the code
    blob = environment.s3_object(key)
    assert blob is not None
    files = context_files(blob)
    assert files["Dockerfile"] == step_dockerfile(["libgomp1"], "requirements.txt",
                                                  code_dir="code")
    assert files["code/src/hello.py"] == HELLO
    assert files["code/requirements.txt"] == "httpx==0.28.1\n"

    # the build log grows while BuildKit runs (a first pod, gone before the one that ends)
    pod = f"{job['metadata']['name']}-first"
    started = "#1 [internal] load build definition from Dockerfile"
    environment.emulator.serve_logs(pod, f"2026-11-23T12:00:01Z {started}\n")
    environment.emulator.add_pod(pod, job_pod_labels(environment.emulator,
                                                     job["metadata"]["name"]),
                                 {"phase": "Running"})

    async def following() -> bool:
        logs = (await service.client.get("/steps/hello-k8s/logs")).json()
        return started in logs["logs"]

    await until(following, "the builder's log in the step's build log")
    assert (await service.client.get("/steps/hello-k8s")).json()["creation_info"][
        "status"] == "creation_pending"

    environment.emulator.remove("v1/pods", NAMESPACE, pod)
    play_build(environment.emulator, job["metadata"]["name"], buildkit_logs.BUILD_OK, exit_code=0)
    await wait_status(service, "hello-k8s", "ready")

    row = await step_row(service.state, "hello-k8s")
    assert row.image == args["destination"]
    assert row.environment_key is None
    logs = (await service.client.get("/steps/hello-k8s/logs")).json()
    assert logs["status"] == "ready"
    assert "Successfully installed httpx-0.28.1" in logs["logs"]
    assert logs["logs"].index("Step image") < logs["logs"].index("Successfully installed")
    assert logs["logs"].rstrip().endswith("Step ready")
    # the code stays on the control service (a test kubelet runs pods from it); no venv
    assert (service.state.builds.code_dir(row.id) / "src/hello.py").read_text() == HELLO
    assert not (environment.settings.data_dir / "venvs").exists()
    # a built image no longer needs its context
    assert environment.s3_object(key) is None


async def test_identical_steps_share_one_build_and_one_image(
        service: Service, environment: Environment, tmp_path: Path) -> None:
    for name in ("twin-a", "twin-b"):
        response = await create_step(service.client, name, HELLO_FILES, tmp_path,
                                     requirements_path="requirements.txt")
        assert response.status_code == 206, response.text

    async def both_joined() -> bool:
        return len(submitted_jobs(environment.emulator)) == 2

    await until(both_joined, "both steps at their build")
    names = job_names(environment.emulator)
    assert len(names) == 1  # one Job: the second submission joined the first
    play_build(environment.emulator, names.pop(), buildkit_logs.BUILD_OK, exit_code=0)
    await wait_status(service, "twin-a", "ready")
    await wait_status(service, "twin-b", "ready")
    image = (await step_row(service.state, "twin-a")).image
    assert image and image == (await step_row(service.state, "twin-b")).image

    # later, the same step again: a ready step has the image, nothing is submitted
    third = await create_step(service.client, "twin-c", HELLO_FILES, tmp_path,
                              requirements_path="requirements.txt")
    assert third.status_code == 206
    await wait_status(service, "twin-c", "ready")
    assert len(submitted_jobs(environment.emulator)) == 2
    assert (await step_row(service.state, "twin-c")).image == image
    logs = (await service.client.get("/steps/twin-c/logs")).json()["logs"]
    assert "Reusing the image of the step 'twin-a'" in logs

    # a different requirement is a different image
    other = await create_step(service.client, "cousin", {
        **HELLO_FILES, "requirements.txt": "httpx==0.27.0\n"}, tmp_path,
        requirements_path="requirements.txt")
    assert other.status_code == 206
    await until(lambda: _count(environment, 3), "the cousin's build")
    assert build_args(submitted_jobs(environment.emulator)[-1])["destination"] != image


async def _count(environment: Environment, jobs: int) -> bool:
    return len(submitted_jobs(environment.emulator)) == jobs


async def test_a_step_with_its_own_dockerfile_is_built_from_it(
        service: Service, environment: Environment, tmp_path: Path) -> None:
    dockerfile = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN pip install torch\nCOPY . /app\n"
    response = await create_step(service.client, "own-dockerfile", {
        "src/hello.py": HELLO, "docker/Dockerfile": dockerfile}, tmp_path,
        dockerfile_path="docker/Dockerfile", language="python:3.11-slim")
    assert response.status_code == 206, response.text
    job = await one_job(environment.emulator)
    args = build_args(job)
    assert args["dockerfile"] == "docker/Dockerfile"
    assert args["BASE_IMAGE"] == f"{REGISTRY}/gristmill-runtime/python:3.11-slim"
    blob = environment.s3_object(args["context"].split("/", 3)[3])
    assert blob is not None
    assert context_files(blob) == {"src/hello.py": HELLO, "docker/Dockerfile": dockerfile}
    play_build(environment.emulator, job["metadata"]["name"], buildkit_logs.BUILD_OK,
               exit_code=0)
    await wait_status(service, "own-dockerfile", "ready")
    assert (await step_row(service.state, "own-dockerfile")).image == args["destination"]

    # such an image has no warm-worker server to rely on: low-latency is refused, for a
    # one-step pipeline and for a graph one of whose nodes runs the step; elastic is not
    refusal = "low_latency is not available for steps built from a dockerfile_path"
    one = await service.client.post("/pipelines", data={"pipeline_name": "own-one",
                                                         "step_name": "own-dockerfile"})
    assert one.status_code == 201, one.text
    graph = await service.client.post("/pipelines", json={
        "pipeline_name": "own-graph",
        "nodes": [{"name": "first", "step_name": "own-dockerfile", "inputs": {}},
                  {"name": "second", "step_name": "own-dockerfile", "inputs": {}}],
        "outputs": []})
    assert graph.status_code == 201, graph.text
    for pipeline in ("own-one", "own-graph"):
        refused = await service.client.post("/endpoints", json={
            "pipeline_name": pipeline, "name": f"{pipeline}-fast", "mode": "low_latency"})
        assert refused.status_code == 400, refused.text
        assert refusal in refused.json()["message"]
        assert "'own-dockerfile'" in refused.json()["message"]
        assert (await service.client.get(f"/deployments/{pipeline}-fast")).status_code == 404
    elastic = await service.client.post("/endpoints", json={
        "pipeline_name": "own-one", "name": "own-one-elastic", "mode": "elastic"})
    assert elastic.status_code == 201, elastic.text


async def test_a_missing_dockerfile_fails_before_any_build(
        service: Service, environment: Environment, tmp_path: Path) -> None:
    response = await create_step(service.client, "no-dockerfile", {"src/hello.py": HELLO},
                                 tmp_path, dockerfile_path="Dockerfile")
    assert response.status_code == 206
    body = await wait_status(service, "no-dockerfile", "creation_failed")
    assert "dockerfile_path 'Dockerfile' is not a file" in body["creation_info"][
        "status_reason"]
    assert submitted_jobs(environment.emulator) == []


PIP_FAILS = "\n".join(buildkit_logs.PIP_FAILS)
NO_BASE = "\n".join(buildkit_logs.NO_BASE)


@pytest.mark.parametrize(("log", "expected"), [
    (PIP_FAILS, "pip could not install 'nosuchpkg==9.9': check the name and version in your "
                "requirements file. Last lines of the build log: ERROR: Could not find"),
    (NO_BASE, f"The runtime image {BASE} is not in the registry: push the runtime images"),
])
async def test_a_failed_build_fails_the_step_with_the_reason_and_the_log(
        service: Service, environment: Environment, tmp_path: Path, log: str,
        expected: str) -> None:
    response = await create_step(service.client, "broken", {
        "src/hello.py": HELLO, "requirements.txt": "nosuchpkg==9.9\n"}, tmp_path,
        requirements_path="requirements.txt")
    assert response.status_code == 206
    job = await one_job(environment.emulator)
    play_build(environment.emulator, job["metadata"]["name"], log, exit_code=1)
    body = await wait_status(service, "broken", "creation_failed")
    assert body["creation_info"]["status_reason"].startswith(expected)
    logs = (await service.client.get("/steps/broken/logs")).json()
    assert logs["status"] == "creation_failed"
    assert logs["status_reason"] == body["creation_info"]["status_reason"]
    assert log.splitlines()[-1] in logs["logs"]  # the builder's whole log is copied
    assert logs["logs"].rstrip().splitlines()[-1] == f"Build failed: {logs['status_reason']}"
    assert (await step_row(service.state, "broken")).image is None

    # the user fixes nothing and tries again: a new attempt, not the old failure
    again = await create_step(service.client, "broken", {
        "src/hello.py": HELLO, "requirements.txt": "nosuchpkg==9.9\n"}, tmp_path,
        requirements_path="requirements.txt")
    assert again.status_code == 206

    name = job["metadata"]["name"]

    async def rebuilding() -> bool:
        # deleted, then created again: a fresh Job without the old failure
        return (len(environment.emulator.sent("delete", "jobs")) == 1
                and environment.emulator.has("batch/v1/jobs", name)
                and not environment.emulator.objects["batch/v1/jobs", NAMESPACE, name].get(
                    "status"))

    await until(rebuilding, "the failed Job replaced")
    assert (await step_row(service.state, "broken")).status == "creation_pending"
    play_build(environment.emulator, job["metadata"]["name"], buildkit_logs.BUILD_OK, exit_code=0)
    await wait_status(service, "broken", "ready")


async def test_a_build_whose_code_cannot_be_fetched_says_so_with_the_fetchers_log(
        service: Service, environment: Environment, tmp_path: Path) -> None:
    """The build pod's first container fetches the context from S3; when it fails,
    BuildKit never starts and has no log: the reason and the log are the fetcher's."""
    response = await create_step(service.client, "unfetchable", {"src/hello.py": HELLO},
                                 tmp_path)
    assert response.status_code == 206
    job = await one_job(environment.emulator)
    denied = ("fatal error: An error occurred (403) when calling the HeadObject operation: "
              "Forbidden")
    pod = play_build(environment.emulator, job["metadata"]["name"], denied, exit_code=1,
                     fetch_exit_code=1)
    body = await wait_status(service, "unfetchable", "creation_failed")
    assert body["creation_info"]["status_reason"] == (
        "The image builder could not start: its first container, which fetches the step's "
        "code from the data store (and logs in to ECR), exited with code 1: check that the "
        "builder's service account may read the bucket and push to the registry. Last lines "
        f"of the build log: {denied}")
    asked = [request for request in environment.emulator.sent("get")
             if str(request.url.path).endswith(f"/pods/{pod}/log")]
    assert asked and all(request.params.get("container") == "fetch-context"
                         for request in asked)
    logs = (await service.client.get("/steps/unfetchable/logs")).json()
    assert denied in logs["logs"]


async def test_a_restart_mid_build_follows_the_same_job(
        environment: Environment, tmp_path: Path) -> None:
    async with running(environment) as first:
        response = await create_step(first.client, "restarted", HELLO_FILES, tmp_path,
                                     requirements_path="requirements.txt")
        assert response.status_code == 206
        job = await one_job(environment.emulator)
        step_id = (await step_row(first.state, "restarted")).id
    # the first control service is gone; the step is still being built in the cluster
    name = job["metadata"]["name"]
    assert environment.emulator.has("batch/v1/jobs", name)
    async with running(environment) as second:
        assert (await step_row(second.state, "restarted")).status == "creation_pending"

        async def joined() -> bool:
            return len(submitted_jobs(environment.emulator)) == 2

        await until(joined, "the restarted service back at the build")
        assert job_names(environment.emulator) == {name}
        play_build(environment.emulator, name, buildkit_logs.BUILD_OK, exit_code=0)
        await wait_status(second, "restarted", "ready")
        assert (await step_row(second.state, "restarted")).image == build_args(job)[
            "destination"]
        assert environment.emulator.sent("delete", "jobs") == []
        logs = (await second.client.get("/steps/restarted/logs")).json()["logs"]
        assert "following it again after a restart" in logs
        assert (second.state.builds.code_dir(step_id) / "src/hello.py").is_file()


async def test_a_restart_after_the_build_failed_reports_that_failure(
        environment: Environment, tmp_path: Path) -> None:
    async with running(environment) as first:
        await create_step(first.client, "failed-while-away", HELLO_FILES, tmp_path,
                          requirements_path="requirements.txt")
        job = await one_job(environment.emulator)
    play_build(environment.emulator, job["metadata"]["name"], PIP_FAILS, exit_code=1)
    async with running(environment) as second:
        body = await wait_status(second, "failed-while-away", "creation_failed")
        assert body["creation_info"]["status_reason"].startswith("pip could not install")
        assert environment.emulator.sent("delete", "jobs") == []


async def test_kubernetes_mode_does_not_start_on_a_local_data_store(
        tmp_path: Path, kubeconfig: Path, runtime_site: Path) -> None:
    from gristmill_platform.app import create_app

    settings = Settings(data_dir=new_data_dir(tmp_path, runtime_site),
                        database_url=f"sqlite:///{tmp_path / 'gm.sqlite3'}",
                        executor="kubernetes", registry=REGISTRY,
                        kubernetes_kubeconfig=str(kubeconfig), datastore_backend="local")
    await asyncio.to_thread(migrate.upgrade, resolve_settings(settings).database_url or "")
    app = create_app(settings)
    with pytest.raises(image_builds.KubernetesSetupError, match="DATASTORE_BACKEND=s3"):
        async with app.router.lifespan_context(app):
            pass


# --- the migration --------------------------------------------------------------------------


def test_migration_0005_adds_and_removes_the_image_column(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, text

    url = f"sqlite:///{tmp_path / 'm.sqlite3'}"
    migrate.upgrade(url, "0004")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO steps (id, name, function_path, function_name, inputs, outputs, "
            "container_config, origin, status, build_log, timeout_s, is_hidden, created_at, "
            "updated_at) VALUES ('s1', 'kept', 'a.py', 'f', '[]', '[]', '{}', 'local', "
            "'ready', '', 180, 0, '2026-11-23 12:00:00', '2026-11-23 12:00:00')"))

    def columns() -> set[str]:
        return {column["name"] for column in inspect(engine).get_columns("steps")}

    assert "image" not in columns()
    migrate.upgrade(url, "0005")
    assert "image" in columns()
    assert "ix_steps_image" in {index["name"] for index in inspect(engine).get_indexes("steps")}
    with engine.connect() as connection:
        assert connection.execute(text("SELECT name, image FROM steps")).all() == [
            ("kept", None)]
    migrate.downgrade(url, "0004")
    assert "image" not in columns()
    with engine.connect() as connection:
        assert connection.execute(text("SELECT name FROM steps")).all() == [("kept",)]
    engine.dispose()
