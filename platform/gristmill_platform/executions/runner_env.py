"""The environment an execution's runner starts with, on either backend (a launched worker
or a pool pod that claimed the execution)."""

from __future__ import annotations

from collections.abc import Mapping

# In the runtime images (runtime-images/*/Dockerfile) the step's code is in the working
# directory /app.
IMAGE_STEP_DIR = "/app"


def runner_env(url: str, sdk_token: str, execution_id: str, step_dir: str,
               io_dir: str | None, variables: Mapping[str, str],
               access_token: str | None = None) -> dict[str, str]:
    """What the runner (and the SDKs inside the step) read, on either backend."""
    env = {
        **variables,
        "GRISTMILL_ENVIRONMENT_URL": url,
        "CRAFT_AI_ENVIRONMENT_URL": url,
        "CRAFT_AI_CONTROL_URL": url,
        "GRISTMILL_SDK_TOKEN": sdk_token,
        "CRAFT_AI_SDK_TOKEN": sdk_token,
        "GRISTMILL_EXECUTION_ID": execution_id,
        "CRAFT_AI_EXECUTION_ID": execution_id,
        "GRISTMILL_STEP_DIR": step_dir,
        "SDK_VERBOSE_LOG": "false",
        "PYTHONUNBUFFERED": "1",
    }
    if io_dir is not None:
        env["GRISTMILL_IO_DIR"] = io_dir
    env.pop("GRISTMILL_ACCESS_TOKEN", None)  # never a variable's: the runner would use it
    if access_token is not None:
        env["GRISTMILL_ACCESS_TOKEN"] = access_token
    return env
