"""Every route of the app × every kind of caller, against the policy table
(auth/policy.py). The routes come from the app itself (its OpenAPI document and its
hidden routes), so a new route fails test_every_route_has_a_rule until it is classified,
and is refused (403) at run time meanwhile.

Callers: the admin, the member who owns the resources, another member, a viewer, an
execution token, nobody. A refused call must be 401 (nobody) or 403 with the error body;
an allowed one anything but 401, 403 and 5xx (most are 4xx here: empty bodies)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gristmill_platform.auth.policy import _ALLOWED, CONSOLE_PREFIX, ROUTES, Access
from tests.platform.helpers import run_admin
from tests.platform.stepkit import archive_of, post_step, step_form, write_folder
from tests.platform.test_runs import STEP_CODE, run, wait

TEXT = [{"name": "text", "data_type": "string"}]
CALLERS = ("admin", "member", "other", "viewer", "execution", "nobody")
KINDS = {"admin": "admin", "member": "member", "other": "member", "viewer": "viewer",
         "execution": "execution"}


def app_routes(tmp_path: Path) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves, documented or not."""
    from fastapi.routing import iter_route_contexts

    from gristmill_platform.app import create_app
    from gristmill_platform.settings import Settings

    app = create_app(Settings(data_dir=tmp_path,
                              database_url=f"sqlite:///{tmp_path / 'routes.sqlite3'}"))
    found = {(method.upper(), path) for path, item in app.openapi()["paths"].items()
             for method in item}
    for context in iter_route_contexts(app.routes):
        methods = getattr(context.original_route, "methods", None) or ()
        found |= {(m, str(context.path_format)) for m in methods if m != "HEAD"}
    return found


def test_every_route_has_a_rule(tmp_path: Path) -> None:
    routes = {(m, p) for m, p in app_routes(tmp_path)
              if p != CONSOLE_PREFIX and not p.startswith(CONSOLE_PREFIX + "/")}
    unclassified = sorted(routes - set(ROUTES))
    assert not unclassified, f"routes with no rule in auth/policy.py ROUTES: {unclassified}"
    stale = sorted(set(ROUTES) - routes)
    assert not stale, f"rules for routes the app no longer has: {stale}"


@dataclass
class World:
    env: Any
    tokens: dict[str, str]  # caller -> access token
    user_ids: dict[str, str]
    step: str
    pipeline: str
    deployment: str
    execution: str
    other_execution: str
    fresh: Iterator[int]

    def client(self, caller: str) -> httpx.Client:
        headers = ({"Authorization": f"Bearer {self.tokens[caller]}"}
                   if caller in self.tokens else {})
        return httpx.Client(base_url=self.env.url, headers=headers, timeout=60)


def access_token(env: Any, sdk_token: str) -> str:
    response = httpx.post(f"{env.url}/api/v1/auth/refresh", json={"refresh_token": sdk_token})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def execution_token(env: Any, execution_id: str, owner: str) -> str:
    from gristmill_platform.admin import AdminConsole

    async def mint() -> str:
        async with AdminConsole(env.settings) as console, console._auth() as auth:
            return (await auth.create_sdk_token(owner, scope="execution",
                                                execution_id=execution_id)).plaintext

    return asyncio.run(mint())


