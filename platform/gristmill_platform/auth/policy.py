"""Who may do what, in one place (pure): the roles, the access rule of every route, and
the checks services make on a resource's owner. docs/authentication.md#roles shows the
same matrix for people; tests/reliability/test_authorization.py walks every route of the
app against it, so a route with no rule here fails the tests (and is refused at run time).

Roles: ``admin`` does everything; ``member`` reads everything, creates, and changes or
deletes only what they own; ``viewer`` only reads. A running step's execution token is
not a role: it may use the data store, record metrics, read its own execution and report
on it, nothing else."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from gristmill_platform.auth.principal import Principal
from gristmill_platform.errors import Forbidden


class Role(StrEnum):
    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"


def role_of(*, is_admin: bool, is_viewer: bool) -> Role:
    if is_admin:
        return Role.ADMIN
    return Role.VIEWER if is_viewer else Role.MEMBER


class Access(StrEnum):
    """The rule of a route."""

    PUBLIC = "public"  # no SDK token: the route checks its own credential (or none)
    READ = "read"  # any user
    SHARED = "shared"  # any user, and execution tokens (their own execution only)
    CREATE = "create"  # admins and members
    OWNER = "owner"  # admins, members on what they own (the service calls require_owner)
    WORK = "work"  # admins, members and execution tokens: data store writes, metrics
    RUNNER = "runner"  # only the execution token of the execution in the path
    ADMIN = "admin"


_P = "/api/v1"
_RUN = f"{_P}/runtime/executions/{{execution_id}}"
_DS = f"{_P}/data-store"

ROUTES: Mapping[tuple[str, str], Access] = {
    # outside /api/v1: probes, the endpoint gateway (endpoint tokens), signed URLs
    ("GET", "/"): Access.PUBLIC,
    ("GET", "/openapi.json"): Access.PUBLIC,
    ("GET", "/docs"): Access.PUBLIC,
    ("GET", "/healthz"): Access.PUBLIC,
    ("GET", "/readyz"): Access.PUBLIC,
    # Prometheus scrapes with GRISTMILL_METRICS_TOKEN, not an SDK token (telemetry/)
    ("GET", "/metrics"): Access.PUBLIC,
    ("POST", "/endpoints/{name}"): Access.PUBLIC,
    ("GET", "/endpoints/{name}/executions/{execution_id}"): Access.PUBLIC,
    ("POST", "/endpoints/{name}/executions/{execution_id}"): Access.PUBLIC,
    ("POST", "/presigned/data-store/upload"): Access.PUBLIC,
    ("PUT", "/presigned/data-store/part"): Access.PUBLIC,
    ("GET", "/presigned/data-store/object"): Access.PUBLIC,
    ("POST", f"{_P}/auth/refresh"): Access.PUBLIC,
    # craft-ai-sdk 0.74: a health check without a token, the results of an endpoint call
    # (endpoint token)
    ("GET", f"{_P}/environment-info"): Access.PUBLIC,
    ("GET", "/endpoints/v1/{name}/executions/{execution_id}"): Access.PUBLIC,
    ("GET", "/endpoints/v1/{name}/executions/{execution_id}/outputs/{output_name}"):
        Access.PUBLIC,
    # project settings (read by the 0.74 SDK, steps included); what is not supported here
    ("GET", f"{_P}/project-information"): Access.SHARED,
    ("GET", f"{_P}/pipeline-templates"): Access.READ,
    ("GET", f"{_P}/pipeline-templates/{{name}}"): Access.READ,
    ("GET", f"{_P}/environments/{{environment_id}}/vector-database"): Access.READ,
    # users
    ("GET", f"{_P}/users/me"): Access.SHARED,
    ("GET", f"{_P}/users/{{user_id}}"): Access.READ,
    # environment variables: the environment's shared configuration; values are hidden
    # from viewers and execution tokens (env_var_values_visible)
    ("GET", f"{_P}/environment-variables"): Access.SHARED,
    ("PUT", f"{_P}/environment-variables"): Access.CREATE,
    ("DELETE", f"{_P}/environment-variables/{{name}}"): Access.CREATE,
    # data store: one store shared by the environment's users and their steps
    ("GET", f"{_DS}/upload"): Access.WORK,
    ("POST", f"{_DS}/download"): Access.SHARED,
    ("GET", f"{_DS}/list"): Access.SHARED,
    ("POST", f"{_DS}/information"): Access.SHARED,
    ("DELETE", f"{_DS}/delete"): Access.WORK,
    ("POST", f"{_DS}/upload/multipart"): Access.WORK,
    ("POST", f"{_DS}/upload/multipart/part"): Access.WORK,
    ("POST", f"{_DS}/upload/multipart/end"): Access.WORK,
    # steps and pipelines
    ("POST", f"{_P}/steps"): Access.CREATE,
    ("GET", f"{_P}/steps"): Access.READ,
    ("GET", f"{_P}/steps/{{step_name}}"): Access.READ,
    ("GET", f"{_P}/steps/{{step_name}}/logs"): Access.READ,
    ("DELETE", f"{_P}/steps/{{step_name}}"): Access.OWNER,
    ("GET", f"{_P}/steps/{{step_name}}/download"): Access.READ,
    ("POST", f"{_P}/pipelines"): Access.CREATE,
    ("GET", f"{_P}/pipelines"): Access.READ,
    ("GET", f"{_P}/pipelines/{{pipeline_name}}"): Access.READ,
    ("GET", f"{_P}/pipelines/{{pipeline_name}}/executions/latest"): Access.READ,
    ("DELETE", f"{_P}/pipelines/{{pipeline_name}}"): Access.OWNER,
    ("GET", f"{_P}/pipelines/{{pipeline_name}}/download"): Access.READ,
    ("POST", f"{_P}/pipelines/{{pipeline_name}}/logs"): Access.READ,
    # runs and executions
    ("POST", f"{_P}/pipelines/{{pipeline_name}}/run"): Access.CREATE,
    ("GET", f"{_P}/pipelines/{{pipeline_name}}/executions"): Access.READ,
    ("GET", f"{_P}/executions/{{execution_id}}"): Access.SHARED,
    ("GET", f"{_P}/executions/{{execution_id}}/outputs"): Access.SHARED,
    ("GET", f"{_P}/executions/{{execution_id}}/inputs/{{input_name}}"): Access.SHARED,
    ("GET", f"{_P}/executions/{{execution_id}}/outputs/{{output_name}}"): Access.SHARED,
    ("POST", f"{_P}/executions/{{execution_id}}/logs"): Access.SHARED,
    ("DELETE", f"{_P}/executions/{{execution_id}}"): Access.OWNER,
    ("POST", f"{_P}/executions/{{execution_id}}/cancel"): Access.OWNER,
    # what the step runner reports
    ("POST", f"{_RUN}/start"): Access.RUNNER,
    ("GET", f"{_RUN}/inputs/{{name}}"): Access.RUNNER,
    ("POST", f"{_RUN}/logs"): Access.RUNNER,
    ("PUT", f"{_RUN}/outputs/{{name}}"): Access.RUNNER,
    ("POST", f"{_RUN}/finish"): Access.RUNNER,
    # a pre-started Kubernetes pool pod asks for its one execution with the pool token of
    # its pod and step (an HMAC the route checks itself); it holds no SDK token yet
    ("POST", f"{_P}/runtime/pool/claim"): Access.PUBLIC,
    # metrics
    ("PUT", f"{_P}/metrics/single-value/{{name}}"): Access.WORK,
    ("POST", f"{_P}/metrics/list-values/{{name}}"): Access.WORK,
    ("GET", f"{_P}/metrics/single-value"): Access.READ,
    ("GET", f"{_P}/metrics/list-values"): Access.READ,
    # deployments
    ("POST", f"{_P}/endpoints"): Access.CREATE,
    ("POST", f"{_P}/periodic-deployment"): Access.CREATE,
    ("GET", f"{_P}/deployments"): Access.READ,
    ("GET", f"{_P}/deployments/{{name}}"): Access.READ,
    ("GET", f"{_P}/deployments/{{name}}/executions/latest"): Access.READ,
    ("GET", f"{_P}/deployments/{{name}}/executions"): Access.READ,
    # an endpoint triggered with an SDK token (craft-ai-sdk 0.74): as running a pipeline
    ("POST", f"{_P}/deployments/{{name}}/executions"): Access.CREATE,
    ("PATCH", f"{_P}/deployments/{{name}}"): Access.OWNER,
    ("DELETE", f"{_P}/deployments/{{name}}"): Access.OWNER,
    ("POST", f"{_P}/deployments/{{name}}/logs"): Access.READ,
    ("POST", f"{_P}/endpoints/{{name}}/generate-new-token"): Access.OWNER,
    # safe rollout (docs/rollout.md): rules and validations are the deployment's owner's
    ("GET", f"{_P}/deployments/{{name}}/traffic"): Access.READ,
    ("PUT", f"{_P}/deployments/{{name}}/traffic"): Access.OWNER,
    ("PUT", f"{_P}/deployments/{{name}}/validations"): Access.OWNER,
    ("POST", f"{_P}/deployments/{{name}}/executions/export"): Access.CREATE,
    # resource metrics of the environment
    ("GET", f"{_P}/resource-metrics"): Access.READ,
}

# The web console (console/) signs people in with a session of its own, not an SDK token;
# it calls the same services, whose checks (require_owner, require_create, the token and
# value visibility rules) apply to it alike. Its pages are outside this table; what a
# viewer may post (or open) there is check_console_request's.
CONSOLE_PREFIX = "/console"
# The console forms a viewer may post: signing out, and their own SDK tokens (a viewer's
# token only reads, as the viewer does). Every other console post changes the platform.
CONSOLE_VIEWER_POSTS = frozenset((
    "/console/sign-out",
    "/console/settings/tokens",
    "/console/settings/tokens/{token_id}/revoke",
))
# Console pages that are nothing but a form a viewer may not post: refused to viewers when
# asked for by address (no link leads a viewer there), rather than a form that fails.
CONSOLE_FORM_PAGES = frozenset((
    "/console/pipelines/{name}/deploy",
))
# Methods that read: the console asks no CSRF token for them, and a viewer may use them
# (but on CONSOLE_FORM_PAGES).
READ_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))

# who passes each rule at the route (OWNER is then checked on the resource itself)
_ALLOWED: Mapping[Access, frozenset[str]] = {
    Access.PUBLIC: frozenset(("admin", "member", "viewer", "execution")),
    Access.READ: frozenset(("admin", "member", "viewer")),
    Access.SHARED: frozenset(("admin", "member", "viewer", "execution")),
    Access.CREATE: frozenset(("admin", "member")),
    Access.OWNER: frozenset(("admin", "member")),
    Access.WORK: frozenset(("admin", "member", "execution")),
    Access.RUNNER: frozenset(("execution",)),
    Access.ADMIN: frozenset(("admin",)),
}


def kind_of(principal: Principal) -> str:
    """The row of the matrix a caller is on: its role, or "execution"."""
    if principal.in_execution:
        return "execution"
    return role_of(is_admin=principal.is_admin, is_viewer=principal.is_viewer).value


@dataclass(frozen=True)
class _Template:
    method: str
    path: str
    pattern: re.Pattern[str]


def _compile(method: str, path: str) -> _Template:
    regex = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path))
    return _Template(method, path, re.compile(f"^{regex}$"))


_TEMPLATES = tuple(_compile(method, path) for method, path in ROUTES)


def rule_for(method: str, path: str, route_path: str | None = None) -> tuple[str, Access] | None:
    """The route template a request path falls under, and its rule. ``route_path`` (the
    matched route's own template, without the prefix it was included under) settles paths
    two templates match (``/users/me`` and ``/users/{user_id}``)."""
    found = [t for t in _TEMPLATES if t.method == method and t.pattern.match(path)]
    if route_path and len(found) > 1:
        found = [t for t in found if t.path.endswith(route_path)] or found
    if not found:
        return None
    return found[0].path, ROUTES[(method, found[0].path)]


def check_route(principal: Principal, method: str, path: str, route_path: str | None,
                path_params: Mapping[str, str]) -> None:
    """Raise 403 unless the caller passes the rule of the route it called."""
    rule = rule_for(method, path, route_path)
    if rule is None:
        # refuse rather than guess: every route must be in ROUTES
        raise Forbidden(f"No access rule covers {method} {path}", name="UnclassifiedRoute")
    template, access = rule
    kind = kind_of(principal)
    if kind not in _ALLOWED[access]:
        raise _refusal(kind, access, f"{method} {template}")
    if kind == "execution":
        execution_id = path_params.get("execution_id")
        if execution_id is not None and execution_id != principal.execution_id:
            raise Forbidden("An execution token may only reach its own execution",
                            name="ForbiddenInExecution")


def check_console_request(principal: Principal, method: str, route_path: str | None) -> None:
    """Raise 403 when a viewer's console session posts a form that changes the platform,
    or asks for a page that is only such a form.
    The console's routes are not in ROUTES; without this, a form whose service checks no
    role (the data store's uploads and deletes, environment variables) was a viewer's to
    use. A viewer reads every page but the forms of CONSOLE_FORM_PAGES."""
    if kind_of(principal) != "viewer":
        return
    if method in READ_METHODS:
        if route_path in CONSOLE_FORM_PAGES:
            raise _refusal("viewer", Access.CREATE, f"The form at {route_path}")
        return
    if route_path in CONSOLE_VIEWER_POSTS:
        return
    raise _refusal("viewer", Access.CREATE, f"{method} {route_path or 'this page'}")


def _refusal(kind: str, access: Access, what: str) -> Forbidden:
    if kind == "execution":
        return Forbidden(f"{what} is not allowed with an execution token: use your own SDK "
                         "token outside of the step", name="ForbiddenInExecution")
    if access is Access.RUNNER:
        return Forbidden(f"{what} is for the worker of the execution only")
    if kind == "viewer":
        return Forbidden(f"{what} is not allowed for a viewer: viewers may only read",
                         name="ForbiddenForRole")
    return Forbidden(f"{what} needs the admin role", name="ForbiddenForRole")


def require_owner(principal: Principal, owner_id: str | None, what: str) -> None:
    """Changing or deleting a resource: its owner or an admin (members may not touch what
    other users own; viewers and execution tokens nothing)."""
    kind = kind_of(principal)
    if kind == "admin" or (kind == "member" and owner_id == principal.user_id):
        return
    if kind == "execution":
        raise _refusal(kind, Access.OWNER, f"Changing {what}")
    raise Forbidden(f"{what} belongs to another user: only its owner or an admin may "
                    "change or delete it", name="NotOwner",
                    additional_data={"owner": owner_id})


def endpoint_token_visible(principal: Principal, owner_id: str | None) -> bool:
    """An endpoint token is shown to the deployment's owner and to admins only."""
    kind = kind_of(principal)
    return kind == "admin" or (kind == "member" and owner_id == principal.user_id)


def env_var_values_visible(principal: Principal) -> bool:
    """Environment variable values (often secrets) are shown to admins and members; a step
    gets its values in its own environment, never through the API."""
    return kind_of(principal) in ("admin", "member")


def require_create(principal: Principal, action: str) -> None:
    """Creating or running something (services check it too, for callers other than the
    API routes): admins and members."""
    kind = kind_of(principal)
    if kind not in _ALLOWED[Access.CREATE]:
        raise _refusal(kind, Access.CREATE, action)


def require_own_execution(principal: Principal, execution_id: str, action: str) -> None:
    """An execution token acts for its own execution only (users are not limited here)."""
    if principal.in_execution and principal.execution_id != execution_id:
        raise Forbidden(f"{action}: an execution token may only act for its own execution",
                        name="ForbiddenInExecution")


def require_runner(principal: Principal, execution_id: str) -> None:
    """Reports on an execution (start, logs, outputs, finish) come from its worker only."""
    if not principal.in_execution or principal.execution_id != execution_id:
        raise Forbidden("Only the worker of this execution may report on it")
