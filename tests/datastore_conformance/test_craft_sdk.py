"""The real craft-ai-sdk 0.50.1 client's data store calls, unchanged, on both backends."""

from __future__ import annotations

import io
import os

import pytest

from tests.datastore_conformance.helpers import MIB


def test_small_objects(craft_sdk, unique, tmp_path) -> None:
    path = f"craft-{unique}/hello.txt"
    source = tmp_path / "hello.txt"
    source.write_bytes(b"hello gristmill")
    craft_sdk.upload_data_store_object(str(source), path)
    info = craft_sdk.get_data_store_object_information(path)
    assert info["path"] == path and info["size"] == "15.00 B"
    target = tmp_path / "out.txt"
    craft_sdk.download_data_store_object(path, str(target))
    assert target.read_bytes() == b"hello gristmill"
    buffer = io.BytesIO()
    craft_sdk.download_data_store_object(path, buffer)
    assert buffer.getvalue() == b"hello gristmill"
    assert craft_sdk.delete_data_store_object(path) == {"path": path}


@pytest.mark.parametrize("size", [13 * MIB + 17, 10 * MIB],
                         ids=["last-part-short", "exact-multiple-no-size-sent"])
def test_multipart_upload(craft_sdk, unique, tmp_path, size) -> None:
    assert size >= craft_sdk._MULTIPART_THRESHOLD, "this upload must go multipart"
    payload = os.urandom(size)
    path = f"craft-{unique}/big.bin"
    craft_sdk.upload_data_store_object(io.BytesIO(payload), path)
    target = tmp_path / "big.bin"
    craft_sdk.download_data_store_object(path, str(target))
    assert target.read_bytes() == payload
    info = craft_sdk.get_data_store_object_information(path)
    assert info["size"].endswith("MB")


def test_listing_follows_continuation_tokens(craft_sdk, unique) -> None:
    paths = {f"craft-list-{unique}/{i}" for i in range(8)}  # pages hold 3 items here
    for path in paths:
        craft_sdk.upload_data_store_object(io.BytesIO(b"x"), path)
    listed = [item["path"] for item in craft_sdk.list_data_store_objects()]
    assert paths <= set(listed)
    assert len(listed) == len(set(listed))
    assert not [p for p in listed if p.startswith(".gristmill")]


def test_errors_reach_the_user(craft_sdk, unique) -> None:
    from craft_ai_sdk.exceptions import SdkException

    with pytest.raises(SdkException) as caught:
        craft_sdk.get_data_store_object_information(f"missing-{unique}")
    assert caught.value.status_code == 404 and "not found" in str(caught.value)
    with pytest.raises(SdkException) as caught:
        craft_sdk.upload_data_store_object(io.BytesIO(b"x"), "../escape")
    assert caught.value.status_code == 400 and "'..'" in str(caught.value)
    with pytest.raises(SdkException) as caught:
        craft_sdk.download_data_store_object(f"missing-{unique}", io.BytesIO())
    assert caught.value.status_code == 404
    with pytest.raises(SdkException) as caught:
        craft_sdk.delete_data_store_object(f"missing-{unique}")
    assert caught.value.status_code == 404
    with pytest.raises(SdkException) as caught:
        craft_sdk.upload_data_store_object(io.BytesIO(b"x"), ".gristmill/steps/x")
    assert caught.value.status_code == 400 and "reserved" in str(caught.value)
