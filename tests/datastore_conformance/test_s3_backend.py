"""What only the S3 backend has: its settings, the public endpoint, the key prefix, S3's
own refusals, and errors from a misconfigured or unreachable store."""

from __future__ import annotations

import httpx
import pytest

from gristmill_platform.datastore.backend import CompletedPart
from gristmill_platform.datastore.s3 import S3DataStore, _multipart_error
from gristmill_platform.datastore.s3calls import S3CallError, S3Unavailable
from gristmill_platform.datastore.s3setup import S3Options, S3SettingsError, make_clients
from gristmill_platform.errors import AppError, NotFound
from gristmill_platform.settings import Settings
from tests.conftest import free_port
from tests.datastore_conformance.conftest import FAKE_KEYS, REGION
from tests.datastore_conformance.helpers import (
    download,
    end_multipart,
    put_part,
    start_multipart,
    upload,
)
from tests.platform.test_auth import assert_error

PUBLIC = "https://s3.example.com"


def direct(moto, bucket: str | None = None, **overrides) -> S3DataStore:
    settings = Settings(**moto.s3_settings(bucket or moto.new_bucket(), **overrides))
    options = S3Options.from_settings(settings)
    client, presign_client = make_clients(options)
    return S3DataStore(client=client, presign_client=presign_client, bucket=options.bucket,
                       prefix=options.prefix, ttl_s=60,
                       max_object_bytes=overrides.get("datastore_max_object_bytes", 10**12),
                       max_path_length=1024)


# -- settings ---------------------------------------------------------------------------------

def test_s3_without_bucket_is_a_startup_error_naming_the_variable(tmp_path) -> None:
    from gristmill_platform.app import build_state

    settings = Settings(data_dir=tmp_path, datastore_backend="s3", secret_key="k" * 32)
    with pytest.raises(S3SettingsError, match="GRISTMILL_S3_BUCKET"):
        build_state(settings)


@pytest.mark.parametrize(("overrides", "fragment"), [
    ({"s3_access_key_id": "only-the-id"}, "GRISTMILL_S3_SECRET_ACCESS_KEY"),
    ({"s3_secret_access_key": "only-the-secret"}, "GRISTMILL_S3_ACCESS_KEY_ID"),
    ({"s3_prefix": "a/../b"}, "GRISTMILL_S3_PREFIX"),
    ({"s3_prefix": "a//b"}, "GRISTMILL_S3_PREFIX"),
])
def test_inconsistent_s3_settings_are_refused(overrides, fragment) -> None:
    settings = Settings(datastore_backend="s3", s3_bucket="b", **overrides)
    with pytest.raises(S3SettingsError, match=fragment):
        S3Options.from_settings(settings)


@pytest.mark.parametrize(("prefix", "normalized"),
                         [("", ""), ("/", ""), ("env-a", "env-a/"), ("/a/b/", "a/b/")])
def test_prefix_is_normalized(prefix, normalized) -> None:
    settings = Settings(datastore_backend="s3", s3_bucket="b", s3_prefix=prefix)
    assert S3Options.from_settings(settings).prefix == normalized


def test_secret_key_stays_out_of_reprs() -> None:
    settings = Settings(datastore_backend="s3", s3_bucket="b", **FAKE_KEYS)
    assert "testing" not in repr(settings.s3_secret_access_key)


# -- endpoints and keys -----------------------------------------------------------------------

async def test_handed_out_urls_are_signed_for_the_public_endpoint(moto, tmp_path) -> None:
    store = direct(moto, s3_public_endpoint_url=PUBLIC)
    source = tmp_path / "x.bin"
    source.write_bytes(b"abc")
    # the control service's own calls go to the internal endpoint (the moto server)
    assert (await store.upload_from(source, "x.bin")).size == 3
    assert (await store.head("x.bin")).size == 3
    assert (await store.presign_upload("x.bin")).url.startswith(f"{PUBLIC}/{store.bucket}")
    assert (await store.presign_download("x.bin")).startswith(f"{PUBLIC}/{store.bucket}/x.bin?")
    config = await store.create_multipart("big", created_by=None)
    part = await store.presign_part("big", config, part_number=1, chunk_size=10,
                                    total_size=None)
    assert part.url.startswith(f"{PUBLIC}/{store.bucket}/big?") and part.headers == {}


