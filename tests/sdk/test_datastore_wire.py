"""Data store wire details that the real server cannot show (what exactly is sent, and
transfers cut half-way), against a scripted HTTP server."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from gristmill import APIConnectionError, DataStoreError, Gristmill
from tests.sdk._scripted_server import Reply, ScriptedServer


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer().running() as srv:
        srv.allow_login()
        yield srv


def client(server: ScriptedServer, **options: object) -> Gristmill:
    return Gristmill(server.url, "gm_t_t", progress=False, max_retries=0, **options)  # type: ignore[arg-type]


def _json_bodies(server: ScriptedServer, route: str) -> list[dict[str, object]]:
    return [
        json.loads(s.body) for s in server.seen if f"{s.method} {s.path.split('?')[0]}" == route
    ]


@pytest.mark.parametrize(
    ("size", "expected_sizes"), [(2500, [None, None, 2500]), (2000, [None, None])]
)
def test_multipart_shape(
    server: ScriptedServer, size: int, expected_sizes: list[int | None]
) -> None:
    config = {"upload_id": "u1", "key": "k"}
    server.script("POST /api/v1/data-store/upload/multipart", Reply(200, config))
    server.script(
        "POST /api/v1/data-store/upload/multipart/part",
        Reply(200, {"signed_url": f"{server.url}/part", "headers": {"x-extra": "1"}}),
    )
    server.script("PUT /part", Reply(200, b"", {"ETag": '"etag-1"'}))
    server.script("POST /api/v1/data-store/upload/multipart/end", Reply(204))
    data = bytes(range(256)) * 10
    with client(server, multipart_threshold=1000, multipart_part_size=1000) as gm:
        gm.upload_data_store_object(io.BytesIO(data[:size]), "dir/obj.bin")

    # Parts travel concurrently: compare them in part order, not arrival order.
    parts = sorted(
        _json_bodies(server, "POST /api/v1/data-store/upload/multipart/part"),
        key=lambda p: int(p["part_number"]),  # type: ignore[call-overload]
    )
    assert [p["part_number"] for p in parts] == list(range(1, len(expected_sizes) + 1))
    assert [p.get("size") for p in parts] == expected_sizes
    assert all(
        p["chunk_size"] == 1000
        and p["multipart_upload_configuration"] == config
        and p["path_to_object"] == "dir/obj.bin"
        for p in parts
    )
    puts = [s for s in server.seen if s.method == "PUT"]
    chunks = [data[i : min(i + 1000, size)] for i in range(0, size, 1000)]
    assert sorted(p.body for p in puts) == sorted(chunks)
    assert all(p.headers["x-extra"] == "1" and "authorization" not in p.headers for p in puts)
    (end,) = _json_bodies(server, "POST /api/v1/data-store/upload/multipart/end")
    assert end == {
        "path_to_object": "dir/obj.bin",
        "multipart_upload_configuration": config,
        "parts": [{"number": n, "metadata": '"etag-1"'} for n in range(1, len(expected_sizes) + 1)],
    }


def test_a_refused_part_fails_the_upload(server: ScriptedServer) -> None:
    server.script("POST /api/v1/data-store/upload/multipart", Reply(200, {"upload_id": "u"}))
    server.script(
        "POST /api/v1/data-store/upload/multipart/part",
        Reply(200, {"signed_url": f"{server.url}/part", "headers": {}}),
    )
    server.script(
        "PUT /part",
        Reply(403, b"<Error><Code>SignatureDoesNotMatch</Code><Message>bad</Message></Error>"),
    )
    with (
        client(server, multipart_threshold=10, multipart_part_size=10) as gm,
        pytest.raises(DataStoreError, match="SignatureDoesNotMatch"),
    ):
        gm.upload_data_store_object(io.BytesIO(b"x" * 25), "obj")
    assert "POST /api/v1/data-store/upload/multipart/end" not in server.paths()


def test_single_part_form_and_sizes(server: ScriptedServer) -> None:
    server.script(
        "GET /api/v1/data-store/upload",
        Reply(200, {"signed_url": f"{server.url}/post", "fields": {"key": "obj"}}),
    )
    server.script("POST /post", Reply(204))
    with client(server) as gm:
        gm.upload_data_store_object(io.BytesIO(b"hello"), "obj")
    (post,) = [s for s in server.seen if s.path == "/post"]
    assert post.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert int(post.headers["content-length"]) == len(post.body)
    assert "transfer-encoding" not in post.headers
    assert b'name="key"\r\n\r\nobj\r\n' in post.body
    assert b'name="file"; filename="file"' in post.body
    assert "authorization" not in post.headers
    (presign,) = [s for s in server.seen if s.path.startswith("/api/v1/data-store/upload")]
    assert presign.path == "/api/v1/data-store/upload?path_to_object=obj"


def test_download_request_is_a_form(server: ScriptedServer) -> None:
    server.script(
        "POST /api/v1/data-store/download", Reply(200, {"signed_url": f"{server.url}/blob"})
    )
    server.script("GET /blob", Reply(200, b"content"))
    buffer = io.BytesIO()
    with client(server) as gm:
        gm.download_data_store_object("a b/c.txt", buffer)
    assert buffer.read() == b"content"
    (presign,) = [s for s in server.seen if s.path == "/api/v1/data-store/download"]
    assert presign.headers["content-type"] == "application/x-www-form-urlencoded"
    assert presign.body == b"path_to_object=a+b%2Fc.txt"


def test_interrupted_download_leaves_no_partial_file(
    server: ScriptedServer, tmp_path: Path
) -> None:
    server.script(
        "POST /api/v1/data-store/download", Reply(200, {"signed_url": f"{server.url}/blob"})
    )
    server.script("GET /blob", Reply(200, b"x" * 100, truncate_to_length=10_000))
    dest = tmp_path / "model.bin"
    dest.write_bytes(b"previous version")
    with client(server) as gm, pytest.raises(APIConnectionError):
        gm.download_data_store_object("model.bin", dest)
    assert dest.read_bytes() == b"previous version"
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]

    buffer = io.BytesIO()
    with client(server) as gm, pytest.raises(APIConnectionError):
        gm.download_data_store_object("model.bin", buffer)
    assert buffer.getvalue() == b""