def wait_ready(api: httpx.Client, step: str, timeout_s: float = 300) -> None:
    """A build slower than the creation's own wait (a busy machine) answers 206 first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = api.get(f"/steps/{step}").json()["creation_info"]["status"]
        if status != "creation_pending":
            assert status == "ready", status
            return
        time.sleep(1)
    raise AssertionError(f"step {step} not built in {timeout_s} s")


@pytest.fixture(scope="module")
def world(gristmill_env: Any, tmp_path_factory: pytest.TempPathFactory) -> World:
    if gristmill_env.database.kind != "sqlite":
        pytest.skip("authorization does not depend on the database: run once, on SQLite")
    env, kind = gristmill_env, gristmill_env.database.kind
    tokens = {"admin": env.access_token()}
    user_ids = {}
    for caller, extra in (("member", {}), ("other", {}), ("viewer", {"is_viewer": True})):
        email = f"authz-{caller}-{kind}@example.com"
        user = run_admin(env.settings, "create_user", caller, email, **extra)
        user_ids[caller] = user.id
        sdk = run_admin(env.settings, "create_token", email, name="authz").plaintext
        tokens[caller] = access_token(env, sdk)
    archive = archive_of(write_folder(tmp_path_factory.mktemp("authz"),
                                      {"src/steps.py": STEP_CODE}))
    names = {k: f"authz-{k}-{kind}" for k in ("step", "pipeline", "deployment")}
    with httpx.Client(base_url=f"{env.url}/api/v1", timeout=120,
                      headers={"Authorization": f"Bearer {tokens['member']}"}) as member:
        created = post_step(member, step_form(names["step"], function_path="src/steps.py",
                                              function_name="echo_async", inputs=TEXT,
                                              outputs=TEXT), archive)
        assert created.status_code in (201, 206), created.text
        wait_ready(member, names["step"])
        # a pipeline on the step and a deployment on the pipeline: deleting the step or
        # the pipeline without force is then refused *after* the owner check (409), so an
        # allowed delete leaves them in place
        assert member.post("/pipelines", json={"pipeline_name": names["pipeline"],
                                               "step_names": [names["step"]]}
                           ).status_code == 201
        assert member.post("/endpoints", json={"pipeline_name": names["pipeline"],
                                               "name": names["deployment"], "mode": "elastic"}
                           ).status_code == 201
        executions = []
        for _ in range(2):
            started = run(member, names["pipeline"], {"text": "x"})
            assert started.status_code == 201, started.text
            executions.append(started.json()["execution_id"])
        for execution_id in executions:
            wait(member, execution_id)
    tokens["execution"] = access_token(
        env, execution_token(env, executions[0], user_ids["member"]))
    return World(env, tokens, user_ids, names["step"], names["pipeline"],
                 names["deployment"], executions[0], executions[1], itertools.count())


def fresh_deployment(world: World) -> str:
    name = f"authz-fresh-{next(world.fresh)}"
    with world.client("member") as member:
        assert member.post("/api/v1/endpoints", json={
            "pipeline_name": world.pipeline, "name": name, "mode": "elastic"}
        ).status_code == 201
    return name


def fresh_execution(world: World) -> str:
    with world.client("member") as member:
        started = member.post(f"/api/v1/pipelines/{world.pipeline}/run",
                              data={"json_inputs": '{"text": "y"}'})
    assert started.status_code == 201, started.text
    return str(started.json()["execution_id"])


def fill(world: World, method: str, template: str, *, destructive_allowed: bool) -> str:
    """A concrete path for the template, on resources the member owns (fresh ones when an
    allowed call would delete them)."""
    if template.startswith("/api/v1/deployments/") or template.startswith(
            "/api/v1/endpoints/"):
        name = (fresh_deployment(world) if destructive_allowed and method == "DELETE"
                else world.deployment)
    elif template.startswith("/api/v1/environment-variables/"):
        name = "AUTHZ_NO_SUCH_VARIABLE"
    elif template.startswith("/api/v1/metrics/"):
        name = "authz"
    else:
        name = "text"
    changes = {("DELETE", "/api/v1/executions/{execution_id}"),
               ("POST", "/api/v1/executions/{execution_id}/cancel")}
    execution = (fresh_execution(world) if destructive_allowed
                 and (method, template) in changes else world.execution)
    values = {"name": name, "step_name": world.step, "pipeline_name": world.pipeline,
              "execution_id": execution, "input_name": "text", "output_name": "text",
              "user_id": world.user_ids["member"], "environment_id": "here"}
    return template.format(**values)


def allowed(access: Access, caller: str) -> bool:
    if caller == "nobody":
        return False
    if access is Access.OWNER:
        return caller in ("admin", "member")  # the member owns every resource used here
    return KINDS[caller] in _ALLOWED[access]


def send(client: httpx.Client, method: str, path: str) -> httpx.Response:
    if method in ("GET", "DELETE"):
        return client.request(method, path)
    if method == "PUT" and "/runtime/" in path:
        return client.request(method, path, content=b"")
    return client.request(method, path, json={})


CASES = [(method, path, caller) for (method, path), access in sorted(ROUTES.items())
         if access is not Access.PUBLIC for caller in CALLERS]


@pytest.mark.parametrize(("method", "template", "caller"), CASES)
def test_route_by_caller(world: World, method: str, template: str, caller: str) -> None:
    access = ROUTES[(method, template)]
    expected = allowed(access, caller)
    path = fill(world, method, template, destructive_allowed=expected)
    with world.client(caller) as client:
        response = send(client, method, path)
    if caller == "nobody":
        assert response.status_code == 401, response.text
    elif expected:
        assert response.status_code not in (401, 403), response.text
        # 501: what a self-hosted environment does not run (project/unsupported.py)
        assert response.status_code < 500 or response.status_code == 501, response.text
    else:
        assert response.status_code == 403, response.text
    if response.status_code >= 400:
        assert set(response.json()) == {"message", "name", "request_id", "additional_data"}


@pytest.mark.parametrize(("method", "template"), [
    key for key, access in sorted(ROUTES.items())
    if access in (Access.SHARED, Access.RUNNER) and "{execution_id}" in key[1]])
def test_an_execution_token_reaches_only_its_own_execution(world: World, method: str,
                                                            template: str) -> None:
    path = template.format(execution_id=world.other_execution, input_name="text",
                           output_name="text", name="text")
    with world.client("execution") as step:
        response = send(step, method, path)
    assert response.status_code == 403, response.text
    assert response.json()["name"] == "ForbiddenInExecution"


def test_endpoint_tokens_are_shown_to_owner_and_admins_only(world: World) -> None:
    seen = {}
    for caller in ("admin", "member", "other", "viewer"):
        with world.client(caller) as client:
            response = client.get(f"/api/v1/deployments/{world.deployment}")
        assert response.status_code == 200, response.text
        seen[caller] = response.json()["endpoint_token"]
    assert seen["admin"] and seen["admin"] == seen["member"]
    assert seen["other"] is None and seen["viewer"] is None


def test_environment_variable_values_are_hidden_from_viewers_and_steps(world: World
                                                                       ) -> None:
    with world.client("admin") as admin:
        assert admin.put("/api/v1/environment-variables", json={
            "environment_variables": {"AUTHZ_SECRET": "s3cret"}}).status_code == 200
    for caller, visible in (("admin", True), ("member", True), ("viewer", False),
                            ("execution", False)):
        with world.client(caller) as client:
            listed = {v["name"]: v["value"]
                      for v in client.get("/api/v1/environment-variables").json()}
        assert listed["AUTHZ_SECRET"] == ("s3cret" if visible else None), caller


def test_a_member_cannot_touch_what_another_member_owns(world: World) -> None:
    with world.client("other") as other:
        for method, path in (("DELETE", f"/api/v1/deployments/{world.deployment}"),
                             ("POST", f"/api/v1/endpoints/{world.deployment}/generate-new-token"),
                             ("DELETE", f"/api/v1/pipelines/{world.pipeline}"),
                             ("DELETE", f"/api/v1/executions/{world.execution}"),
                             ("POST", f"/api/v1/executions/{world.execution}/cancel")):
            response = send(other, method, path)
            assert response.status_code == 403, response.text
            assert response.json()["name"] == "NotOwner"
    with world.client("member") as member:
        assert member.get(f"/api/v1/deployments/{world.deployment}").status_code == 200
        assert member.get(f"/api/v1/executions/{world.execution}").status_code == 200


def upload_owners(database_url: str, path: str) -> list[str | None]:
    from sqlalchemy import create_engine, select

    from gristmill_platform.db.models.datastore import MultipartUpload
    from gristmill_platform.db.urls import sync_url

    engine = create_engine(sync_url(database_url))
    try:
        with engine.connect() as connection:
            return list(connection.execute(select(MultipartUpload.created_by)
                                           .where(MultipartUpload.path == path)).scalars())
    finally:
        engine.dispose()


def test_deleting_a_user_who_owns_deployments_needs_a_transfer(world: World) -> None:
    from gristmill_platform.errors import AppError

    env, kind = world.env, world.env.database.kind
    email = f"authz-leaver-{kind}@example.com"
    run_admin(env.settings, "create_user", "leaver", email)
    leaver = access_token(env, run_admin(env.settings, "create_token", email).plaintext)
    name = f"authz-leaver-{kind}"
    created = httpx.post(f"{env.url}/api/v1/endpoints", timeout=60,
                         headers={"Authorization": f"Bearer {leaver}"},
                         json={"pipeline_name": world.pipeline, "name": name,
                               "mode": "elastic"})
    assert created.status_code == 201, created.text
    endpoint_token = created.json()["endpoint_token"]
    upload_path = f"authz-leaver-{kind}/half-uploaded.bin"
    started = httpx.post(f"{env.url}/api/v1/data-store/upload/multipart", timeout=60,
                         headers={"Authorization": f"Bearer {leaver}"},
                         json={"path_to_object": upload_path})
    assert started.status_code == 200, started.text

    with pytest.raises(AppError) as refused:
        run_admin(env.settings, "delete_user", email)
    assert refused.value.status_code == 409 and name in refused.value.message
    assert "--transfer-to" in refused.value.message
    with pytest.raises(AppError, match="being deleted"):
        run_admin(env.settings, "delete_user", email, transfer_to=email)

    heir = f"authz-member-{kind}@example.com"
    deleted = run_admin(env.settings, "delete_user", email, transfer_to=heir)
    assert deleted.owned.deployments == [name] and deleted.transferred_to.email == heir
    with world.client("admin") as admin:
        assert admin.get(f"/api/v1/deployments/{name}").json()["created_by"] == \
            world.user_ids["member"]
    assert upload_owners(env.database.url, upload_path) == [world.user_ids["member"]]
    # the deployment keeps working, now as the heir
    called = httpx.post(f"{env.url}/endpoints/{name}", json={"text": "still"}, timeout=120,
                        headers={"Authorization": f"EndpointToken {endpoint_token}"},
                        follow_redirects=True)
    assert called.status_code == 200, called.text
    assert called.json()["outputs"] == {"text": "STILL"}