async def test_without_a_public_endpoint_urls_use_the_internal_one(moto) -> None:
    store = direct(moto)
    assert (await store.presign_download("x")).startswith(f"{moto.url}/{store.bucket}/x?")


def test_keys_live_under_the_prefix_and_nothing_else_is_listed(s3_store, s3_api, moto,
                                                                unique) -> None:
    api = s3_api
    s3 = moto.client()
    s3.put_object(Bucket=s3_store.bucket, Key=f"outside-{unique}", Body=b"not ours")
    upload(api, f"inside-{unique}", b"ours")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_store.bucket)["Contents"]}
    assert f"env-a/inside-{unique}" in keys and f"outside-{unique}" in keys
    listed = [i["path"] for i in api.get("/data-store/list").json()["items"]]
    assert f"inside-{unique}" in listed and f"outside-{unique}" not in listed
    assert api.post("/data-store/information", json={"path_to_object": f"outside-{unique}"}
                    ).status_code == 404


def test_presigned_routes_are_not_mounted_on_s3(s3_store) -> None:
    response = httpx.get(f"{s3_store.env.url}/presigned/data-store/object?path=x")
    assert response.status_code == 404


def test_filename_variable_is_refused_in_upload_paths(s3_api, unique) -> None:
    """S3 would replace ${filename} in a POST form's key by the uploaded file's name."""
    response = s3_api.get("/data-store/upload",
                          params={"path_to_object": f"x-{unique}/${{filename}}"})
    assert assert_error(response, 400, "${filename}")["name"] == "InvalidPath"


# -- S3's refusals ----------------------------------------------------------------------------

def test_parts_under_5_mib_are_refused_at_the_end(s3_api, unique) -> None:
    """(The local backend requires parts of exactly chunk_size instead.)"""
    api = s3_api
    path = f"small-{unique}"
    config = start_multipart(api, path)
    etags = [put_part(api, path, config, n, b"z" * 10, 10).headers["etag"] for n in (1, 2)]
    body = assert_error(end_multipart(api, path, config, [
        {"number": n, "metadata": etags[n - 1]} for n in (1, 2)]), 400, "at least 5 MiB")
    assert body["name"] == "InvalidPart"
    assert body["additional_data"] == {"s3_code": "EntityTooSmall"}
    # still usable: end with the first part alone
    assert end_multipart(api, path, config, [{"number": 1, "metadata": etags[0]}]
                         ).status_code == 200
    assert download(api, path).content == b"z" * 10


@pytest.mark.parametrize(("code", "status", "name"), [
    ("InvalidPart", 400, "InvalidPart"), ("InvalidPartOrder", 400, "InvalidPartOrder"),
    ("NoSuchUpload", 404, "NoSuchUpload"), ("EntityTooSmall", 400, "InvalidPart"),
    ("AccessDenied", 502, "DataStoreError"),
])
def test_complete_refusals_are_named_like_the_local_backend(code, status, name) -> None:
    """S3 can still refuse what our checks let through (a part replaced meanwhile)."""
    error = _multipart_error(S3CallError(code, "s3 says no"), "p", "u")
    assert (error.status_code, error.name) == (status, name)
    assert error.additional_data == {"s3_code": code}


async def test_part_signing_respects_the_object_size_limit(moto) -> None:
    store = direct(moto, datastore_max_object_bytes=100)
    config = await store.create_multipart("limited", created_by=None)
    with pytest.raises(AppError) as caught:
        await store.presign_part("limited", config, part_number=3, chunk_size=50,
                                 total_size=None)
    # S3 answers EntityTooLarge with 400, and so does docs/data-store.md
    assert (caught.value.status_code, caught.value.name) == (400, "EntityTooLarge")


async def test_complete_with_a_part_replaced_behind_our_back(moto) -> None:
    """The ETag the client sends is checked against S3's part list."""
    store = direct(moto)
    config = await store.create_multipart("raced", created_by=None)
    etags = []
    for body in (b"first", b"second"):  # the same part number twice: the second wins
        url = (await store.presign_part("raced", config, part_number=1, chunk_size=10,
                                        total_size=None)).url
        etags.append(httpx.put(url, content=body).headers["etag"])
    with pytest.raises(AppError, match="ETag does not match") as caught:
        await store.complete_multipart("raced", config, [CompletedPart(1, etags[0])])
    assert caught.value.name == "InvalidPart"
    info = await store.complete_multipart("raced", config, [CompletedPart(1, etags[1])])
    assert info.size == len(b"second")


