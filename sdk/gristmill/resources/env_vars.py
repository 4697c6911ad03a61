"""Environment variables: values exposed to every execution of the environment."""

from __future__ import annotations

from typing import Any

from gristmill.resources._base import ClientBase, expect_dict, expect_list, path_segment


def _as_value(value: object) -> str:
    # Variables are strings on the platform; the documentation passes plain numbers
    # (``environment_variable_value=6``), so turn scalars into their text.
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    raise TypeError(
        f"environment_variable_value must be a string (or a number), got {type(value).__name__}."
    )


class EnvironmentVariablesMixin(ClientBase):
    def create_or_update_environment_variable(
        self, environment_variable_name: str, environment_variable_value: str | int | float
    ) -> None:
        """Create a variable, or change its value if it exists.

        Args:
            environment_variable_name: Name of the variable.
            environment_variable_value: Its value (numbers are sent as text).
        """
        self._transport.request(
            "PUT",
            self._api_url("/environment-variables"),
            json={
                "environment_variables": {
                    environment_variable_name: _as_value(environment_variable_value)
                }
            },
        )

    def list_environment_variables(self) -> list[dict[str, Any]]:
        """Every variable of the environment.

        Returns:
            list of dicts with ``name`` and ``value``.
        """
        return expect_list(
            self._transport.request("GET", self._api_url("/environment-variables")),
            "GET /environment-variables",
        )

    def delete_environment_variable(self, environment_variable_name: str) -> dict[str, Any]:
        """Delete a variable.

        Returns:
            The deleted variable as a dict with ``name`` and ``value``.

        Raises:
            NotFoundError: no variable has this name.
        """
        return expect_dict(
            self._transport.request(
                "DELETE",
                self._api_url(f"/environment-variables/{path_segment(environment_variable_name)}"),
            ),
            "DELETE /environment-variables/{name}",
        )
