"""Metrics: numbers a step records for its execution, and reading them back (contract §10).

Recording only makes sense inside an execution: elsewhere the calls warn and return
``False`` without a request, so the same code runs in a notebook and in a step.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from typing import Any

from gristmill._execution_context import current_execution_id
from gristmill.errors import InvalidResponseError
from gristmill.resources._base import ClientBase, expect_dict, expect_list, path_segment

LIST_VALUES_PER_REQUEST = 10_000
METRICS_PER_PAGE = 5_000


def _number(value: Any) -> Any:
    """A JSON number: NumPy scalars (``np.float32`` from a model's score...) become floats."""
    if isinstance(value, bool | int | float) or not hasattr(value, "__float__"):
        return value
    # Integer scalars (np.int64) have __index__; keep them integers.
    return int(value) if hasattr(value, "__index__") else float(value)


class MetricsMixin(ClientBase):
    warn_on_metric_outside_of_step: bool = True

    def _execution_for_metric(self, function: str) -> str | None:
        execution_id = current_execution_id()
        if execution_id is None and self.warn_on_metric_outside_of_step:
            warnings.warn(
                f"{function}() only records inside an execution (a step running on the "
                "platform); outside one nothing is sent. Pass "
                "warn_on_metric_outside_of_step=False to the client to silence this.",
                stacklevel=3,
            )
        return execution_id

    def record_metric_value(self, name: str, value: float) -> bool:
        """Record (or overwrite) the metric ``name`` of the current execution.

        Returns:
            True if sent; False outside an execution (nothing is sent).
        """
        execution_id = self._execution_for_metric("record_metric_value")
        if execution_id is None:
            return False
        self._transport.request(
            "PUT",
            self._api_url(f"/metrics/single-value/{path_segment(name)}"),
            json={"value": _number(value), "execution_id": execution_id},
        )
        return True

    def record_list_metric_values(self, name: str, values: float | Iterable[float]) -> bool:
        """Append one value or a list of values to the list metric ``name`` of the
        current execution.

        Returns:
            True if sent; False outside an execution (nothing is sent).
        """
        execution_id = self._execution_for_metric("record_list_metric_values")
        if execution_id is None:
            return False
        many = isinstance(values, Iterable) and not isinstance(values, str | bytes)
        batch = [_number(v) for v in (values if many else [values])]  # type: ignore[union-attr]
        url = self._api_url(f"/metrics/list-values/{path_segment(name)}")
        for start in range(0, len(batch), LIST_VALUES_PER_REQUEST):
            self._transport.request(
                "POST",
                url,
                json={
                    "values": batch[start : start + LIST_VALUES_PER_REQUEST],
                    "execution_id": execution_id,
                },
            )
        return True

    def iter_metrics(
        self,
        name: str | None = None,
        pipeline_name: str | None = None,
        deployment_name: str | None = None,
        execution_id: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Like ``get_metrics``, fetched page by page as you iterate."""
        return self._iter_metric_pages(
            "single-value", name, pipeline_name, deployment_name, execution_id
        )

    def get_metrics(
        self,
        name: str | None = None,
        pipeline_name: str | None = None,
        deployment_name: str | None = None,
        execution_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Recorded metrics, filtered by name, pipeline, deployment or execution.

        Returns:
            list of dicts with ``name``, ``value``, ``created_at``, ``execution_id``,
            ``deployment_name`` and ``pipeline_name``.
        """
        return list(self.iter_metrics(name, pipeline_name, deployment_name, execution_id))

    def iter_list_metrics(
        self,
        name: str | None = None,
        pipeline_name: str | None = None,
        deployment_name: str | None = None,
        execution_id: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Like ``get_list_metrics``, fetched page by page as you iterate."""
        return self._iter_metric_pages(
            "list-values", name, pipeline_name, deployment_name, execution_id
        )

    def get_list_metrics(
        self,
        name: str | None = None,
        pipeline_name: str | None = None,
        deployment_name: str | None = None,
        execution_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Values of list metrics, one dict per value, filtered as ``get_metrics``."""
        return list(self.iter_list_metrics(name, pipeline_name, deployment_name, execution_id))

    def _iter_metric_pages(
        self,
        kind: str,
        name: str | None,
        pipeline_name: str | None,
        deployment_name: str | None,
        execution_id: str | None,
    ) -> Iterator[dict[str, Any]]:
        what = f"GET /metrics/{kind}"
        params: dict[str, Any] = {
            f"filters[{key}]": value
            for key, value in (
                ("name", name),
                ("pipeline_name", pipeline_name),
                ("deployment_name", deployment_name),
                ("execution_id", execution_id),
            )
            if value is not None
        }
        params["items_per_page"] = METRICS_PER_PAGE
        seen = 0
        page = 1
        while True:
            params["page"] = page
            body = expect_dict(
                self._transport.request("GET", self._api_url(f"/metrics/{kind}"), params=params),
                what,
            )
            items = expect_list(body.get("metrics", []), what)
            total = body.get("total_count")
            if isinstance(total, bool) or not isinstance(total, int):
                raise InvalidResponseError(f"{what} returned no integer 'total_count'.")
            yield from items
            seen += len(items)
            if seen >= total:
                return
            if not items:
                # craft-ai-sdk would ask for the next page forever.
                raise InvalidResponseError(
                    f"{what} page {page} is empty although total_count says {total} "
                    f"metrics and only {seen} came."
                )
            page += 1
