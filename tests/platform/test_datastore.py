"""The local data store over HTTP, as a raw client sees it (contract §9)."""

from __future__ import annotations

import os
import socket
import time
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit
from xml.etree import ElementTree

import httpx
import pytest

from gristmill_platform.datastore.signing import UrlSigner
from tests.platform.test_auth import assert_error


@pytest.fixture(scope="module")
def gristmill_env(database, tmp_path_factory):
    """Its own environment: these tests count blob files, which runs elsewhere would move."""
    from tests.conftest import _create_postgres_database, _drop_postgres_database, start_environment

    if database.kind == "sqlite":
        url, drop = f"sqlite:///{tmp_path_factory.mktemp('ds-db') / 'db.sqlite3'}", None
    else:
        admin = database.url.rsplit("/", 1)[0] + "/test"
        name, url = _create_postgres_database(admin)
        drop = (admin, name)
    server, env, _ = start_environment(tmp_path_factory.mktemp(f"ds-{database.kind}"), url,
                                       datastore_list_page_size=5)
    env.database = database
    try:
        yield env
    finally:
        server.stop()
        if drop:
            _drop_postgres_database(*drop)


def upload(api: httpx.Client, path: str, data: bytes) -> httpx.Response:
    presigned = api.get("/data-store/upload", params={"path_to_object": path})
    assert presigned.status_code == 200, presigned.text
    body = presigned.json()
    return httpx.post(body["signed_url"], data=body["fields"], files={"file": ("f", data)})


def download(api: httpx.Client, path: str) -> httpx.Response:
    signed = api.post("/data-store/download", data={"path_to_object": path})
    assert signed.status_code == 200, signed.text
    return httpx.get(signed.json()["signed_url"])


def s3_error(response: httpx.Response) -> dict[str, str]:
    root = ElementTree.fromstring(response.content)
    return {child.tag: child.text or "" for child in root}


def blob_files(env) -> set[Path]:
    return {p for p in (env.data_dir / "datastore" / "blobs").rglob("*") if p.is_file()}


def test_round_trip_information_list_delete(api, unique) -> None:
    path = f"rt-{unique}/data.bin"
    payload = os.urandom(300_000)
    assert upload(api, path, payload).status_code == 204
    got = download(api, path)
    assert got.status_code == 200 and got.content == payload
    assert got.headers["content-type"] == "application/octet-stream"
    info = api.post("/data-store/information", json={"path_to_object": path}).json()
    assert info["path"] == path and info["size"] == len(payload)
    assert info["last_modified"].endswith("Z")
    # an HTTP date in English (RFC 9110), the same instant as the information's, to the second
    served = parsedate_to_datetime(got.headers["last-modified"])
    assert got.headers["last-modified"].endswith(" GMT")
    assert served == datetime.fromisoformat(info["last_modified"].replace("Z", "+00:00")
                                            ).replace(microsecond=0)
    listed = api.get("/data-store/list", params={"include_continuation_token": "t"}).json()
    assert path in {item["path"] for item in listed["items"]}
    deleted = api.request("DELETE", "/data-store/delete", data={"path_to_object": path})
    assert deleted.json() == {"path": path}
    assert_error(api.post("/data-store/information", json={"path_to_object": path}), 404,
                 "not found")


def test_overwrite_replaces_the_object_and_frees_the_old_blob(gristmill_env, api, unique) -> None:
    path = f"ow-{unique}.txt"
    upload(api, path, b"first")
    before = blob_files(gristmill_env)
    upload(api, path, b"second!")
    assert download(api, path).content == b"second!"
    assert len(blob_files(gristmill_env)) == len(before)


def test_delete_accepts_json_too_and_missing_object_is_404(api, unique) -> None:
    path = f"dj-{unique}"
    upload(api, path, b"x")
    assert api.request("DELETE", "/data-store/delete", json={"path_to_object": path}).json() == {
        "path": path}
    assert_error(api.request("DELETE", "/data-store/delete", data={"path_to_object": path}),
                 404, "not found")


