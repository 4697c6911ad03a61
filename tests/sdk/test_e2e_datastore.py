"""Every data store call against the real control service (local data store backend)."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from gristmill import BadRequestError, DataStoreError, Gristmill, NotFoundError
from tests.conftest import GristmillEnv, start_environment
from tests.sdk.conftest import RequestLog

PART = 64 * 1024


def _payload(size: int) -> bytes:
    return os.urandom(size)


def _client(env: GristmillEnv, **options: object) -> Gristmill:
    options.setdefault("progress", False)
    return Gristmill(env.url, env.sdk_token, **options)  # type: ignore[arg-type]


# -- small objects --


def test_upload_information_download_delete_from_a_path(
    gm: Gristmill, unique: str, tmp_path: Path
) -> None:
    src = tmp_path / "iris.csv"
    data = b"sepal_length,species\n5.1,setosa\n"
    src.write_bytes(data)
    key = f"sdk-{unique}/dataset/iris.csv"

    assert gm.upload_data_store_object(str(src), key) is None

    info = gm.get_data_store_object_information(key)
    assert info["path"] == key
    assert info["size"] == len(data)
    assert isinstance(info["last_modified"], str) and info["last_modified"]

    dest = tmp_path / "out" / "copy.csv"
    dest.parent.mkdir()
    assert gm.download_data_store_object(key, str(dest)) is None
    assert dest.read_bytes() == data
    # The temp file was renamed, nothing else is left behind.
    assert [p.name for p in dest.parent.iterdir()] == ["copy.csv"]

    assert gm.delete_data_store_object(key) == {"path": key}
    with pytest.raises(NotFoundError):
        gm.get_data_store_object_information(key)


def test_buffers_and_pathlib(gm: Gristmill, unique: str, tmp_path: Path) -> None:
    key = f"sdk-{unique}/blob.bin"
    data = _payload(10_000)
    buffer = io.BytesIO(data)
    buffer.seek(1234)  # sent from the start anyway, as craft-ai-sdk does
    gm.upload_data_store_object(filepath_or_buffer=buffer, object_path_in_datastore=key)

    out = io.BytesIO()
    gm.download_data_store_object(object_path_in_datastore=key, filepath_or_buffer=out)
    assert out.tell() == 0  # rewound, ready to read
    assert out.read() == data

    gm.download_data_store_object(key, tmp_path / "blob.bin")
    assert (tmp_path / "blob.bin").read_bytes() == data

    with (tmp_path / "blob.bin").open("rb") as f:
        gm.upload_data_store_object(f, f"{key}.again")
    assert gm.get_data_store_object_information(f"{key}.again")["size"] == len(data)
    gm.delete_data_store_object(key)
    gm.delete_data_store_object(f"{key}.again")


def test_empty_object(gm: Gristmill, unique: str) -> None:
    key = f"sdk-{unique}/empty"
    gm.upload_data_store_object(io.BytesIO(b""), key)
    assert gm.get_data_store_object_information(key)["size"] == 0
    out = io.BytesIO(b"")
    gm.download_data_store_object(key, out)
    assert out.getvalue() == b""
    gm.delete_data_store_object(key)


def test_overwrite(gm: Gristmill, unique: str) -> None:
    key = f"sdk-{unique}/v.txt"
    gm.upload_data_store_object(io.BytesIO(b"one"), key)
    gm.upload_data_store_object(io.BytesIO(b"second"), key)
    out = io.BytesIO()
    gm.download_data_store_object(key, out)
    assert out.getvalue() == b"second"
    gm.delete_data_store_object(key)


def test_single_part_below_threshold(gm: Gristmill, request_log: RequestLog, unique: str) -> None:
    gm.upload_data_store_object(io.BytesIO(b"abc"), f"sdk-{unique}/s.txt")
    paths = request_log.paths()
    assert "GET /api/v1/data-store/upload" in paths
    assert not any("multipart" in p for p in paths)
    gm.delete_data_store_object(f"sdk-{unique}/s.txt")


# -- multipart --


@pytest.mark.parametrize("size", [3 * PART + 123, 3 * PART, PART])
def test_multipart_upload(
    gristmill_env: GristmillEnv, request_log: RequestLog, unique: str, tmp_path: Path, size: int
) -> None:
    data = _payload(size)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    key = f"sdk-{unique}/big-{size}.bin"
    http = httpx.Client(timeout=60, event_hooks=request_log.hooks())
    with _client(
        gristmill_env, multipart_threshold=PART, multipart_part_size=PART, http_client=http
    ) as gm:
        gm.upload_data_store_object(src, key)
        # The SDK retries a refused or timed-out presign (it is idempotent), so count the
        # answered ones: each part presigned exactly once, numbered from 1.
        presign = "POST /api/v1/data-store/upload/multipart/part"
        answered = request_log.answered(presign)
        numbers = sorted(json.loads(r.request.content)["part_number"] for r in answered)
        retried = [r.status_code for r in request_log.answered(presign, ok=False)]
        assert numbers == list(range(1, -(-size // PART) + 1)), f"refused tries: {retried}"
        assert "POST /api/v1/data-store/upload/multipart/end" in request_log.paths()
        assert "GET /api/v1/data-store/upload" not in request_log.paths()

        assert gm.get_data_store_object_information(key)["size"] == size
        dest = tmp_path / "back.bin"
        gm.download_data_store_object(key, dest)
        assert dest.read_bytes() == data
        gm.delete_data_store_object(key)
    http.close()


def test_multipart_from_a_buffer(gristmill_env: GristmillEnv, unique: str) -> None:
    data = _payload(2 * PART + 1)
    key = f"sdk-{unique}/buf.bin"
    with _client(gristmill_env, multipart_threshold=PART, multipart_part_size=PART) as gm:
        gm.upload_data_store_object(io.BytesIO(data), key)
        out = io.BytesIO()
        gm.download_data_store_object(key, out)
        assert out.getvalue() == data
        gm.delete_data_store_object(key)


def test_multipart_settings_from_craft_ai_variables(
    gristmill_env: GristmillEnv,
    monkeypatch: pytest.MonkeyPatch,
    request_log: RequestLog,
    unique: str,
) -> None:
    monkeypatch.setenv("CRAFT_AI__MULTIPART_THRESHOLD__B", str(PART))
    monkeypatch.setenv("CRAFT_AI__MULTIPART_PART_SIZE__B", str(PART))
    http = httpx.Client(timeout=60, event_hooks=request_log.hooks())
    key = f"sdk-{unique}/env.bin"
    with _client(gristmill_env, http_client=http) as gm:
        gm.upload_data_store_object(io.BytesIO(_payload(PART + 5)), key)
        assert len(request_log.answered("POST /api/v1/data-store/upload/multipart/part")) == 2
        gm.delete_data_store_object(key)
    http.close()


# -- listing --


def test_list_and_iterate(gm: Gristmill, unique: str) -> None:
    keys = [f"sdk-{unique}/list/{i}.txt" for i in range(3)]
    for i, key in enumerate(keys):
        gm.upload_data_store_object(io.BytesIO(b"x" * (i + 1)), key)
    listed = {o["path"]: o for o in gm.list_data_store_objects() if o["path"] in keys}
    assert set(listed) == set(keys)
    for i, key in enumerate(keys):
        assert listed[key]["size"] == i + 1
        assert isinstance(listed[key]["size"], int)
        assert listed[key]["last_modified"]
    iterated = [o["path"] for o in gm.iter_data_store_objects() if o["path"] in keys]
    assert sorted(iterated) == sorted(keys)
    for key in keys:
        gm.delete_data_store_object(key)


@pytest.fixture(scope="module")
def small_pages_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GristmillEnv]:
    """An environment listing 2 objects per page, to exercise continuation tokens."""
    data_dir = tmp_path_factory.mktemp("env-small-pages")
    server, env, _ = start_environment(
        data_dir, f"sqlite:///{data_dir / 'db.sqlite3'}", datastore_list_page_size=2
    )
    try:
        yield env
    finally:
        server.stop()


def test_listing_follows_continuation_tokens(small_pages_env: GristmillEnv) -> None:
    log = RequestLog()
    http = httpx.Client(timeout=60, event_hooks={"request": [log]})
    keys = sorted(f"paged/{i:02d}.txt" for i in range(5))
    with _client(small_pages_env, http_client=http) as gm:
        for key in keys:
            gm.upload_data_store_object(io.BytesIO(key.encode()), key)
        log.clear()
        assert sorted(o["path"] for o in gm.list_data_store_objects()) == keys
        lists = [r for r in log.requests if r.url.path == "/api/v1/data-store/list"]
        assert len(lists) == 3
        assert all(r.url.params["include_continuation_token"] == "t" for r in lists)
        assert "continuation_token" not in lists[0].url.params
        assert all(r.url.params["continuation_token"] for r in lists[1:])

        # The iterator fetches pages only as they are consumed.
        log.clear()
        first = next(gm.iter_data_store_objects())
        assert first["path"] in keys
        assert len([r for r in log.requests if r.url.path == "/api/v1/data-store/list"]) == 1
    http.close()


# -- errors --


def test_missing_object_is_not_found_with_the_server_message(
    gm: Gristmill, unique: str, tmp_path: Path
) -> None:
    key = f"sdk-{unique}/nope.txt"
    with pytest.raises(NotFoundError) as err:
        gm.get_data_store_object_information(key)
    assert key in err.value.message
    assert err.value.request_id
    assert key in str(err.value)

    dest = tmp_path / "nope.txt"
    with pytest.raises(NotFoundError):
        gm.download_data_store_object(key, dest)
    assert list(tmp_path.iterdir()) == []

    with pytest.raises(NotFoundError):
        gm.delete_data_store_object(key)


@pytest.mark.parametrize("bad", ["../escape.txt", "/absolute.txt", "a//b", ""])
def test_bad_path_is_a_bad_request(gm: Gristmill, bad: str) -> None:
    with pytest.raises(BadRequestError) as err:
        gm.upload_data_store_object(io.BytesIO(b"x"), bad)
    assert err.value.status_code == 400
    assert err.value.message
    with pytest.raises(BadRequestError):
        gm.get_data_store_object_information(bad)


def test_tampered_presigned_url_is_a_data_store_error(gm: Gristmill, unique: str) -> None:
    key = f"sdk-{unique}/signed.txt"
    gm.upload_data_store_object(io.BytesIO(b"secret"), key)
    signed = gm._transport.request(
        "POST", gm._api_url("/data-store/download"), data={"path_to_object": key}
    )["signed_url"]
    parts = urlsplit(signed)
    query = [
        (k, "0" * len(v) if k.lower().endswith("signature") else v)
        for k, v in parse_qsl(parts.query)
    ]
    tampered = urlunsplit(parts._replace(query=urlencode(query)))
    assert tampered != signed
    with pytest.raises(DataStoreError) as err:
        gm._transport.presigned("GET", tampered)
    assert (err.value.status_code, err.value.code) == (403, "SignatureDoesNotMatch")
    assert err.value.message
    assert "SignatureDoesNotMatch" in str(err.value)
    gm.delete_data_store_object(key)


def test_text_mode_buffers_are_refused_before_any_request(
    gm: Gristmill, request_log: RequestLog
) -> None:
    with pytest.raises(TypeError, match="binary"):
        gm.upload_data_store_object(io.StringIO("text"), "x.txt")
    with pytest.raises(TypeError, match="binary|text"):
        gm.download_data_store_object("x.txt", io.StringIO())
    with pytest.raises(ValueError, match="write"):
        gm.download_data_store_object("x.txt", 42)  # type: ignore[arg-type]
    assert request_log.paths() == []


def test_a_folder_or_a_missing_folder_is_refused_naming_the_given_path(
    gm: Gristmill, request_log: RequestLog, unique: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = f"sdk-dest-{unique}/iris.csv"
    gm.upload_data_store_object(io.BytesIO(b"a,b\n1,2\n"), key)
    request_log.clear()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "existing").mkdir()
    # the parameter is the file to write (docs/sdk.md): a folder is refused, not filled
    with pytest.raises(IsADirectoryError) as err:
        gm.download_data_store_object(key, "existing")
    assert "'existing'" in str(err.value) and "is a folder" in str(err.value)
    assert "existing/iris.csv" in str(err.value)
    assert "gristmill-part" not in str(err.value)
    with pytest.raises(FileNotFoundError) as missing:
        gm.download_data_store_object(key, Path("nodir") / "x.csv")
    assert "'nodir/x.csv'" in str(missing.value) and "'nodir'" in str(missing.value)
    assert "gristmill-part" not in str(missing.value)
    (tmp_path / "a-file").write_text("keep")
    with pytest.raises(NotADirectoryError, match="'a-file/x.csv'"):
        gm.download_data_store_object(key, "a-file/x.csv")
    # checked before the transfer, and nothing left behind
    assert request_log.paths() == []
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a-file", "existing"]
    gm.download_data_store_object(key, "existing/iris.csv")
    assert (tmp_path / "existing" / "iris.csv").read_bytes() == b"a,b\n1,2\n"
    gm.delete_data_store_object(key)


# -- progress bars --


def _transfer(env: GristmillEnv, key: str, **options: object) -> None:
    with Gristmill(env.url, env.sdk_token, **options) as gm:  # type: ignore[arg-type]
        gm.upload_data_store_object(io.BytesIO(_payload(5000)), key)
        gm.download_data_store_object(key, io.BytesIO())
        gm.delete_data_store_object(key)


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make rich treat the captured stderr as a terminal, where bars show by default."""
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.delenv("GRISTMILL_PROGRESS", raising=False)


