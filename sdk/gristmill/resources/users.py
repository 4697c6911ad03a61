"""Users (control plane): who am I, and who is that user id."""

from __future__ import annotations

from typing import Any

from gristmill.resources._base import ClientBase, expect_dict, path_segment


class UsersMixin(ClientBase):
    def who_am_i(self) -> dict[str, Any]:
        """The user owning the SDK token.

        Returns:
            dict with ``id``, ``name`` and ``email``.
        """
        user = expect_dict(
            self._transport.request("GET", self._control_api_url("/users/me")), "GET /users/me"
        )
        return {key: user[key] for key in ("id", "name", "email") if key in user}

    def get_user(self, user_id: str) -> dict[str, Any]:
        """Information about a user, e.g. the ``created_by`` of an execution.

        Args:
            user_id: The id of the user.

        Returns:
            dict with ``id``, ``name`` and ``email``.

        Raises:
            NotFoundError: no user has this id.
        """
        return expect_dict(
            self._transport.request(
                "GET", self._control_api_url(f"/users/{path_segment(user_id)}")
            ),
            "GET /users/{user_id}",
        )