def test_download_of_a_missing_object_is_404(api, unique) -> None:
    response = api.post("/data-store/download", data={"path_to_object": f"none-{unique}"})
    body = assert_error(response, 404, "not found")
    assert body["name"] == "NoSuchKey"


@pytest.mark.parametrize("bad", ["../x", "/abs", "a//b", "a/", "a/./b", "x" * 2000])
def test_bad_paths_get_400_on_every_route(api, bad) -> None:
    assert_error(api.get("/data-store/upload", params={"path_to_object": bad}), 400, "path")
    assert_error(api.post("/data-store/download", data={"path_to_object": bad}), 400, "path")
    assert_error(api.post("/data-store/information", json={"path_to_object": bad}), 400, "path")
    assert_error(api.request("DELETE", "/data-store/delete", data={"path_to_object": bad}),
                 400, "path")
    assert_error(api.post("/data-store/upload/multipart", json={"path_to_object": bad}), 400,
                 "path")


def test_missing_path_field_is_a_clear_400(api) -> None:
    assert_error(api.post("/data-store/download", data={}), 400, "path_to_object")


def test_listing_pages_with_continuation_tokens(gristmill_env, api, unique) -> None:
    paths = sorted(f"page-{unique}/{i:02d}" for i in range(7))
    for path in paths:
        upload(api, path, b"p")
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        params = {"include_continuation_token": "True"}
        if token:
            params["continuation_token"] = token
        page = api.get("/data-store/list", params=params).json()
        seen += [item["path"] for item in page["items"]]
        pages += 1
        token = page["continuation_token"]
        if not token:
            break
    assert [p for p in seen if p.startswith(f"page-{unique}/")] == paths
    assert len(seen) == len(set(seen))
    assert pages > 1


def test_listing_a_folder_lists_only_what_is_under_it(api, unique) -> None:
    inside = [f"folder-{unique}/a/{i}" for i in range(3)] + [f"folder-{unique}/a/deep/x"]
    outside = [f"folder-{unique}/ab", f"folder-{unique}/b/0", f"other-{unique}/a/0"]
    for path in inside + outside:
        upload(api, path, b"f")
    for folder in (f"folder-{unique}/a", f"folder-{unique}/a/"):
        listed = api.get("/data-store/list", params={"folder_path": folder}).json()
        assert sorted(i["path"] for i in listed["items"]) == sorted(inside)
        assert listed["continuation_token"] is None
        seen: list[str] = []
        token = None
        while True:
            params = {"folder_path": folder, "include_continuation_token": "True"}
            if token:
                params["continuation_token"] = token
            page = api.get("/data-store/list", params=params).json()
            seen += [i["path"] for i in page["items"]]
            token = page["continuation_token"]
            if not token:
                break
        assert sorted(seen) == sorted(inside)
    assert api.get("/data-store/list", params={"folder_path": f"none-{unique}"}).json()[
        "items"] == []
    assert_error(api.get("/data-store/list", params={"folder_path": "../etc"}), 400, "path")


def test_garbage_continuation_token_is_400(api) -> None:
    response = api.get("/data-store/list",
                       params={"include_continuation_token": "t", "continuation_token": "%%%"})
    assert_error(response, 400, "continuation token")


# -- signed URLs ------------------------------------------------------------------------------

def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(changes)
    return parts._replace(query=urlencode(query)).geturl()


def test_tampered_download_url_is_403(api, unique) -> None:
    path = f"tamper-{unique}"
    upload(api, path, b"secret")
    upload(api, f"{path}-other", b"other")
    url = api.post("/data-store/download", data={"path_to_object": path}).json()["signed_url"]
    for tampered in (_with_query(url, path=f"{path}-other"),
                     _with_query(url, expires="99999999999"),
                     _with_query(url, signature="0" * 64)):
        response = httpx.get(tampered)
        assert response.status_code == 403
        assert s3_error(response)["Code"] in ("SignatureDoesNotMatch", "AccessDenied")