async def test_execution_transfers_and_missing_objects(moto, tmp_path) -> None:
    store = direct(moto, s3_prefix="p")
    source = tmp_path / "in.bin"
    source.write_bytes(b"x" * 20_000_000)  # above boto3's multipart threshold
    stored = await store.upload_from(source, ".gristmill/executions/e/inputs/doc")
    assert stored.size == 20_000_000 and stored.path == ".gristmill/executions/e/inputs/doc"
    target = tmp_path / "out.bin"
    got = await store.download_to(".gristmill/executions/e/inputs/doc", target)
    assert got.size == 20_000_000 and target.read_bytes() == source.read_bytes()
    with pytest.raises(NotFound) as caught:
        await store.download_to("missing", tmp_path / "nothing")
    assert caught.value.name == "NoSuchKey"
    assert not (tmp_path / "nothing").exists()
    assert await store.delete("missing") is False
    assert await store.delete(".gristmill/executions/e/inputs/doc") is True
    assert await store.head(".gristmill/executions/e/inputs/doc") is None


# -- a misconfigured or unreachable store -----------------------------------------------------

async def test_missing_bucket_is_a_502_naming_s3s_code(moto) -> None:
    store = direct(moto, bucket="no-such-bucket-here")
    with pytest.raises(S3CallError) as caught:
        await store.list(continuation_token=None, page_size=10)
    assert caught.value.status_code == 502 and "NoSuchBucket" in caught.value.message


async def test_unreachable_store_is_a_503() -> None:
    settings = Settings(datastore_backend="s3", s3_bucket="b", s3_region=REGION,
                        s3_endpoint_url=f"http://127.0.0.1:{free_port()}", **FAKE_KEYS)
    options = S3Options.from_settings(settings)
    client, presign_client = make_clients(options)
    store = S3DataStore(client=client, presign_client=presign_client, bucket="b", ttl_s=60,
                        max_object_bytes=10, max_path_length=1024)
    with pytest.raises(S3Unavailable, match="Cannot reach the S3 data store") as caught:
        await store.head("x")
    assert caught.value.status_code == 503


async def test_a_part_larger_than_signed_cannot_pass_the_object_limit(moto) -> None:
    """A presigned part URL does not sign its length: S3 takes a part of any size. The
    end checks what S3 holds against the object limit, as the local backend checks the
    parts as they arrive."""
    store = direct(moto, datastore_max_object_bytes=100)
    config = await store.create_multipart("over", created_by=None)
    url = (await store.presign_part("over", config, part_number=1, chunk_size=10,
                                    total_size=None)).url
    etag = httpx.put(url, content=b"x" * 150).headers["etag"]
    with pytest.raises(AppError) as caught:
        await store.complete_multipart("over", config, [CompletedPart(1, etag)])
    assert (caught.value.status_code, caught.value.name) == (400, "EntityTooLarge")
    assert await store.head("over") is None


async def test_every_part_but_the_last_holds_the_chunk_size(moto) -> None:
    store = direct(moto)
    mib = 1024 * 1024
    config = await store.create_multipart("uneven", created_by=None)
    etags = []
    for number, size in ((1, 5 * mib + 1), (2, 5 * mib + 2)):
        url = (await store.presign_part("uneven", config, part_number=number,
                                        chunk_size=5 * mib + 1, total_size=None)).url
        etags.append(httpx.put(url, content=b"u" * size).headers["etag"])
    parts = [CompletedPart(n, etags[n - 1]) for n in (1, 2)]
    with pytest.raises(AppError, match="Part 2 holds 5242882 bytes") as caught:
        await store.complete_multipart("uneven", config, parts)
    assert caught.value.name == "InvalidPart"
    # the upload stays usable: the same part sent again at the right size
    url = (await store.presign_part("uneven", config, part_number=2, chunk_size=5 * mib + 1,
                                    total_size=None)).url
    etags[1] = httpx.put(url, content=b"u" * (5 * mib)).headers["etag"]
    info = await store.complete_multipart(
        "uneven", config, [CompletedPart(n, etags[n - 1]) for n in (1, 2)])
    assert info.size == 10 * mib + 1
