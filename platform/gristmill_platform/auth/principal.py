"""Who is calling, as established from a valid access token."""

from __future__ import annotations

from dataclasses import dataclass

from gristmill_platform.errors import Forbidden

USER_SCOPE = "user"
EXECUTION_SCOPE = "execution"


@dataclass(frozen=True)
class Principal:
    user_id: str
    token_id: str
    scope: str
    execution_id: str | None
    is_admin: bool
    is_viewer: bool = False

    @property
    def in_execution(self) -> bool:
        return self.scope == EXECUTION_SCOPE

    def require_user_scope(self, action: str) -> None:
        """Execution-scoped tokens (handed to running steps) may not manage the platform.
        (Routes are checked by auth/policy.py; this guards work started off a route.)"""
        if self.scope != USER_SCOPE:
            raise Forbidden(
                f"{action} is not allowed with an execution token: "
                "use your own SDK token outside of the step",
                name="ForbiddenInExecution",
            )
