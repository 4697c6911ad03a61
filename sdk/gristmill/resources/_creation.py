"""Creating a step, or a pipeline with its hidden step, from code (contract §2.1, §3.1, §6.1).

The form is posted; a 201 means built, a 206 means "still building": the status is then
polled (1 s, growing to 5 s, where craft-ai-sdk waits 10 s each time) until it is
``ready``, ``creation_failed`` (raised with the platform's reason and build log), gone
(404: how the platform tells craft-ai-sdk 0.50 that the build failed) or ``timeout_s``
runs out.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gristmill._files import atomic_write
from gristmill._transport import FileParts
from gristmill.errors import (
    APIError,
    CreationFailedError,
    CreationTimeoutError,
    InvalidResponseError,
)
from gristmill.io import Input, Output
from gristmill.progress import Spinner
from gristmill.resources._archive import archive_entries, build_step_archive
from gristmill.resources._base import ClientBase, expect_dict, expect_str, path_segment
from gristmill.resources._forms import check_creation_arguments, creation_payload, flatten_form

POLL_FIRST_S = 1.0
POLL_MAX_S = 5.0
POLL_GROWTH = 1.5


def creation_status(obj: Mapping[str, Any]) -> str | None:
    info = obj.get("creation_info")
    status = info.get("status") if isinstance(info, Mapping) else None
    return status if isinstance(status, str) else None


def without_creation_id(obj: dict[str, Any]) -> dict[str, Any]:
    info = obj.get("creation_info")
    if isinstance(info, dict):
        info.pop("id", None)
    return obj


class CreationMixin(ClientBase):
    def _create_from_code(
        self,
        *,
        kind: str,
        collection: str,
        name_field: str,
        name: str,
        function_path: str | None,
        function_name: str | None,
        description: str | None,
        container_config: Mapping[str, Any] | None,
        inputs: Sequence[Input] | None,
        outputs: Sequence[Output] | None,
        timeout_s: float,
        fetch: Callable[[str], dict[str, Any] | None],
    ) -> tuple[int, dict[str, Any]]:
        """POST the creation form; wait if it answers 206. Returns (status, object)."""
        check_creation_arguments(inputs, outputs, timeout_s)
        config = dict(container_config or {})
        payload = creation_payload(
            name_field,
            name,
            function_path=function_path,
            function_name=function_name,
            description=description,
            container_config=config,
            inputs=inputs,
            outputs=outputs,
        )
        files: FileParts | None = None
        local_folder = config.get("local_folder")
        if local_folder is not None:
            archive = build_step_archive(
                local_folder, archive_entries(payload["container_config"], function_path)
            )
            # With a file part the form goes multipart, otherwise url-encoded (§2.1).
            files = {"step_file": ("step_file", archive)}
        fields = dict(flatten_form(payload))

        started = time.monotonic()
        with Spinner(f"Creating {kind} {name!r}...", enabled=self._settings.progress) as spinner:
            try:
                status, body = self._transport.request_with_status(
                    "POST", self._api_url(f"/{collection}"), data=fields, files=files
                )
            except APIError as err:
                failure = _as_creation_failure(err, kind, name)
                if failure is None:
                    raise
                raise failure from err
            if not isinstance(body, dict):
                raise InvalidResponseError(f"POST /{collection} returned no JSON object.")
            if status != 206:
                return status, body
            return status, self._wait_for_creation(
                kind, collection, name, fetch, timeout_s, started, spinner
            )

    def _wait_for_creation(
        self,
        kind: str,
        collection: str,
        name: str,
        fetch: Callable[[str], dict[str, Any] | None],
        timeout_s: float,
        started: float,
        spinner: Spinner,
    ) -> dict[str, Any]:
        interval = POLL_FIRST_S
        status: str | None = "creation_pending"
        while True:
            elapsed = time.monotonic() - started
            if elapsed >= timeout_s:
                raise CreationTimeoutError(
                    f"The {kind} {name!r} was still being built after {timeout_s:.0f} s "
                    f"(status {status!r}); the build goes on. Check it with "
                    f"get_{kind}({name!r}), or pass a larger timeout_s."
                )
            spinner.update(f"Building {kind} {name!r} ({elapsed:.0f} s, {status})...")
            time.sleep(min(interval, max(0.0, timeout_s - elapsed)))
            interval = min(interval * POLL_GROWTH, POLL_MAX_S)
            obj = fetch(name)
            if obj is None:
                raise CreationFailedError(
                    kind,
                    name,
                    "the platform no longer knows it: its build failed, or it was deleted "
                    "meanwhile",
                )
            status = creation_status(obj)
            if status == "ready":
                return obj
            if status == "creation_failed":
                info = obj.get("creation_info") or {}
                reason = info.get("status_reason") if isinstance(info, dict) else None
                raise CreationFailedError(kind, name, reason, self._build_log(collection, name))

    def _build_log(self, collection: str, name: str) -> list[str]:
        """The build log, when the platform serves it (``GET /{collection}/{name}/logs``,
        also read by later craft-ai-sdk versions); best effort."""
        try:
            body = self._transport.request(
                "GET", self._api_url(f"/{collection}/{path_segment(name)}/logs")
            )
        except APIError:
            return []
        logs = body.get("logs") if isinstance(body, dict) else body
        if isinstance(logs, str):
            return logs.splitlines()
        if isinstance(logs, list):
            return [line if isinstance(line, str) else str(line) for line in logs]
        return []

    def _download_code_archive(
        self, collection: str, name: str, folder: str | os.PathLike[str]
    ) -> None:
        """Fetch a step's or pipeline's code archive to ``{folder}/{name}.tgz``; written
        to a temporary file renamed at the end, like data store downloads. A missing
        folder is created (parents too); a path that is not a folder is refused."""
        directory = Path(os.fspath(folder)).expanduser()
        if directory.exists() and not directory.is_dir():
            raise ValueError(f"'folder' must be a folder; {str(directory)!r} is not.")
        what = f"GET /{collection}/{{name}}/download"
        presigned = expect_dict(
            self._transport.request(
                "GET", self._api_url(f"/{collection}/{path_segment(name)}/download")
            ),
            what,
        )
        signed_url = expect_str(presigned, "signed_url", what)
        # After the API call, so that a misspelt name creates no folder.
        directory.mkdir(parents=True, exist_ok=True)
        with (
            atomic_write(directory / f"{name}.tgz") as out,
            self._transport.stream_presigned("GET", signed_url) as response,
        ):
            for chunk in self._transport.iter_body(response):
                out.write(chunk)


def _as_creation_failure(err: APIError, kind: str, name: str) -> CreationFailedError | None:
    """A build that failed while the POST was waiting for it (Gristmill answers
    ``400 StepCreationFailed`` with the log's tail)."""
    if not (err.name or "").endswith("CreationFailed"):
        return None
    data = err.additional_data if isinstance(err.additional_data, dict) else {}
    tail = data.get("build_log_tail") or data.get("build_log") or []
    if isinstance(tail, str):
        tail = tail.splitlines()
    # The message may already say "Creation of step 's1' failed: <reason>".
    reason = err.message
    marker = f"{name!r} failed: "
    if marker in reason:
        reason = reason.split(marker, 1)[1]
    return CreationFailedError(kind, name, reason, [str(line) for line in tail])
