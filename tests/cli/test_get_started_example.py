"""The README's main job deploys examples/get_started on the environment: run it for real,
twice (it must be idempotent), and call the endpoint it prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "get_started" / "deploy.py"


def test_deploys_runs_and_serves(gristmill_env) -> None:
    env = {**os.environ, "GRISTMILL_ENVIRONMENT_URL": gristmill_env.url,
           "GRISTMILL_SDK_TOKEN": gristmill_env.sdk_token}
    for _ in range(2):
        result = subprocess.run([sys.executable, str(EXAMPLE)], env=env, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert "Hello Gristmill!" in result.stdout
    token = re.search(r"EndpointToken (\S+)'", result.stdout)
    assert token
    answer = httpx.post(f"{gristmill_env.url}/endpoints/get-started", json={"name": "you"},
                        headers={"Authorization": f"EndpointToken {token.group(1)}"},
                        timeout=60)
    assert answer.json()["outputs"]["greeting"] == "Hello you!"
