"""Structured logs: `GRISTMILL_LOG_FORMAT=json` from a real `gristmill serve` process, one
JSON object per line with what each record happened under, and no secret in any line."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gristmill_platform.auth.tokens import split_sdk_token
from gristmill_platform.logs import (
    MASK,
    JsonFormatter,
    Redactor,
    TextFormatter,
    execution_scope,
    redactor,
)
from tests.conftest import free_port
from tests.platform.helpers import new_user_token


def _record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError(f"boom with {message}")
        except RuntimeError:
            exc_info = sys.exc_info()
    return logging.LogRecord("gristmill.test", logging.WARNING, __file__, 1, message, args,
                             exc_info)


@pytest.mark.parametrize("text, secret", [
    ("Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
    ("token gm_0123abcd_SeCrEtSeCrEt-xyz used", "SeCrEtSeCrEt-xyz"),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl here", "c2lnbmF0dXJl"),
    ("GET /data-store/presigned/object?path=a&expires=9&signature=deadbeef99 HTTP/1.1",
     "deadbeef99"),
    ("https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIAX%2F1&X-Amz-Signature=f00dcafe1",
     "f00dcafe1"),
    ("postgresql://gristmill:hunter2pass@db:5432/gristmill", "hunter2pass"),
    ("body {'password': 'correct horse', 'name': 'x'}", "correct horse"),
    ('{"refresh_token": "opaque-refresh-value"}', "opaque-refresh-value"),
    ("form password=pa55word&user=me", "pa55word"),
    ("key -----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaA\n-----END OPENSSH PRIVATE KEY-----",
     "b3BlbnNzaA"),
])
def test_secret_shapes_are_masked(text: str, secret: str) -> None:
    masked = Redactor()(text)
    assert secret not in masked
    assert MASK in masked


def test_registered_values_are_masked_and_short_ones_ignored() -> None:
    r = Redactor()
    r.register("s3cr3t-value-of-an-env-var", "abc", None, "s3cr3t-value")
    masked = r("env has s3cr3t-value-of-an-env-var and abc")
    assert masked == f"env has {MASK} and abc"


def test_json_lines_carry_the_execution_and_mask_exceptions() -> None:
    redactor.register("exception-secret-123")
    with execution_scope("exec-42"):
        line = JsonFormatter().format(_record("failed %s", "exception-secret-123", exc=True))
    entry = json.loads(line)
    assert entry["execution_id"] == "exec-42"
    assert entry["level"] == "warning" and entry["logger"] == "gristmill.test"
    assert "exception-secret-123" not in line
    assert "RuntimeError" in entry["exception"]
    text = TextFormatter().format(_record("x %s", "exception-secret-123", exc=True))
    assert "exception-secret-123" not in text and "RuntimeError" in text


def test_json_format_is_one_object_per_line_even_for_multiline_messages() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.emit(_record("line one\nline two", exc=True))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["message"] == "line one\nline two"


def _serve(data_dir: Path, port: int, log_file: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "GRISTMILL_LOG_FORMAT": "json", "GRISTMILL_LOG_LEVEL": "debug"}
    with log_file.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gristmill.cli", "serve", "--data-dir", str(data_dir),
             "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env)


def test_serve_logs_json_with_request_context_and_no_secret(tmp_path: Path) -> None:
    from gristmill_platform.settings import Settings, resolve_settings

    data_dir = tmp_path / "env"
    port = free_port()
    settings = resolve_settings(Settings(data_dir=data_dir, port=port))
    created = new_user_token(settings, "logger@example.com")
    log_file = tmp_path / "service.log"
    process = _serve(data_dir, port, log_file)
    url = f"http://127.0.0.1:{port}"
    try:
        # a bound on a wait, not a timing claim: a first start on a loaded machine is slow
        deadline = time.monotonic() + 300
        while True:
            assert process.poll() is None, log_file.read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log_file.read_text()
            time.sleep(0.1)
        access = httpx.post(f"{url}/api/v1/auth/refresh",
                            json={"refresh_token": created.plaintext}).json()["access_token"]
        api = httpx.Client(base_url=f"{url}/api/v1",
                           headers={"Authorization": f"Bearer {access}"})
        env_value = "env-var-value-that-is-a-password"
        assert api.put("/environment-variables",
                       json={"environment_variables": {"DB_PASSWORD": env_value}}
                       ).status_code == 200
        upload = api.get("/data-store/upload", params={"path_to_object": "logs/a.txt"}).json()
        assert httpx.post(upload["signed_url"], data=upload["fields"],
                          files={"file": ("f", b"data")}).status_code < 300
        download = api.post("/data-store/download",
                            data={"path_to_object": "logs/a.txt"}).json()["signed_url"]
        assert httpx.get(download).content == b"data"
        assert api.get("/executions/does-not-exist").status_code == 404
        # a token in a query string by mistake is still masked
        httpx.get(f"{url}/api/v1/users", params={"token": created.plaintext})
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    text = log_file.read_text()
    entries = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert entries, "the service logged nothing"
    signature = download.split("signature=")[1].split("&")[0]
    # the whole secret (it may hold "_" itself, even first: split("_")[2] was then empty)
    for secret in (split_sdk_token(created.plaintext)[1], access, env_value, signature,
                   settings.secret_key):
        assert secret and secret not in text
    traced = [e for e in entries
              if e.get("route") == "/api/v1/executions/{execution_id}"]
    assert traced, text
    assert all(e["request_id"] and e["user_id"] for e in traced)
    assert traced[0]["method"] == "GET" and "404" in traced[0]["message"]
