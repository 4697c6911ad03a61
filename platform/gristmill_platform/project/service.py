"""The environment's project settings and identity, derived from its settings (pure)."""

from __future__ import annotations

import uuid
from typing import Any

from gristmill_platform.settings import Settings
from gristmill_platform.steps.schemas import shown_repository_url
from gristmill_platform.steps.service import project_defaults

# a fixed namespace: the same environment URL always gives the same environment id
_ENVIRONMENT_NAMESPACE = uuid.UUID("5f0c8a3e-2b7d-4c61-9a57-6f1e1d0b9c42")


def environment_id(settings: Settings) -> str:
    """A stable id for the environment, derived from the URL it is reached at (nothing
    secret: clients send it back in URLs)."""
    return str(uuid.uuid5(_ENVIRONMENT_NAMESPACE, settings.environment_url))


def project_information(settings: Settings) -> dict[str, Any]:
    """The step defaults, as craft-ai-sdk 0.74 reads them before packing a local folder
    (it includes `included_folders` and `requirements_path` in the archive). The deploy
    key is a secret: only whether one is set is shown."""
    defaults = project_defaults(settings)
    return {
        "environment_id": environment_id(settings),
        "language": defaults.language,
        "repository_url": shown_repository_url(defaults.repository_url),
        "repository_branch": defaults.repository_branch,
        "has_repository_deploy_key": defaults.repository_deploy_key is not None,
        "requirements_path": defaults.requirements_path,
        "included_folders": list(defaults.included_folders),
        "system_dependencies": list(defaults.system_dependencies),
        "dockerfile_path": None,
    }


def environment_information(settings: Settings, version: str) -> dict[str, Any]:
    return {"environment_id": environment_id(settings),
            "environment_url": settings.environment_url,
            "platform": "gristmill", "version": version}
