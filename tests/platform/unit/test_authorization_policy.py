"""The authorization policy (auth/policy.py) on its own: pure, so every decision and every
refusal (status, message, name) is checked here without an app; the whole app is walked
route by route in tests/reliability/test_authorization.py. Fast enough to run per mutant
(tests/mutation/modules.toml)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from gristmill_platform.auth import policy
from gristmill_platform.auth.policy import (
    CONSOLE_PREFIX,
    ROUTES,
    Access,
    Role,
    check_console_request,
    check_route,
    endpoint_token_visible,
    env_var_values_visible,
    kind_of,
    require_create,
    require_own_execution,
    require_owner,
    require_runner,
    role_of,
    rule_for,
)
from gristmill_platform.auth.principal import EXECUTION_SCOPE, USER_SCOPE, Principal
from gristmill_platform.errors import Forbidden

ADMIN = Principal("u-admin", "t-admin", USER_SCOPE, None, is_admin=True)
MEMBER = Principal("u-member", "t-member", USER_SCOPE, None, is_admin=False)
VIEWER = Principal("u-viewer", "t-viewer", USER_SCOPE, None, is_admin=False, is_viewer=True)
# an execution token carries its creator's user (and their roles): the scope decides
STEP = Principal("u-member", "t-step", EXECUTION_SCOPE, "e-1", is_admin=False)
ADMIN_STEP = Principal("u-admin", "t-astep", EXECUTION_SCOPE, "e-1", is_admin=True)
VIEWER_STEP = Principal("u-viewer", "t-vstep", EXECUTION_SCOPE, "e-1", is_admin=False,
                        is_viewer=True)
CALLERS = {"admin": ADMIN, "member": MEMBER, "viewer": VIEWER, "execution": STEP}

EXECUTION_TOKEN = ("is not allowed with an execution token: use your own SDK token "
                   "outside of the step")
VIEWERS_READ = "is not allowed for a viewer: viewers may only read"
OWN_EXECUTION = "An execution token may only reach its own execution"


def refusal(raised: pytest.ExceptionInfo[Forbidden]) -> tuple[int, str, str]:
    return raised.value.status_code, raised.value.name, raised.value.message


@pytest.mark.parametrize(("is_admin", "is_viewer", "role"), [
    (True, False, Role.ADMIN),
    (True, True, Role.ADMIN),  # admin wins over a stray viewer flag
    (False, False, Role.MEMBER),
    (False, True, Role.VIEWER),
])
def test_role_of_flags(is_admin: bool, is_viewer: bool, role: Role) -> None:
    assert role_of(is_admin=is_admin, is_viewer=is_viewer) is role


@pytest.mark.parametrize(("principal", "kind"), [
    (ADMIN, "admin"), (MEMBER, "member"), (VIEWER, "viewer"),
    (STEP, "execution"), (ADMIN_STEP, "execution"), (VIEWER_STEP, "execution"),
])
def test_kind_of_is_the_role_or_execution(principal: Principal, kind: str) -> None:
    assert kind_of(principal) == kind


# -- route templates --------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path", "template", "access"), [
    ("GET", "/healthz", "/healthz", Access.PUBLIC),
    ("GET", "/api/v1/steps/my-step", "/api/v1/steps/{step_name}", Access.READ),
    ("DELETE", "/api/v1/steps/my-step", "/api/v1/steps/{step_name}", Access.OWNER),
    ("POST", "/api/v1/steps", "/api/v1/steps", Access.CREATE),
    ("GET", "/api/v1/steps/my-step/logs", "/api/v1/steps/{step_name}/logs", Access.READ),
    ("GET", "/api/v1/executions/e-9", "/api/v1/executions/{execution_id}", Access.SHARED),
    ("GET", "/api/v1/executions/e-9/inputs/x",
     "/api/v1/executions/{execution_id}/inputs/{input_name}", Access.SHARED),
    ("POST", "/api/v1/runtime/executions/e-9/start",
     "/api/v1/runtime/executions/{execution_id}/start", Access.RUNNER),
    ("PUT", "/api/v1/metrics/single-value/loss",
     "/api/v1/metrics/single-value/{name}", Access.WORK),
    ("POST", "/endpoints/my-endpoint", "/endpoints/{name}", Access.PUBLIC),
    ("PUT", "/api/v1/deployments/d/traffic", "/api/v1/deployments/{name}/traffic",
     Access.OWNER),
    ("GET", "/api/v1/deployments/d/traffic", "/api/v1/deployments/{name}/traffic",
     Access.READ),
    # a parameter value may hold what a regular expression would read as syntax
    ("GET", "/api/v1/steps/a.b+c(d)", "/api/v1/steps/{step_name}", Access.READ),
])
def test_rule_for_matches_the_template(method: str, path: str, template: str,
                                       access: Access) -> None:
    assert rule_for(method, path) == (template, access)


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/v1/nothing-here"),
    ("PATCH", "/api/v1/steps/my-step"),  # a known path, not with this method
    ("get", "/api/v1/steps/my-step"),  # methods are upper case, as ASGI gives them
    ("GET", "/api/v1/steps/a/b"),  # a parameter is one path segment
    ("GET", "/api/v1/steps/"),  # and not empty
    ("GET", "/api/v1/steps/x/logs/more"),  # anchored at the end
    ("GET", "/prefix/api/v1/steps/x"),  # and at the start
    ("GET", "/healthzz"),
    ("GET", f"{CONSOLE_PREFIX}/"),  # console pages are not in the table
    ("GET", f"{CONSOLE_PREFIX}/api/v1/steps"),
])
def test_rule_for_unknown_routes_is_none(method: str, path: str) -> None:
    assert rule_for(method, path) is None
    assert rule_for(method, path, path) is None


def test_every_route_of_the_table_matches_itself() -> None:
    for (method, template), access in ROUTES.items():
        path = template.replace("{", "").replace("}", "")  # a value for each parameter
        assert rule_for(method, template) == (template, access), template
        assert rule_for(method, path, template) == (template, access), template


def test_compile_turns_parameters_into_one_segment() -> None:
    compiled = policy._compile("PUT", "/a.b/{x}/c/{y_z}")
    assert (compiled.method, compiled.path) == ("PUT", "/a.b/{x}/c/{y_z}")
    assert compiled.pattern.match("/a.b/1/c/two")
    assert compiled.pattern.match("/a.b/{x}/c/{y_z}")
    for other in ("/aXb/1/c/2", "/a.b/1/c", "/a.b//c/2", "/a.b/1/2/c/3", "/a.b/1/c/2/",
                  "x/a.b/1/c/2", "/a.b/1/c/2x/y"):
        assert not compiled.pattern.match(other), other


def test_two_templates_are_settled_by_the_matched_route() -> None:
    me, user = "/api/v1/users/me", "/api/v1/users/{user_id}"
    # /users/me is both; the route FastAPI matched (without its prefix) decides
    assert rule_for("GET", me, "/users/me") == (me, Access.SHARED)
    assert rule_for("GET", me, "/users/{user_id}") == (user, Access.READ)
    assert rule_for("GET", me, user) == (user, Access.READ)
    # without it, or with one neither ends with, the first in the table
    assert rule_for("GET", me) == (me, Access.SHARED)
    assert rule_for("GET", me, None) == (me, Access.SHARED)
    assert rule_for("GET", me, "") == (me, Access.SHARED)
    assert rule_for("GET", me, "/elsewhere") == (me, Access.SHARED)
    # one match: the route path cannot change it
    assert rule_for("GET", "/api/v1/users/u-1", "/users/me") == (user, Access.READ)


# -- check_route: the matrix ------------------------------------------------------------

# one route of each rule, and who passes it
MATRIX: list[tuple[str, str, Access, set[str]]] = [
    ("GET", "/healthz", Access.PUBLIC, {"admin", "member", "viewer", "execution"}),
    ("GET", "/api/v1/steps", Access.READ, {"admin", "member", "viewer"}),
    ("GET", "/api/v1/data-store/list", Access.SHARED,
     {"admin", "member", "viewer", "execution"}),
    ("POST", "/api/v1/steps", Access.CREATE, {"admin", "member"}),
    ("DELETE", "/api/v1/steps/s", Access.OWNER, {"admin", "member"}),
    ("DELETE", "/api/v1/data-store/delete", Access.WORK, {"admin", "member", "execution"}),
    ("POST", "/api/v1/runtime/executions/e-1/finish", Access.RUNNER, {"execution"}),
]


@pytest.mark.parametrize(("method", "path", "access", "allowed"), MATRIX)
@pytest.mark.parametrize("kind", sorted(CALLERS))
def test_check_route_matrix(method: str, path: str, access: Access, allowed: set[str],
                            kind: str) -> None:
    rule = rule_for(method, path)
    assert rule is not None and rule[1] is access
    params = {"execution_id": "e-1"} if "/executions/" in path else {}
    if kind in allowed:
        check_route(CALLERS[kind], method, path, None, params)
        return
    with pytest.raises(Forbidden):
        check_route(CALLERS[kind], method, path, None, params)


@pytest.mark.parametrize(("principal", "method", "path", "expected"), [
    (STEP, "GET", "/api/v1/steps", (
        403, "ForbiddenInExecution", f"GET /api/v1/steps {EXECUTION_TOKEN}")),
    # in no template: refused before the caller is even looked at (None: UnclassifiedRoute)
    (ADMIN_STEP, "POST", "/api/v1/steps/", None),
    (STEP, "DELETE", "/api/v1/steps/s", (
        403, "ForbiddenInExecution", f"DELETE /api/v1/steps/{{step_name}} {EXECUTION_TOKEN}")),
    (VIEWER, "POST", "/api/v1/steps", (
        403, "ForbiddenForRole", f"POST /api/v1/steps {VIEWERS_READ}")),
    (VIEWER, "PUT", "/api/v1/metrics/single-value/loss", (
        403, "ForbiddenForRole", f"PUT /api/v1/metrics/single-value/{{name}} {VIEWERS_READ}")),
    # RUNNER before the role: nobody but the worker, whatever the role
    (MEMBER, "POST", "/api/v1/runtime/executions/e-1/start", (
        403, "Forbidden", "POST /api/v1/runtime/executions/{execution_id}/start "
        "is for the worker of the execution only")),
    (ADMIN, "POST", "/api/v1/runtime/executions/e-1/logs", (
        403, "Forbidden", "POST /api/v1/runtime/executions/{execution_id}/logs "
        "is for the worker of the execution only")),
    (VIEWER, "PUT", "/api/v1/runtime/executions/e-1/outputs/o", (
        403, "Forbidden", "PUT /api/v1/runtime/executions/{execution_id}/outputs/{name} "
        "is for the worker of the execution only")),
])
def test_check_route_refusals(principal: Principal, method: str, path: str,
                              expected: tuple[int, str, str] | None) -> None:
    if expected is None:
        expected = (403, "UnclassifiedRoute", f"No access rule covers {method} {path}")
    with pytest.raises(Forbidden) as raised:
        check_route(principal, method, path, None, {"execution_id": "e-1"})
    assert refusal(raised) == expected


@pytest.mark.parametrize("principal", [ADMIN, MEMBER, VIEWER, STEP])
def test_a_route_missing_from_the_table_is_refused_to_everyone(principal: Principal) -> None:
    with pytest.raises(Forbidden) as raised:
        check_route(principal, "GET", "/api/v1/secret-new-route", None, {})
    assert refusal(raised) == (
        403, "UnclassifiedRoute", "No access rule covers GET /api/v1/secret-new-route")


def test_check_route_uses_the_matched_route_path() -> None:
    # /users/me is SHARED but /users/{user_id} READ: the route path decides for a step
    check_route(STEP, "GET", "/api/v1/users/me", "/users/me", {})
    with pytest.raises(Forbidden) as raised:
        check_route(STEP, "GET", "/api/v1/users/me", "/users/{user_id}", {"user_id": "me"})
    assert refusal(raised) == (
        403, "ForbiddenInExecution", f"GET /api/v1/users/{{user_id}} {EXECUTION_TOKEN}")


@pytest.mark.parametrize(("principal", "method", "path"), [
    (STEP, "GET", "/api/v1/executions/e-2"),
    (STEP, "POST", "/api/v1/executions/e-2/logs"),
    (STEP, "POST", "/api/v1/runtime/executions/e-2/finish"),
    (ADMIN_STEP, "GET", "/api/v1/runtime/executions/e-2/inputs/x"),
])
def test_an_execution_token_only_reaches_its_own_execution(principal: Principal,
                                                           method: str, path: str) -> None:
    with pytest.raises(Forbidden) as raised:
        check_route(principal, method, path, None, {"execution_id": "e-2"})
    assert refusal(raised) == (403, "ForbiddenInExecution", OWN_EXECUTION)
    # its own one passes
    check_route(principal, method, path.replace("e-2", "e-1"), None, {"execution_id": "e-1"})


@pytest.mark.parametrize("principal", [ADMIN, MEMBER, VIEWER])
def test_users_reach_any_execution(principal: Principal) -> None:
    params: Mapping[str, str] = {"execution_id": "e-2"}
    check_route(principal, "GET", "/api/v1/executions/e-2", None, params)
    check_route(principal, "GET", "/api/v1/executions/e-2/outputs", None, params)


def test_a_step_passes_routes_without_an_execution_id() -> None:
    for principal in (STEP, ADMIN_STEP):
        check_route(principal, "GET", "/api/v1/data-store/list", None, {})
        check_route(principal, "PUT", "/api/v1/metrics/single-value/loss", None,
                    {"name": "loss"})
        check_route(principal, "GET", "/api/v1/users/me", "/users/me", {})


# -- refusals ---------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "access", "expected"), [
    ("execution", Access.READ, ("ForbiddenInExecution", f"Doing X {EXECUTION_TOKEN}")),
    ("execution", Access.ADMIN, ("ForbiddenInExecution", f"Doing X {EXECUTION_TOKEN}")),
    ("member", Access.RUNNER, ("Forbidden", "Doing X is for the worker of the execution only")),
    ("viewer", Access.RUNNER, ("Forbidden", "Doing X is for the worker of the execution only")),
    ("viewer", Access.CREATE, ("ForbiddenForRole", f"Doing X {VIEWERS_READ}")),
    ("viewer", Access.ADMIN, ("ForbiddenForRole", f"Doing X {VIEWERS_READ}")),
    ("member", Access.ADMIN, ("ForbiddenForRole", "Doing X needs the admin role")),
])
def test_refusal_by_kind_and_rule(kind: str, access: Access,
                                  expected: tuple[str, str]) -> None:
    error = policy._refusal(kind, access, "Doing X")
    assert isinstance(error, Forbidden)
    assert (error.status_code, error.name, error.message) == (403, *expected)
    assert error.additional_data is None


# -- ownership --------------------------------------------------------------------------

@pytest.mark.parametrize(("principal", "owner"), [
    (ADMIN, "u-admin"), (ADMIN, "u-member"), (ADMIN, None),
    (MEMBER, "u-member"),
])
def test_owner_or_admin_may_change(principal: Principal, owner: str | None) -> None:
    require_owner(principal, owner, "Step 's'")


@pytest.mark.parametrize(("principal", "owner"), [
    (MEMBER, "u-admin"), (MEMBER, None),
    (VIEWER, "u-admin"), (VIEWER, "u-viewer"),  # a viewer may not touch even their own
])
def test_others_may_not_change(principal: Principal, owner: str | None) -> None:
    with pytest.raises(Forbidden) as raised:
        require_owner(principal, owner, "Step 's'")
    assert refusal(raised) == (
        403, "NotOwner",
        "Step 's' belongs to another user: only its owner or an admin may change or delete it")
    assert raised.value.additional_data == {"owner": owner}


@pytest.mark.parametrize("principal", [STEP, ADMIN_STEP])
def test_an_execution_token_changes_nothing_even_its_owners(principal: Principal) -> None:
    with pytest.raises(Forbidden) as raised:
        require_owner(principal, principal.user_id, "Step 's'")
    assert refusal(raised) == (
        403, "ForbiddenInExecution", f"Changing Step 's' {EXECUTION_TOKEN}")
    assert raised.value.additional_data is None


@pytest.mark.parametrize(("principal", "owner", "visible"), [
    (ADMIN, "u-member", True), (ADMIN, None, True),
    (MEMBER, "u-member", True), (MEMBER, "u-admin", False), (MEMBER, None, False),
    (VIEWER, "u-viewer", False), (VIEWER, "u-admin", False),
    (STEP, "u-member", False), (ADMIN_STEP, "u-admin", False),
])
def test_endpoint_token_visible_to_owner_and_admins(principal: Principal, owner: str | None,
                                                    visible: bool) -> None:
    assert endpoint_token_visible(principal, owner) is visible


@pytest.mark.parametrize(("principal", "visible"), [
    (ADMIN, True), (MEMBER, True), (VIEWER, False), (STEP, False), (ADMIN_STEP, False),
])
def test_env_var_values_visible_to_admins_and_members(principal: Principal,
                                                      visible: bool) -> None:
    assert env_var_values_visible(principal) is visible


# -- services' own checks ---------------------------------------------------------------

@pytest.mark.parametrize("principal", [ADMIN, MEMBER])
def test_admins_and_members_create(principal: Principal) -> None:
    require_create(principal, "Creating a step")


@pytest.mark.parametrize(("principal", "expected"), [
    (VIEWER, ("ForbiddenForRole", f"Creating a step {VIEWERS_READ}")),
    (STEP, ("ForbiddenInExecution", f"Creating a step {EXECUTION_TOKEN}")),
    (ADMIN_STEP, ("ForbiddenInExecution", f"Creating a step {EXECUTION_TOKEN}")),
])
def test_others_may_not_create(principal: Principal, expected: tuple[str, str]) -> None:
    with pytest.raises(Forbidden) as raised:
        require_create(principal, "Creating a step")
    assert refusal(raised) == (403, *expected)


@pytest.mark.parametrize("principal", [ADMIN, MEMBER, VIEWER])
def test_users_are_not_limited_to_one_execution(principal: Principal) -> None:
    require_own_execution(principal, "e-2", "Recording a metric")
    # even a user-scoped principal carrying an execution id: the scope decides
    require_own_execution(
        Principal(principal.user_id, "t", USER_SCOPE, "e-1", principal.is_admin,
                  principal.is_viewer), "e-2", "Recording a metric")


def test_an_execution_token_acts_for_its_own_execution_only() -> None:
    require_own_execution(STEP, "e-1", "Recording a metric")
    with pytest.raises(Forbidden) as raised:
        require_own_execution(STEP, "e-2", "Recording a metric")
    assert refusal(raised) == (
        403, "ForbiddenInExecution",
        "Recording a metric: an execution token may only act for its own execution")


def test_only_the_worker_of_the_execution_reports() -> None:
    require_runner(STEP, "e-1")
    require_runner(ADMIN_STEP, "e-1")
    strangers = [ADMIN, MEMBER, VIEWER,
                 Principal("u-admin", "t", USER_SCOPE, "e-1", is_admin=True)]
    for principal in strangers:
        with pytest.raises(Forbidden) as raised:
            require_runner(principal, "e-1")
        assert refusal(raised) == (
            403, "Forbidden", "Only the worker of this execution may report on it")
    with pytest.raises(Forbidden) as raised:
        require_runner(STEP, "e-2")
    assert refusal(raised) == (
        403, "Forbidden", "Only the worker of this execution may report on it")


# -- the console's forms ----------------------------------------------------------------------

@pytest.mark.parametrize("route_path", sorted(policy.CONSOLE_VIEWER_POSTS))
@pytest.mark.parametrize("principal", [ADMIN, MEMBER, VIEWER], ids=["admin", "member", "viewer"])
def test_everyone_signed_in_may_sign_out_and_manage_their_tokens(principal: Principal,
                                                                route_path: str) -> None:
    check_console_request(principal, "POST", route_path)


@pytest.mark.parametrize("route_path", [
    "/console/data-store/delete", "/console/data-store/upload-url",
    "/console/data-store/multipart", "/console/environment-variables",
    "/console/environment-variables/{name}/delete", "/console/pipelines/{name}/deploy",
    "/console/executions/{execution_id}/run-again", "/console/settings/users", None])
def test_a_viewer_may_not_post_what_changes_the_platform(route_path: str | None) -> None:
    with pytest.raises(Forbidden) as raised:
        check_console_request(VIEWER, "POST", route_path)
    what = route_path or "this page"
    assert refusal(raised) == (403, "ForbiddenForRole", f"POST {what} {VIEWERS_READ}")
    # members and admins pass here: the services check ownership and admin rights
    check_console_request(MEMBER, "POST", route_path)
    check_console_request(ADMIN, "POST", route_path)


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_a_viewer_may_read_every_console_page(method: str) -> None:
    check_console_request(VIEWER, method, "/console/data-store/delete")
    check_console_request(VIEWER, method, "/console/pipelines/{name}")
    check_console_request(VIEWER, method, None)


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_a_viewer_may_not_open_a_page_that_is_only_a_form(method: str) -> None:
    assert {"/console/pipelines/{name}/deploy"} == policy.CONSOLE_FORM_PAGES
    with pytest.raises(Forbidden) as raised:
        check_console_request(VIEWER, method, "/console/pipelines/{name}/deploy")
    assert refusal(raised) == (
        403, "ForbiddenForRole", f"The form at /console/pipelines/{{name}}/deploy {VIEWERS_READ}")
    check_console_request(MEMBER, method, "/console/pipelines/{name}/deploy")
    check_console_request(ADMIN, method, "/console/pipelines/{name}/deploy")


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_every_method_that_is_not_a_read_counts_as_a_post(method: str) -> None:
    with pytest.raises(Forbidden):
        check_console_request(VIEWER, method, "/console/environment-variables")