def test_expired_download_url_is_403(gristmill_env, api, unique) -> None:
    path = f"expired-{unique}"
    upload(api, path, b"x")
    signer = UrlSigner(key=gristmill_env.settings.secret_key.encode())
    params = signer.sign("get", {"path": path}, ttl_s=10, now=time.time() - 60)
    response = httpx.get(f"{gristmill_env.url}/presigned/data-store/object?{urlencode(params)}")
    assert response.status_code == 403
    assert "expired" in s3_error(response)["Message"]


def test_tampered_or_expired_upload_policy_writes_nothing(gristmill_env, api, unique) -> None:
    path = f"policy-{unique}"
    presigned = api.get("/data-store/upload", params={"path_to_object": path}).json()
    before = blob_files(gristmill_env)
    retargeted = {**presigned["fields"], "key": f"{path}-elsewhere"}
    response = httpx.post(presigned["signed_url"], data=retargeted, files={"file": b"x"})
    assert response.status_code == 403 and s3_error(response)["Code"] == "AccessDenied"
    signer = UrlSigner(key=gristmill_env.settings.secret_key.encode())
    stale = signer.post_policy(key=path, max_size=10, ttl_s=1, now=time.time() - 60)
    response = httpx.post(presigned["signed_url"], data=stale, files={"file": b"x"})
    assert response.status_code == 403 and "expired" in s3_error(response)["Message"]
    assert blob_files(gristmill_env) == before
    for name in (path, f"{path}-elsewhere"):
        assert api.post("/data-store/information", json={"path_to_object": name}
                        ).status_code == 404


def test_upload_over_the_policy_size_is_refused_and_cleaned(gristmill_env, api, unique) -> None:
    path = f"toolarge-{unique}"
    signer = UrlSigner(key=gristmill_env.settings.secret_key.encode())
    fields = signer.post_policy(key=path, max_size=1000, ttl_s=60)
    before = blob_files(gristmill_env)
    response = httpx.post(f"{gristmill_env.url}/presigned/data-store/upload", data=fields,
                          files={"file": os.urandom(5000)})
    assert response.status_code == 400 and s3_error(response)["Code"] == "EntityTooLarge"
    assert blob_files(gristmill_env) == before


def test_upload_form_without_file_is_400(api, unique) -> None:
    presigned = api.get("/data-store/upload", params={"path_to_object": f"nf-{unique}"}).json()
    response = httpx.post(presigned["signed_url"], data=presigned["fields"],
                          files={"other": b"x"})
    assert response.status_code == 400 and "file" in s3_error(response)["Message"]


def form_head(fields: dict[str, str], boundary: str) -> str:
    """A presigned upload's multipart body up to the first byte of its file."""
    return "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in fields.items()
    ) + f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\n'


def test_interrupted_upload_leaves_no_object_and_no_blob(gristmill_env, api, unique) -> None:
    path = f"cut-{unique}"
    presigned = api.get("/data-store/upload", params={"path_to_object": path}).json()
    before = blob_files(gristmill_env)
    boundary = "gristmillboundary"
    head = form_head(presigned["fields"], boundary)
    url = urlsplit(presigned["signed_url"])
    declared = len(head) + 10_000_000
    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.sendall(
            f"POST {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {declared}\r\n\r\n".encode() + head.encode()
            + os.urandom(3_000_000)
        )
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while blob_files(gristmill_env) != before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert blob_files(gristmill_env) == before
    assert api.post("/data-store/information", json={"path_to_object": path}).status_code == 404


