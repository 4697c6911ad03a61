""""Run again with the same inputs" (the execution page): a new run of the execution's
pipeline with the inputs it received, as the API's run route would take them. Values are
sent again as they were; a data store input is read again from its path; an uploaded file
is sent again from the copy the platform kept of it (the one its page lets you download)."""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

from gristmill_platform.auth.principal import Principal
from gristmill_platform.console import services
from gristmill_platform.deps import transaction
from gristmill_platform.executions.service import Launch, RunRequest
from gristmill_platform.state import AppState


async def run_again(state: AppState, execution_id: str, principal: Principal) -> Launch:
    principal.require_user_scope("Running a pipeline")
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="gristmill-rerun-") as tmp:
        async with transaction(state) as session:
            executions = services.executions(state, session)
            previous = await executions.get(execution_id)
            inputs: dict[str, Any] = {}
            files: dict[str, tuple[str, IO[bytes]]] = {}
            mapping: list[dict[str, Any]] = []
            for item in previous.inputs:
                name, kind = item["pipeline_input_name"], item.get("mapping_type")
                if kind == "datastore":
                    mapping.append({"pipeline_input_name": name,
                                    "datastore_path": item["mapping_value"].get(
                                        "datastore_path")})
                elif item.get("data_type") == "file":
                    kept = item.get("file") or {}
                    if kept.get("object"):
                        copy = Path(tmp) / f"{len(files)}"
                        await executions.datastore.download_to(kept["object"], copy)
                        files[name] = (kept.get("filename") or name,
                                       stack.enter_context(copy.open("rb")))
                    # no kept copy: the input was null, and stays so
                elif kind != "is_null":
                    inputs[name] = item.get("value")
            pipeline, step = await services.pipelines(state, session).get(
                previous.pipeline_name)
            return await executions.create(
                pipeline, step, RunRequest(inputs=inputs, files=files,
                                           inputs_mapping=mapping, outputs_mapping=[]),
                principal)
