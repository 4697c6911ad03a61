"""The real craft-ai-sdk 0.50.1 client, unchanged, against a running environment.

The client reads its multipart settings once, at import: set them before anything
imports it, so uploads above 3 MB go through the multipart routes."""

from __future__ import annotations

import os

os.environ["CRAFT_AI__MULTIPART_THRESHOLD__B"] = str(3 * 1024 * 1024)
os.environ["CRAFT_AI__MULTIPART_PART_SIZE__B"] = str(1024 * 1024)
os.environ["SDK_VERBOSE_LOG"] = "false"

from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture
def craft_sdk(gristmill_env, monkeypatch) -> Iterator[object]:
    for name in ("CRAFT_AI_SDK_TOKEN", "CRAFT_AI_ENVIRONMENT_URL", "CRAFT_AI_CONTROL_URL"):
        monkeypatch.delenv(name, raising=False)
    from craft_ai_sdk import CraftAiSdk

    yield CraftAiSdk(
        sdk_token=gristmill_env.sdk_token,
        environment_url=gristmill_env.url,
        control_url=gristmill_env.url,
        verbose_log=False,
    )
