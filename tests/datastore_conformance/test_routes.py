"""Every data store route of contract §9, as a raw HTTP client sees it, on both backends.
(Signature and expiry checks are the local backend's own: tests/platform/test_datastore.py;
moto does not check S3's.)"""

from __future__ import annotations

import os

import httpx
import pytest

from tests.datastore_conformance.helpers import (
    PART,
    delete,
    download,
    end_multipart,
    information,
    list_pages,
    put_part,
    s3_error,
    sign_part,
    start_multipart,
    upload,
)
from tests.platform.test_auth import assert_error


def test_round_trip_information_list_delete(api, unique) -> None:
    path = f"rt-{unique}/data.bin"
    payload = os.urandom(300_000)
    assert upload(api, path, payload).status_code == 204
    got = download(api, path)
    assert got.status_code == 200 and got.content == payload
    info = information(api, path)
    assert info.status_code == 200, info.text
    assert info.json()["path"] == path and info.json()["size"] == len(payload)
    assert info.json()["last_modified"].endswith("Z")
    listed = api.get("/data-store/list").json()  # without tokens: every object at once
    assert listed["continuation_token"] is None
    assert {"path": path, "size": len(payload)}.items() <= next(
        i for i in listed["items"] if i["path"] == path).items()
    assert delete(api, path).json() == {"path": path}
    assert_error(information(api, path), 404, "not found")


def test_overwrite_replaces_the_object(api, unique) -> None:
    path = f"ow-{unique}.txt"
    upload(api, path, b"first")
    upload(api, path, b"second!")
    assert download(api, path).content == b"second!"
    assert information(api, path).json()["size"] == 7


def test_missing_object_is_404_no_such_key(api, unique) -> None:
    path = f"none-{unique}"
    for response in (information(api, path), delete(api, path),
                     api.post("/data-store/download", data={"path_to_object": path})):
        assert assert_error(response, 404, "not found")["name"] == "NoSuchKey"


def test_delete_accepts_json_too(api, unique) -> None:
    path = f"dj-{unique}"
    upload(api, path, b"x")
    assert api.request("DELETE", "/data-store/delete", json={"path_to_object": path}
                       ).json() == {"path": path}
    assert information(api, path).status_code == 404


@pytest.mark.parametrize("bad", ["../x", "/abs", "a//b", "a/", "a/./b", "tab\there", "x" * 2000])
def test_bad_paths_get_400_on_every_route(api, bad) -> None:
    assert_error(api.get("/data-store/upload", params={"path_to_object": bad}), 400, "path")
    assert_error(api.post("/data-store/download", data={"path_to_object": bad}), 400, "path")
    assert_error(information(api, bad), 400, "path")
    assert_error(delete(api, bad), 400, "path")
    assert_error(api.post("/data-store/upload/multipart", json={"path_to_object": bad}), 400,
                 "path")


def test_missing_path_field_is_a_clear_400(api) -> None:
    assert_error(api.post("/data-store/download", data={}), 400, "path_to_object")


@pytest.mark.parametrize("path", [".gristmill/steps/x/code.tgz", ".gristmill"])
def test_internal_prefix_is_refused_on_every_route(api, path) -> None:
    assert_error(api.get("/data-store/upload", params={"path_to_object": path}), 400,
                 "reserved")
    assert_error(api.post("/data-store/download", data={"path_to_object": path}), 400,
                 "reserved")
    assert_error(information(api, path), 400, "reserved")
    assert_error(delete(api, path), 400, "reserved")
    assert_error(api.post("/data-store/upload/multipart", json={"path_to_object": path}), 400,
                 "reserved")


def test_listing_pages_hide_internal_objects_and_end(store, api, unique, tmp_path) -> None:
    # '-' sorts before '.gristmill/' and letters after it: the pages cross the internal range
    before = [f"-{unique}-{i}" for i in range(4)]
    after = [f"page-{unique}/{i:02d}" for i in range(5)]
    for path in before + after:
        upload(api, path, b"p")
    for i in range(2 * 3 + 1):  # more internal objects than a page holds
        store.put_internal(f".gristmill/conformance-{unique}/{i}", b"internal", tmp_path)
    pages = list_pages(api)
    seen = [path for page in pages for path in page]
    assert not [p for p in seen if p.startswith(".gristmill")]
    assert [p for p in seen if unique in p] == sorted(before + after)
    assert len(seen) == len(set(seen))
    assert len(pages) > 2 and all(len(page) <= 3 for page in pages)
    # every page but the last holds something: a client stopping on an empty page loses none
    assert all(pages[:-1])
    everything = api.get("/data-store/list").json()["items"]
    assert sorted(i["path"] for i in everything) == sorted(seen)


