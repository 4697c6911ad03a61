"""The ``Gristmill`` client: configuration plus the resource mixins.

Method names and signatures follow craft-ai-sdk 0.50.1, so its documented examples run
after changing the import. Each area (data store, steps, pipelines, executions,
metrics...) is a mixin in ``gristmill.resources``.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx

from gristmill._transport import Transport
from gristmill.config import Settings, resolve_settings
from gristmill.resources.datastore import DataStoreMixin
from gristmill.resources.deployments import DeploymentsMixin
from gristmill.resources.env_vars import EnvironmentVariablesMixin
from gristmill.resources.executions import ExecutionsMixin
from gristmill.resources.metrics import MetricsMixin
from gristmill.resources.pipelines import PipelinesMixin
from gristmill.resources.steps import StepsMixin
from gristmill.resources.users import UsersMixin


class Gristmill(
    UsersMixin,
    EnvironmentVariablesMixin,
    DataStoreMixin,
    StepsMixin,
    PipelinesMixin,
    ExecutionsMixin,
    MetricsMixin,
    DeploymentsMixin,
):
    """Client for one Gristmill environment.

    Args:
        environment_url: URL of the environment. Defaults to ``GRISTMILL_ENVIRONMENT_URL``,
            then ``CRAFT_AI_ENVIRONMENT_URL``.
        sdk_token: Your SDK token. Defaults to ``GRISTMILL_SDK_TOKEN``, then
            ``CRAFT_AI_SDK_TOKEN``.
        control_url: Where tokens are exchanged and users looked up. Defaults to
            ``GRISTMILL_CONTROL_URL``, then ``CRAFT_AI_CONTROL_URL``, then the environment
            URL (a self-hosted environment serves both).
        progress: Show progress bars for transfers. Defaults to ``GRISTMILL_PROGRESS``,
            else on only in a terminal or a notebook.
        timeout: Seconds to wait for the platform on each request (``GRISTMILL_TIMEOUT_S``,
            default 60).
        max_retries: Retries after a connection failure or a 429/503 answer
            (``GRISTMILL_MAX_RETRIES``, default 2).
        multipart_threshold: Uploads of at least this many bytes are sent in parts
            (``GRISTMILL_MULTIPART_THRESHOLD_B``, default 100 MB).
        multipart_part_size: Size of each part (``GRISTMILL_MULTIPART_PART_SIZE_B``, then
            ``CRAFT_AI__MULTIPART_PART_SIZE__B``, default 64 MiB).
        http_client: An ``httpx.Client`` to use (proxies, custom CA...). The SDK does not
            close a client it did not create.
        warn_on_metric_outside_of_step: Warn when ``record_metric_value`` and
            ``record_list_metric_values`` are called outside an execution (where they
            send nothing). Default True.

    Raises:
        ValueError: the environment URL or the SDK token is missing or malformed.
    """

    def __init__(
        self,
        environment_url: str | None = None,
        sdk_token: str | None = None,
        control_url: str | None = None,
        *,
        progress: bool | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        multipart_threshold: int | None = None,
        multipart_part_size: int | None = None,
        http_client: httpx.Client | None = None,
        warn_on_metric_outside_of_step: bool = True,
    ) -> None:
        self.warn_on_metric_outside_of_step = warn_on_metric_outside_of_step
        self._settings = resolve_settings(
            environment_url,
            sdk_token,
            control_url,
            progress=progress,
            timeout=timeout,
            max_retries=max_retries,
            multipart_threshold=multipart_threshold,
            multipart_part_size=multipart_part_size,
        )
        self._transport = Transport(self._settings, http_client=http_client)

    @property
    def settings(self) -> Settings:
        return self._settings

    # craft-ai-sdk exposes these attributes; keep them for code that reads them.
    @property
    def base_environment_url(self) -> str:
        return self._settings.environment_url

    @property
    def base_environment_api_url(self) -> str:
        return self._settings.environment_api_url

    @property
    def base_control_url(self) -> str:
        return self._settings.control_url

    @property
    def base_control_api_url(self) -> str:
        return self._settings.control_api_url

    def close(self) -> None:
        """Close the HTTP connections. The client is also usable as a context manager."""
        self._transport.close()

    def __enter__(self) -> Gristmill:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(environment_url={self._settings.environment_url!r})"


class CraftAiSdk(Gristmill):
    """``Gristmill`` with craft-ai-sdk's constructor, for code written for it.

    craft-ai-sdk takes ``sdk_token`` first: ``CraftAiSdk(token, url)`` keeps working.
    ``verbose_log`` and ``warn_on_metric_outside_of_step`` are accepted and kept.
    """

    def __init__(
        self,
        sdk_token: str | None = None,
        environment_url: str | None = None,
        control_url: str | None = None,
        verbose_log: bool | None = None,
        warn_on_metric_outside_of_step: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(
            environment_url,
            sdk_token,
            control_url,
            warn_on_metric_outside_of_step=warn_on_metric_outside_of_step,
            **options,
        )
        self.verbose_log = verbose_log
