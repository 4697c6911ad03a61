"""Deployments and endpoints (contract §4), and resource metrics (§10.5)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from enum import Enum
from typing import Any

import httpx

from gristmill._transport import FileParts, decode_response
from gristmill.errors import CreationFailedError, CreationTimeoutError
from gristmill.io import InputSource, OutputDestination
from gristmill.resources._base import (
    ClientBase,
    expect_dict,
    expect_list,
    expect_str,
    path_segment,
)

_REDIRECTS = (301, 302, 303, 307, 308)
# the server holds result requests (20 s by default) before redirecting to itself
_ENDPOINT_READ_S = 300.0


class _Unset(Enum):
    """A keyword left out, where None says something (no execution timeout)."""

    UNSET = "unset"


def _millis(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def _check_mapping(value: object, what: str, of: str, *, required: bool = False) -> None:
    if (value is not None or required) and not isinstance(value, Mapping):
        raise TypeError(f"'{what}' must be a mapping of {of}, not {type(value).__name__}.")


def _replayable_files(file_inputs: Mapping[str, Any]) -> Callable[[], FileParts]:
    """The multipart files of an endpoint call, rebuilt for each try: a seekable file is
    rewound to where it was, a stream that cannot be is read once and its bytes resent."""
    starts: dict[str, int] = {}
    contents: dict[str, Any] = {}
    for key, value in file_inputs.items():
        seekable = getattr(value, "seekable", None)
        if callable(seekable) and seekable():
            starts[key] = value.tell()
            contents[key] = value
        else:
            contents[key] = value.read()
    names = {key: str(getattr(value, "name", key)).rsplit("/", 1)[-1]
             for key, value in file_inputs.items()}

    def build() -> FileParts:
        for key, position in starts.items():
            contents[key].seek(position)
        return {key: (names[key], contents[key]) for key in file_inputs}

    return build


class DeploymentsMixin(ClientBase):
    def create_deployment(
        self,
        pipeline_name: str,
        deployment_name: str,
        execution_rule: str,
        mode: str = "elastic",
        schedule: str | None = None,
        inputs_mapping: Sequence[InputSource] | None = None,
        outputs_mapping: Sequence[OutputDestination] | None = None,
        description: str | None = None,
        enable_parallel_executions: bool | None = None,
        max_parallel_executions_per_pod: int | None = None,
        ram_request: str | None = None,
        gpu_request: int | None = None,
        timeout_s: float = 180,
        *,
        execution_timeout_s: int | None = None,
    ) -> dict[str, Any]:
        """Deploy a pipeline as an endpoint or on a cron schedule (UTC); waits for a
        low-latency worker to be up. Returns the deployment (with ``endpoint_token`` for
        endpoints, ``schedule`` and ``human_readable_schedule`` for periodic ones).

        ``timeout_s`` is how long this call waits for the deployment to be up;
        ``execution_timeout_s`` (whole seconds, 1 to 7 days; None: no limit) the longest an
        execution of the deployment may run (docs/deployments.md#execution-timeout)."""
        if execution_rule not in ("endpoint", "periodic"):
            raise ValueError("execution_rule must be 'endpoint' or 'periodic'")
        body: dict[str, Any] = {"pipeline_name": pipeline_name, "name": deployment_name,
                                "mode": mode}
        optional = {"description": description, "schedule": schedule,
                    "enable_parallel_executions": enable_parallel_executions,
                    "max_parallel_executions_per_pod": max_parallel_executions_per_pod,
                    "ram_request": ram_request, "gpu_request": gpu_request,
                    "execution_timeout_s": execution_timeout_s}
        body.update({k: v for k, v in optional.items() if v is not None})
        if inputs_mapping is not None:
            body["inputs_mapping"] = [m.to_dict() for m in inputs_mapping]
        if outputs_mapping is not None:
            body["outputs_mapping"] = [m.to_dict() for m in outputs_mapping]
        route = "/endpoints" if execution_rule == "endpoint" else "/periodic-deployment"
        status, created = self._transport.request_with_status(
            "POST", self._api_url(route), json=body)
        deployment = expect_dict(created, f"POST {route}")
        deadline = time.monotonic() + timeout_s
        while deployment.get("status") == "creation_pending":
            if time.monotonic() > deadline:
                raise CreationTimeoutError(
                    f"Deployment {deployment_name!r} was not up after {timeout_s:.0f} s")
            time.sleep(1.0)
            token = deployment.get("endpoint_token")
            deployment = self.get_deployment(deployment_name)
            deployment.setdefault("endpoint_token", token)
        if deployment.get("status") == "creation_failed":
            raise CreationFailedError(
                "deployment", deployment_name,
                deployment.get("status_reason") or "see get_deployment_logs()")
        del status
        return deployment

    def get_deployment(self, deployment_name: str) -> dict[str, Any]:
        base = f"/deployments/{path_segment(deployment_name)}"
        deployment = expect_dict(self._transport.request("GET", self._api_url(base)),
                                 "GET /deployments/{name}")
        latest = self._transport.request("GET", self._api_url(f"{base}/executions/latest"))
        deployment["last_execution_id"] = (
            latest.get("execution_id") if isinstance(latest, dict) else None)
        return deployment

    def list_deployments(self) -> list[dict[str, Any]]:
        return expect_list(self._transport.request("GET", self._api_url("/deployments")),
                           "GET /deployments")

    def delete_deployment(self, deployment_name: str) -> dict[str, Any]:
        """Delete a deployment and its executions."""
        return expect_dict(self._transport.request(
            "DELETE", self._api_url(f"/deployments/{path_segment(deployment_name)}")),
            "DELETE /deployments/{name}")

    def update_deployment(self, deployment_name: str, is_enabled: bool | None = None,
                          description: str | None = None, *,
                          execution_timeout_s: int | _Unset | None = _Unset.UNSET
                          ) -> dict[str, Any]:
        """Enable/disable a deployment, change its description or its execution timeout
        (whole seconds, 1 to 7 days; ``execution_timeout_s=None`` removes the limit, left
        out keeps it); a low-latency deployment's worker is reloaded (module code runs
        again)."""
        body: dict[str, Any] = {}
        if is_enabled is not None:
            body["is_enabled"] = is_enabled
        if description is not None:
            body["description"] = description
        if execution_timeout_s is not _Unset.UNSET:
            body["execution_timeout_s"] = execution_timeout_s
        return expect_dict(self._transport.request(
            "PATCH", self._api_url(f"/deployments/{path_segment(deployment_name)}"),
            json=body), "PATCH /deployments/{name}")

    def set_deployment_traffic(self, deployment_name: str, *,
                               split: Mapping[str, int] | None = None,
                               key: str | None = None, routes: Mapping[str, str] | None = None,
                               default: str | None = None,
                               shadow: Sequence[str] | None = None) -> dict[str, Any]:
        """Which pipelines answer the endpoint's calls (docs/rollout.md): exactly one of a
        random split by weights, a split on an input's value (key, routes, default), or
        shadow pipelines getting a copy of each call; nothing: its own pipeline again."""
        _check_mapping(split, "split", "pipeline name to weight")
        _check_mapping(routes, "routes", "input value to pipeline name")
        if shadow is not None and (isinstance(shadow, str | bytes)
                                   or not isinstance(shadow, Iterable)):
            raise TypeError(
                "'shadow' must be a list of pipeline names (e.g. shadow=[\"scorer-v2\"]), "
                f"not {type(shadow).__name__}.")
        body: dict[str, Any] = {k: v for k, v in (
            ("split", dict(split) if split is not None else None), ("key", key),
            ("routes", dict(routes) if routes is not None else None), ("default", default),
            ("shadow", list(shadow) if shadow is not None else None)) if v is not None}
        return expect_dict(self._transport.request(
            "PUT", self._api_url(f"/deployments/{path_segment(deployment_name)}/traffic"),
            json=body), "PUT /deployments/{name}/traffic")

    def get_deployment_traffic(self, deployment_name: str) -> dict[str, Any]:
        """The deployment's traffic rule, validations and the record of their changes."""
        return expect_dict(self._transport.request(
            "GET", self._api_url(f"/deployments/{path_segment(deployment_name)}/traffic")),
            "GET /deployments/{name}/traffic")

    def set_deployment_validations(self, deployment_name: str,
                                   validations: Mapping[str, str]) -> dict[str, Any]:
        """Named expressions over inputs and outputs (e.g. ``{"low": "score <= 0.9"}``);
        an execution violating one is flagged, its answer still returned. {} removes them."""
        _check_mapping(validations, "validations", "validation name to rule "
                       '(e.g. {"low": "score <= 0.9"})', required=True)
        return expect_dict(self._transport.request(
            "PUT", self._api_url(f"/deployments/{path_segment(deployment_name)}/validations"),
            json=dict(validations)), "PUT /deployments/{name}/validations")

    def export_deployment_executions(self, deployment_name: str, datastore_path: str, *,
                                     start: datetime | None = None,
                                     end: datetime | None = None,
                                     format: str = "parquet") -> dict[str, Any]:
        """Write one row per execution of the deployment (created in [start, end)) to the
        data store at datastore_path, as "parquet" or "jsonl"; returns
        ``{"path", "rows", "format"}``."""
        body: dict[str, Any] = {"datastore_path": datastore_path, "format": format}
        for key, value in (("start", start), ("end", end)):
            if value is not None and not isinstance(value, datetime):
                raise TypeError(
                    f"'{key}' must be a datetime.datetime (e.g. datetime.fromisoformat("
                    f"{str(value)!r})), not {type(value).__name__}.")
            if value is not None:
                if value.tzinfo is None:
                    value = value.astimezone()  # a naive time is local, as elsewhere
                body[key] = value.isoformat()
        return expect_dict(self._transport.request(
            "POST",
            self._api_url(f"/deployments/{path_segment(deployment_name)}/executions/export"),
            json=body), "POST /deployments/{name}/executions/export")

    def get_deployment_logs(self, deployment_name: str, from_datetime: datetime | None = None,
                            to_datetime: datetime | None = None, limit: int | None = None,
                            ) -> list[dict[str, Any]]:
        body = {k: v for k, v in (("from", _millis(from_datetime)), ("to", _millis(to_datetime)),
                                  ("limit", limit)) if v is not None}
        return expect_list(self._transport.request(
            "POST", self._api_url(f"/deployments/{path_segment(deployment_name)}/logs"),
            json=body), "POST /deployments/{name}/logs")

    def generate_new_endpoint_token(self, endpoint_name: str) -> dict[str, Any]:
        """A new token for the endpoint; the previous one stops working at once."""
        return expect_dict(self._transport.request(
            "POST", self._api_url(f"/endpoints/{path_segment(endpoint_name)}/generate-new-token")),
            "POST /endpoints/{name}/generate-new-token")

    # -- calling endpoints (endpoint token, not the SDK token) --

    def _endpoint_timeout(self) -> httpx.Timeout:
        # The server holds result requests (20 s by default) and an execution may take a
        # while: reads get at least _ENDPOINT_READ_S, connecting the client's timeout.
        timeout = self._settings.timeout
        return httpx.Timeout(max(timeout, _ENDPOINT_READ_S), connect=timeout)

    def trigger_endpoint(self, endpoint_name: str, endpoint_token: str,
                         inputs: Mapping[str, Any] | None = None,
                         wait_for_results: bool = True) -> dict[str, Any]:
        """Call an endpoint. A binary file object among the inputs is sent as a file;
        unlike craft-ai-sdk, the other inputs go along with it."""
        if inputs is not None and not isinstance(inputs, Mapping):
            raise TypeError("'inputs' must be a mapping of input name to value (a dict), "
                            f"not {type(inputs).__name__}.")
        url = f"{self._settings.environment_url}/endpoints/{path_segment(endpoint_name)}"
        given = dict(inputs or {})
        authorization = f"EndpointToken {endpoint_token}"
        file_inputs = {k: v for k, v in given.items() if callable(getattr(v, "read", None))}
        if file_inputs:
            fields = {k: json.dumps(v) for k, v in given.items() if k not in file_inputs}
            response = self._transport.endpoint_call(
                "POST", url, authorization=authorization, data=fields,
                files=_replayable_files(file_inputs), timeout=self._endpoint_timeout())
        else:
            response = self._transport.endpoint_call(
                "POST", url, authorization=authorization, json=given,
                timeout=self._endpoint_timeout())
        execution_id = response.headers.get("craft-ai-execution-id")
        if not execution_id:
            body = expect_dict(decode_response(response), "POST /endpoints/{name}")
            execution_id = expect_str(body, "execution_id", "POST /endpoints/{name}")
        if not wait_for_results:
            return {"execution_id": execution_id}
        return self.retrieve_endpoint_results(endpoint_name, execution_id, endpoint_token)

    def retrieve_endpoint_results(self, endpoint_name: str, execution_id: str,
                                  endpoint_token: str) -> dict[str, Any]:
        url = (f"{self._settings.environment_url}/endpoints/{path_segment(endpoint_name)}"
               f"/executions/{path_segment(execution_id)}")
        while True:  # the server holds each request, then redirects to itself
            response = self._transport.endpoint_call(
                "GET", url, authorization=f"EndpointToken {endpoint_token}",
                timeout=self._endpoint_timeout())
            if response.status_code not in _REDIRECTS:
                break
            response.close()
        if "application/octet-stream" in response.headers.get("content-type", ""):
            disposition = response.headers.get("content-disposition", "")
            name = disposition.split(f"_{execution_id}_", 1)[-1]
            return {"execution_id": execution_id, "outputs": {name: response.content}}
        body = expect_dict(decode_response(response), "GET /endpoints/{name}/executions/{id}")
        return {"execution_id": execution_id, "outputs": body.get("outputs", {})}

    # -- resource metrics --

    def get_resource_metrics(self, start_date: datetime, end_date: datetime,
                             csv: bool = False) -> Any:
        """Per-worker CPU, RAM, disk, network (and GPU) series, or CSV bytes."""
        return self._transport.request("GET", self._api_url("/resource-metrics"), params={
            "start": _millis(start_date), "end": _millis(end_date), "download": str(csv)})
