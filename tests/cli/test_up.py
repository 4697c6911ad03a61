"""`gristmill up` as a user runs it: a real process, stopped and restarted."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import free_port


def start(data_dir: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gristmill.cli", "up", "--data-dir", str(data_dir),
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "COLUMNS": "200"},
    )


def wait_ready(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("gristmill up did not become ready")


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=30)
    return out


def test_up_prints_credentials_once_and_keeps_data_across_restarts(tmp_path) -> None:
    data_dir = tmp_path / "home"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    first = start(data_dir, port)
    wait_ready(url, first)
    output = stop(first)
    token = re.search(r"export GRISTMILL_SDK_TOKEN=(\S+)", output)
    assert token, output
    assert f"Web console: {url}/" in output
    for line in ("GRISTMILL_ENVIRONMENT_URL", "CRAFT_AI_ENVIRONMENT_URL", "CRAFT_AI_CONTROL_URL",
                 "CRAFT_AI_SDK_TOKEN"):
        assert f"export {line}=" in output
    credentials = data_dir / "credentials.env"
    assert token.group(1) in credentials.read_text()
    assert credentials.stat().st_mode & 0o077 == 0

    second = start(data_dir, port)
    wait_ready(url, second)
    access = httpx.post(f"{url}/api/v1/auth/refresh",
                        json={"refresh_token": token.group(1)}).json()["access_token"]
    headers = {"Authorization": f"Bearer {access}"}
    httpx.put(f"{url}/api/v1/environment-variables", headers=headers,
              json={"environment_variables": {"KEPT": "yes"}}).raise_for_status()
    output = stop(second)
    assert "GRISTMILL_SDK_TOKEN=" not in output  # shown once, on first start only

    third = start(data_dir, port)
    wait_ready(url, third)
    try:
        listed = httpx.get(f"{url}/api/v1/environment-variables", headers=headers).json()
        assert {"name": "KEPT", "value": "yes"} in listed
    finally:
        stop(third)


def test_restart_banner_token_command_works_as_printed(tmp_path) -> None:
    data_dir = tmp_path / "custom dir"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    first = start(data_dir, port)
    wait_ready(url, first)
    stop(first)
    second = start(data_dir, port)
    wait_ready(url, second)
    output = stop(second)
    command = re.search(r"Need an SDK token\? (gristmill token create.*)", output)
    assert command, output
    # as a user pastes it, in a shell whose HOME holds no environment
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRISTMILL_")}
    bin_dir = str(Path(sys.executable).parent)
    created = subprocess.run(
        ["bash", "-c", command.group(1).strip()], capture_output=True, text=True, timeout=120,
        env={**env, "HOME": str(home), "PATH": f"{bin_dir}:{env['PATH']}", "COLUMNS": "200"})
    assert created.returncode == 0, created.stderr
    assert f"export GRISTMILL_ENVIRONMENT_URL={url}" in created.stdout
    assert not (home / ".gristmill").exists()