def test_a_folder_lists_only_its_objects_exactly(api, unique) -> None:
    """The backend filters (an index range, S3's Prefix): exact, case-sensitive, paged."""
    inside = [f"fold-{unique}/a/{i}" for i in range(4)] + [f"fold-{unique}/a/deep/x"]
    outside = [f"FOLD-{unique}/a/0", f"fold-{unique}/ab", f"fold-{unique}/a", f"fold-{unique}"]
    for path in inside + outside:
        upload(api, path, b"f")
    pages: list[list[str]] = []
    token = None
    while True:
        params = {"folder_path": f"fold-{unique}/a", "include_continuation_token": "true"}
        if token:
            params["continuation_token"] = token
        body = api.get("/data-store/list", params=params).json()
        pages.append([item["path"] for item in body["items"]])
        token = body["continuation_token"]
        if not token:
            break
    assert [path for page in pages for path in page] == sorted(inside)
    assert len(pages) >= 2  # 3 per page here: the folder is paged like the whole store


def test_garbage_continuation_token_is_400(api) -> None:
    response = api.get("/data-store/list",
                       params={"include_continuation_token": "t", "continuation_token": "%%%"})
    assert_error(response, 400, "continuation token")


# -- multipart --------------------------------------------------------------------------------

def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def test_multipart_parts_out_of_order(api, unique) -> None:
    path = f"mp-{unique}/big.bin"
    data = os.urandom(2 * PART + 1234)
    config = start_multipart(api, path)
    chunks = _chunks(data, PART)
    etags = {}
    for number in (3, 1, 2):  # parts may arrive in any order
        chunk = chunks[number - 1]
        size = len(data) if len(chunk) < PART else None
        response = put_part(api, path, config, number, chunk, PART, size)
        assert response.status_code == 200
        etags[number] = response.headers["etag"]
    assert information(api, path).status_code == 404  # nothing visible before the end
    end = end_multipart(api, path, config,
                        [{"number": n, "metadata": etags[n]} for n in (1, 2, 3)])
    assert end.status_code == 200, end.text
    assert end.json()["path"] == path and end.json()["size"] == len(data)
    assert download(api, path).content == data


def test_multipart_part_without_etag_is_still_checked(api, unique) -> None:
    """The client leaves `metadata` out when its PUT answered no ETag."""
    path = f"mpnoetag-{unique}"
    config = start_multipart(api, path)
    put_part(api, path, config, 1, b"only part", PART)
    assert end_multipart(api, path, config, [{"number": 1}]).status_code == 200
    assert download(api, path).content == b"only part"


def test_multipart_end_refusals_keep_the_upload_usable(api, unique) -> None:
    path = f"mpbad-{unique}"
    config = start_multipart(api, path)
    etag1 = put_part(api, path, config, 1, b"a" * PART, PART).headers["etag"]

    def refused(parts, fragment, name):
        assert assert_error(end_multipart(api, path, config, parts), 400, fragment)["name"] == name

    refused([{"number": 1, "metadata": etag1}, {"number": 2}], "never uploaded", "InvalidPart")
    etag2 = put_part(api, path, config, 2, b"b" * 10, PART, size=PART + 10).headers["etag"]
    refused([{"number": 1, "metadata": '"bogus"'}, {"number": 2, "metadata": etag2}], "ETag",
            "InvalidPart")
    refused([{"number": 2, "metadata": etag2}, {"number": 1, "metadata": etag1}],
            "numbered from 1", "InvalidPartOrder")
    refused([{"number": 2, "metadata": etag2}], "numbered from 1", "InvalidPartOrder")
    refused([], "No part", "InvalidPart")
    assert information(api, path).status_code == 404
    done = end_multipart(api, path, config, [{"number": 1, "metadata": etag1},
                                             {"number": 2, "metadata": etag2}])
    assert done.status_code == 200, done.text
    assert download(api, path).content == b"a" * PART + b"b" * 10


def test_unknown_or_foreign_upload_is_404_and_garbage_config_400(api, unique) -> None:
    path = f"mprej-{unique}"
    config = start_multipart(api, path)
    unknown = {**config, "upload_id": "nope"}
    body = assert_error(sign_part(api, path, unknown, 1, PART), 404, "No multipart upload")
    assert body["name"] == "NoSuchUpload"
    assert_error(end_multipart(api, path, unknown, [{"number": 1, "metadata": '"x"'}]), 404,
                 "No multipart upload")
    assert_error(sign_part(api, f"{path}-other", config, 1, PART), 404, "No multipart upload")
    assert_error(sign_part(api, path, "garbage", 1, PART), 400,
                 "multipart_upload_configuration")
    assert_error(sign_part(api, path, config, 0, PART), 422, "part_number")
    assert_error(sign_part(api, path, config, 10_001, PART), 400, "part_number")
    assert_error(sign_part(api, path, config, 1, 6 * 1024**3), 400, "chunk_size")


def test_presigned_transfer_errors_are_s3_style_xml(api, unique) -> None:
    """A URL for an object deleted after signing answers S3's XML (contract §0.5)."""
    path = f"gone-{unique}"
    upload(api, path, b"x")
    url = api.post("/data-store/download", data={"path_to_object": path}).json()["signed_url"]
    delete(api, path)
    response = httpx.get(url)
    assert response.status_code == 404
    assert s3_error(response)["Code"] == "NoSuchKey" and s3_error(response)["Message"]