def test_progress_shows_by_default_on_a_terminal(
    gristmill_env: GristmillEnv, unique: str, terminal: None, capfd: pytest.CaptureFixture[str]
) -> None:
    _transfer(gristmill_env, f"sdk-{unique}/loud.bin")
    out, err = capfd.readouterr()
    assert out == ""
    assert "Uploading" in err and "Downloading loud.bin" in err


def test_progress_variable_turns_bars_off(
    gristmill_env: GristmillEnv,
    unique: str,
    terminal: None,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GRISTMILL_PROGRESS", "0")
    _transfer(gristmill_env, f"sdk-{unique}/quiet.bin")
    assert capfd.readouterr() == ("", "")


def test_progress_argument_turns_bars_off(
    gristmill_env: GristmillEnv,
    unique: str,
    terminal: None,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GRISTMILL_PROGRESS", "1")  # the argument wins
    _transfer(gristmill_env, f"sdk-{unique}/quiet2.bin", progress=False)
    assert capfd.readouterr() == ("", "")


def test_progress_is_off_by_default_when_not_a_terminal(
    gristmill_env: GristmillEnv,
    unique: str,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("TTY_COMPATIBLE", "FORCE_COLOR", "GRISTMILL_PROGRESS"):
        monkeypatch.delenv(name, raising=False)
    _transfer(gristmill_env, f"sdk-{unique}/ci.bin")
    assert capfd.readouterr() == ("", "")
