"""Build step folders and archives the way clients do, for server tests."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import httpx

HELLO = '''
import datetime


def hello(name: str = "world", n: int = 1) -> dict:
    print(f"Hello {name}! {datetime.date.today()}")
    return {"greeting": f"hello {name}" * int(n)}
'''


def write_folder(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def archive_of(root: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(root, arcname="")
    return buffer.getvalue()


def flatten(prefix: str, value: Any) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in flatten(f"{prefix}[{k}]", v)]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in flatten(f"{prefix}[{i}]", v)]
    return [(prefix, "" if value is None else str(value))]


def step_form(name: str, *, function_path: str = "src/hello.py", function_name: str = "hello",
              inputs: list[dict[str, Any]] | None = None,
              outputs: list[dict[str, Any]] | None = None,
              container_config: dict[str, Any] | None = None,
              name_field: str = "step_name") -> list[tuple[str, str]]:
    fields = [(name_field, name), ("function_path", function_path),
              ("function_name", function_name)]
    if container_config:
        fields += flatten("container_config", container_config)
    if inputs:
        fields += flatten("inputs", inputs)
    if outputs:
        fields += flatten("outputs", outputs)
    return fields


def post_step(api: httpx.Client, fields: list[tuple[str, str]], archive: bytes | None,
              route: str = "/steps", **headers: str) -> httpx.Response:
    if archive is None:
        return api.post(route, data=dict(fields), headers=headers)
    return api.post(route, data=dict(fields), files={"step_file": ("step_file", archive)},
                    headers=headers)


def git_repo(root: Path, files: dict[str, str | bytes]) -> str:
    write_folder(root, files)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "init"]):
        subprocess.run(["git", *args], cwd=root, check=True, env=env)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, check=True, env=env,
                          capture_output=True, text=True).stdout.strip()
