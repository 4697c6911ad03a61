"""The creation form of steps and pipelines and the code archive (contract §2.1), checked
byte for byte against the contract's observed example, on a scripted server."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from gristmill import CREATION_PARAMETER_VALUE, Gristmill, Input, Output, StepCodeError
from gristmill.resources._archive import archive_entries, build_step_archive
from gristmill.resources._forms import creation_payload, flatten_form, wire_container_config
from tests.sdk._scripted_server import Reply, ScriptedServer

READY_STEP = {
    "parameters": {"step_name": "s1", "inputs": [], "outputs": []},
    "creation_info": {"status": "ready", "origin": "local", "id": "internal"},
}

# The contract's observed example (§2.1), every pair, in order.
EXAMPLE_FIELDS = [
    ("step_name", "s1"),
    ("function_path", "src/main.py"),
    ("function_name", "entry"),
    ("description", "d"),
    ("container_config[language]", "python:3.10-slim"),
    ("container_config[requirements_path]", "requirements.txt"),
    ("container_config[included_folders][0]", "src"),
    ("container_config[included_folders][1]", "/README.md"),
    ("container_config[system_dependencies][0]", "curl"),
    ("container_config[system_dependencies][1]", "git"),
    ("container_config[repository_deploy_key]", ""),
    ("inputs[0][name]", "a"),
    ("inputs[0][data_type]", "string"),
    ("inputs[0][is_required]", "True"),
    ("inputs[1][name]", "n"),
    ("inputs[1][data_type]", "number"),
    ("inputs[1][default_value]", "3"),
    ("inputs[2][name]", "x"),
    ("inputs[2][data_type]", "number"),
    ("inputs[2][default_value]", "2.5"),
    ("inputs[3][name]", "j"),
    ("inputs[3][data_type]", "json"),
    ("inputs[3][default_value][k][0]", "1"),
    ("inputs[3][default_value][k][1]", "2"),
    ("inputs[4][name]", "f"),
    ("inputs[4][data_type]", "file"),
    ("inputs[5][name]", "b"),
    ("inputs[5][data_type]", "boolean"),
    ("inputs[5][description]", ""),
    ("inputs[5][default_value]", "False"),
    ("outputs[0][name]", "r"),
    ("outputs[0][data_type]", "string"),
    ("outputs[0][description]", "res"),
]


def example_arguments(local_folder: Path | None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "language": "python:3.10-slim",
        "requirements_path": "requirements.txt",
        "included_folders": ["src", "/README.md"],
        "system_dependencies": ["curl", "git"],
        "repository_deploy_key": CREATION_PARAMETER_VALUE.NULL,
        "dockerfile_path": CREATION_PARAMETER_VALUE.FALLBACK_PROJECT,
        "repository_branch": None,
    }
    if local_folder is not None:
        config["local_folder"] = str(local_folder)
    return {
        "step_name": "s1",
        "function_path": "src/main.py",
        "function_name": "entry",
        "description": "d",
        "container_config": config,
        "inputs": [
            Input("a", "string", is_required=True),
            Input("n", "number", default_value=3),
            Input("x", "number", default_value=2.5),
            Input("j", "json", default_value={"k": [1, 2], "e": []}),
            Input("f", "file"),
            Input("b", "boolean", description="", default_value=False),
        ],
        "outputs": [Output("r", "string", "res")],
    }


@pytest.fixture
def code(tmp_path: Path) -> Path:
    root = tmp_path / "code"
    (root / "src").mkdir(parents=True)
    (root / "src" / "main.py").write_text("def entry():\n    return {'r': 'x'}\n")
    (root / "src" / "util.py").write_text("X = 1\n")
    (root / "README.md").write_text("readme\n")
    (root / "requirements.txt").write_text("\n")
    (root / "notes.txt").write_text("not included\n")
    return root


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer().running() as srv:
        srv.allow_login()
        yield srv


def client(server: ScriptedServer) -> Gristmill:
    return Gristmill(server.url, "gm_t_t", progress=False, max_retries=0)


# -- flattening ---------------------------------------------------------------------------


def test_flattening_matches_the_contract_example() -> None:
    args = example_arguments(None)
    payload = creation_payload(
        "step_name",
        args["step_name"],
        function_path=args["function_path"],
        function_name=args["function_name"],
        description=args["description"],
        container_config=args["container_config"],
        inputs=args["inputs"],
        outputs=args["outputs"],
    )
    assert flatten_form(payload) == EXAMPLE_FIELDS


def test_flattening_rules() -> None:
    assert flatten_form({"a": {"b": [1, True, None, 2.5]}, "e": [], "d": {}, "z": "ok"}) == [
        ("a[b][0]", "1"),
        ("a[b][1]", "True"),
        ("a[b][2]", ""),
        ("a[b][3]", "2.5"),
        ("z", "ok"),
    ]
    assert flatten_form({"x": [[1], {"y": False}]}) == [("x[0][0]", "1"), ("x[1][y]", "False")]


def test_container_config_three_states() -> None:
    assert wire_container_config(
        {
            "local_folder": "/tmp/x",
            "language": CREATION_PARAMETER_VALUE.FALLBACK_PROJECT,
            "requirements_path": None,
            "dockerfile_path": CREATION_PARAMETER_VALUE.NULL,
            "repository_branch": "main",
        }
    ) == {"dockerfile_path": None, "repository_branch": "main"}


def test_git_step_is_url_encoded(server: ScriptedServer) -> None:
    server.script("POST /api/v1/steps", Reply(201, READY_STEP))
    with client(server) as gm:
        step = gm.create_step(**example_arguments(None))
    assert "id" not in step["creation_info"]
    (post,) = [s for s in server.seen if s.path == "/api/v1/steps"]
    assert post.headers["content-type"] == "application/x-www-form-urlencoded"
    assert post.body == urlencode(EXAMPLE_FIELDS).encode()


def _multipart(
    content_type: str, body: bytes
) -> list[tuple[str, str | None, dict[str, str], bytes]]:
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    return [
        (
            str(part.get_param("name", header="content-disposition")),
            part.get_filename(),
            {k.lower(): str(v) for k, v in part.items()},
            part.get_payload(decode=True),
        )
        for part in message.iter_parts()  # type: ignore[attr-defined]
    ]


def test_local_folder_step_is_multipart_with_the_archive_last(
    server: ScriptedServer, code: Path
) -> None:
    server.script("POST /api/v1/steps", Reply(201, READY_STEP))
    with client(server) as gm:
        gm.create_step(**example_arguments(code))
    (post,) = [s for s in server.seen if s.path == "/api/v1/steps"]
    assert post.headers["content-type"].startswith("multipart/form-data; boundary=")
    parts = _multipart(post.headers["content-type"], post.body)
    fields = parts[:-1]
    assert [(name, value.decode()) for name, _, _, value in fields] == EXAMPLE_FIELDS
    # Form fields carry neither a filename nor a Content-Type.
    assert all(
        filename is None and "content-type" not in headers for _, filename, headers, _ in fields
    )
    name, filename, _, archive = parts[-1]
    assert (name, filename) == ("step_file", "step_file")
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        names = tar.getnames()
    # included_folders, then requirements_path, then function_path (duplicates kept).
    assert names == [
        "src",
        "src/main.py",
        "src/util.py",
        "README.md",
        "requirements.txt",
        "src/main.py",
    ]


# -- archive ------------------------------------------------------------------------------


def test_default_archive_is_the_whole_folder(code: Path) -> None:
    entries = archive_entries({}, "src/main.py")
    assert entries == ["", "src/main.py"]
    with tarfile.open(fileobj=io.BytesIO(build_step_archive(code, entries)), mode="r:gz") as tar:
        members = tar.getmembers()
    assert members[0].name == "" and members[0].isdir()
    assert [m.name for m in members[1:]] == [
        "README.md",
        "notes.txt",
        "requirements.txt",
        "src",
        "src/main.py",
        "src/util.py",
        "src/main.py",
    ]


def test_archive_entries_and_leading_slashes() -> None:
    assert archive_entries(
        {"included_folders": ["/src", "data/x.csv"], "requirements_path": "/req.txt"}, "/m.py"
    ) == ["src", "data/x.csv", "req.txt", "m.py"]
    # Explicit null for included_folders still sends the folder (else no code at all).
    assert archive_entries({"included_folders": None}, None) == [""]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks here")
def test_symlinks_are_stored_not_followed(code: Path, tmp_path: Path) -> None:
    outside = tmp_path / "big.bin"
    outside.write_bytes(b"x" * 100)
    (code / "link.bin").symlink_to(outside)
    data = build_step_archive(code, [""])
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        link = tar.getmember("link.bin")
    assert link.issym()


def test_too_large_code_is_refused_before_sending(server: ScriptedServer, code: Path) -> None:
    (code / "model.bin").write_bytes(b"\0" * (5 * 1024 * 1024))
    with client(server) as gm, pytest.raises(StepCodeError) as caught:
        gm.create_step("s1", "src/main.py", "entry", container_config={"local_folder": str(code)})
    message = str(caught.value)
    assert "model.bin" in message and "included_folders" in message and "5 MB" in message
    assert "POST /api/v1/steps" not in server.paths()
    # The same files, narrowed by included_folders, go through.
    build_step_archive(code, archive_entries({"included_folders": ["src"]}, "src/main.py"))


def test_duplicates_count_once_against_the_limit(code: Path) -> None:
    (code / "src" / "main.py").write_bytes(b"#" * 600)
    build_step_archive(code, ["src", "src/main.py", "src/main.py"], limit=700)
    with pytest.raises(StepCodeError):
        build_step_archive(code, ["src", "src/main.py"], limit=600)


@pytest.mark.parametrize(
    ("entries", "match"),
    [(["missing.py"], "does not exist"), (["../outside"], "outside the local folder")],
)
def test_bad_entries_are_explained(code: Path, entries: list[str], match: str) -> None:
    with pytest.raises(StepCodeError, match=match):
        build_step_archive(code, entries)


def test_missing_local_folder(tmp_path: Path) -> None:
    with pytest.raises(StepCodeError, match="local_folder"):
        build_step_archive(tmp_path / "nope", [""])


def test_creation_arguments_are_checked(server: ScriptedServer) -> None:
    with client(server) as gm:
        with pytest.raises(ValueError, match="120"):
            gm.create_step("s", "f.py", "f", timeout_s=60)
        with pytest.raises(ValueError, match="Input"):
            gm.create_step("s", "f.py", "f", inputs=[{"name": "a"}])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="not both"):
            gm.create_pipeline("p", step_name="s", function_path="f.py")
    assert "POST /api/v1/steps" not in server.paths()
