"""Runs code under the mocked Pulumi engine and loads the example stack files."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime.settings import _get_rpc_manager

from gristmill_infra.config import EnvironmentConfig, parse_config

ROOT = Path(__file__).resolve().parents[2]


def run_pulumi(build: Callable[[], Any]) -> Any:
    """Calls `build` inside a Pulumi program, waits for every resource and returns what it
    returned with every Output resolved.

    Assertions then run on plain values after the program, so a failing check cannot pass
    silently inside an `apply` that nobody awaits.
    """
    resolved: dict[str, Any] = {}

    @pulumi.runtime.test
    def program() -> pulumi.Output[Any]:
        return pulumi.Output.from_input(build()).apply(lambda value: resolved.update(value=value))

    try:
        program()
    except BaseException:
        _settle_failed_program()
        raise
    return resolved["value"]


def _settle_failed_program() -> None:
    """A program that failed (a test expecting a config error) leaves unfinished RPCs and its
    first exception in the process-wide RPC manager; the next test's program would raise
    them as its own. Let them end, then forget them."""
    manager = _get_rpc_manager()
    loop = asyncio.get_event_loop()
    while manager.rpcs:
        pending, manager.rpcs = manager.rpcs, []
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    manager.clear()


def stack_file_values(stack: str) -> dict[str, str]:
    """The `config:` of Pulumi.<stack>.yaml as the program receives it: strings, with
    lists and objects as JSON."""
    document = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    values: dict[str, str] = {}
    for key, value in document["config"].items():
        if isinstance(value, str):
            values[key] = value
        elif isinstance(value, bool):
            values[key] = "true" if value else "false"
        elif isinstance(value, (int, float)):
            values[key] = str(value)
        else:
            values[key] = json.dumps(value)
    return values


def stack_config(stack: str, **overrides: str) -> EnvironmentConfig:
    """The parsed configuration of an example stack, with `gristmill:` keys overridden."""
    values = stack_file_values(stack)
    for key, value in overrides.items():
        values[f"gristmill:{key}"] = value
    gristmill = {k.split(":", 1)[1]: v for k, v in values.items() if k.startswith("gristmill:")}
    return parse_config(gristmill, environment=stack, region=values["aws:region"])


REQUIRED = {
    "domain": "ml.example.com",
    "hostedZoneId": "Z0123456789ABC",
    "platformImage": "ghcr.io/gristmill/platform:0.1.0",
    "clusterEndpointPublicCidrs": '["203.0.113.0/24"]',
}