@pytest.mark.parametrize("tail", [b"", b"\r\n--gristmillboundary", b"\r\n--gristmillbound"])
def test_a_body_cut_short_is_refused_and_leaves_nothing(gristmill_env, api, unique,
                                                        tail: bytes) -> None:
    """A whole request (its length as declared) whose form lacks its closing boundary:
    the file's bytes may be only the first of them, so nothing is stored."""
    path = f"cutform-{unique}"
    presigned = api.get("/data-store/upload", params={"path_to_object": path}).json()
    before = blob_files(gristmill_env)
    boundary = "gristmillboundary"
    head = form_head(presigned["fields"], boundary)
    response = httpx.post(presigned["signed_url"], content=head.encode() + b"B" * 1000 + tail,
                          headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 400, response.text
    error = s3_error(response)
    assert error["Code"] == "MalformedPOSTRequest" and "cut short" in error["Message"]
    assert blob_files(gristmill_env) == before
    assert api.post("/data-store/information", json={"path_to_object": path}).status_code == 404
    # the same form, whole, with or without the line break after its closing boundary
    for ending in (b"\r\n--gristmillboundary--\r\n", b"\r\n--gristmillboundary--"):
        whole = httpx.post(presigned["signed_url"], content=head.encode() + b"B" * 1000 + ending,
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert whole.status_code == 204, whole.text
        info = api.post("/data-store/information", json={"path_to_object": path})
        assert info.json()["size"] == 1000


# -- multipart --------------------------------------------------------------------------------

def start_multipart(api, path: str) -> dict:
    response = api.post("/data-store/upload/multipart", json={"path_to_object": path})
    assert response.status_code == 200, response.text
    return response.json()


def put_part(api, path, config, number, chunk, chunk_size, size=None) -> httpx.Response:
    body = {"path_to_object": path, "multipart_upload_configuration": config,
            "chunk_size": chunk_size, "part_number": number}
    if size is not None:
        body["size"] = size
    signed = api.post("/data-store/upload/multipart/part", json=body)
    assert signed.status_code == 200, signed.text
    return httpx.put(signed.json()["signed_url"], content=chunk,
                     headers=signed.json()["headers"])


def test_multipart_upload_assembles_parts_in_order(api, unique) -> None:
    path = f"mp-{unique}/big.bin"
    chunk_size = 256 * 1024
    data = os.urandom(chunk_size * 3 + 1234)
    config = start_multipart(api, path)
    parts = []
    chunks = [data[i:i + chunk_size] for i in range(0, len(data), chunk_size)]
    for number in (3, 1, 4, 2):  # parts may arrive in any order
        chunk = chunks[number - 1]
        size = len(data) if len(chunk) < chunk_size else None
        response = put_part(api, path, config, number, chunk, chunk_size, size)
        assert response.status_code == 200
        parts.append({"number": number, "metadata": response.headers["etag"]})
    parts.sort(key=lambda p: p["number"])
    end = api.post("/data-store/upload/multipart/end", json={
        "path_to_object": path, "multipart_upload_configuration": config, "parts": parts})
    assert end.status_code == 200, end.text
    assert end.json()["size"] == len(data)
    assert download(api, path).content == data


def test_multipart_end_checks_the_parts(api, unique) -> None:
    path = f"mpbad-{unique}"
    chunk_size = 1000
    config = start_multipart(api, path)
    first = put_part(api, path, config, 1, b"a" * 1000, chunk_size)
    short = put_part(api, path, config, 2, b"b" * 10, chunk_size)
    put_part(api, path, config, 3, b"c" * 5, chunk_size)

    def end(parts):
        return api.post("/data-store/upload/multipart/end", json={
            "path_to_object": path, "multipart_upload_configuration": config, "parts": parts})

    etag1, etag2 = first.headers["etag"], short.headers["etag"]
    assert_error(end([{"number": 1, "metadata": '"bogus"'}]), 400, "ETag")
    assert_error(end([{"number": 2, "metadata": etag2}]), 400, "numbered from 1")
    assert_error(end([{"number": 1, "metadata": etag1}, {"number": 4}]), 400, "numbered")
    assert_error(end([{"number": 1, "metadata": etag1}, {"number": 2, "metadata": etag2},
                      {"number": 3}]), 400, "every part but the last")
    assert_error(end([]), 400, "No part")
    assert api.post("/data-store/information", json={"path_to_object": path}).status_code == 404
    # the upload is still usable after refused attempts
    assert end([{"number": 1, "metadata": etag1}, {"number": 2, "metadata": etag2}]
               ).status_code == 200
    assert download(api, path).content == b"a" * 1000 + b"b" * 10


def test_multipart_rejections(api, unique) -> None:
    path = f"mprej-{unique}"
    config = start_multipart(api, path)
    body = {"path_to_object": path, "multipart_upload_configuration": config,
            "chunk_size": 100, "part_number": 1}
    assert_error(api.post("/data-store/upload/multipart/part",
                          json={**body, "multipart_upload_configuration": {"upload_id": "nope"}}),
                 404, "No multipart upload")
    assert_error(api.post("/data-store/upload/multipart/part",
                          json={**body, "path_to_object": f"{path}-other"}), 404, "No multipart")
    assert_error(api.post("/data-store/upload/multipart/part",
                          json={**body, "multipart_upload_configuration": "garbage"}), 400,
                 "multipart_upload_configuration")
    assert_error(api.post("/data-store/upload/multipart/part", json={**body, "part_number": 0}),
                 422, "part_number")
    assert api.post("/data-store/upload/multipart/part", json=body).status_code == 200
    assert_error(api.post("/data-store/upload/multipart/part", json={**body, "chunk_size": 50}),
                 400, "chunk_size")
    too_big = put_part(api, path, config, 2, b"z" * 101, 100)
    assert too_big.status_code == 400 and s3_error(too_big)["Code"] == "EntityTooLarge"


def test_interrupted_part_is_not_recorded(api, unique) -> None:
    """A part whose PUT is cut mid-body (more than a write buffer through) never counts:
    ending the upload with it is refused and no object appears; a retried PUT of the
    part then completes it."""
    path = f"mpcut-{unique}"
    chunk_size = 4_000_000
    config = start_multipart(api, path)
    signed = api.post("/data-store/upload/multipart/part", json={
        "path_to_object": path, "multipart_upload_configuration": config,
        "chunk_size": chunk_size, "part_number": 1}).json()["signed_url"]
    url = urlsplit(signed)
    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.sendall(
            f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Content-Length: {chunk_size}\r\n\r\n".encode() + os.urandom(2_500_000))
        time.sleep(0.3)

    def end(parts):
        return api.post("/data-store/upload/multipart/end", json={
            "path_to_object": path, "multipart_upload_configuration": config, "parts": parts})

    assert_error(end([{"number": 1}]), 400, "never uploaded")
    assert api.post("/data-store/information", json={"path_to_object": path}).status_code == 404
    data = os.urandom(chunk_size)
    retried = put_part(api, path, config, 1, data, chunk_size)
    assert retried.status_code == 200
    assert end([{"number": 1, "metadata": retried.headers["etag"]}]).status_code == 200
    assert download(api, path).content == data


def test_tampered_part_url_is_403(api, unique) -> None:
    path = f"mptamper-{unique}"
    config = start_multipart(api, path)
    signed = api.post("/data-store/upload/multipart/part", json={
        "path_to_object": path, "multipart_upload_configuration": config,
        "chunk_size": 100, "part_number": 1}).json()["signed_url"]
    response = httpx.put(_with_query(signed, part_number="2"), content=b"x")
    assert response.status_code == 403


def test_internal_prefix_is_reserved(api) -> None:
    for path in (".gristmill/steps/x/code.tgz", ".gristmill"):
        assert_error(api.get("/data-store/upload", params={"path_to_object": path}), 400,
                     "reserved")
        assert_error(api.post("/data-store/information", json={"path_to_object": path}), 400,
                     "reserved")
