"""craft-ai-sdk 0.50.1: auth, users, environment variables, data store."""

from __future__ import annotations

import io
import os

import pytest


def test_auth_refresh_and_users(craft_sdk, gristmill_env) -> None:
    me = craft_sdk.who_am_i()
    assert me["email"] == "admin@localhost"
    assert craft_sdk.get_user(me["id"]) == {"id": me["id"], "name": me["name"],
                                            "email": me["email"]}


def test_configured_from_environment_variables(gristmill_env, monkeypatch) -> None:
    from craft_ai_sdk import CraftAiSdk

    monkeypatch.setenv("CRAFT_AI_SDK_TOKEN", gristmill_env.sdk_token)
    monkeypatch.setenv("CRAFT_AI_ENVIRONMENT_URL", gristmill_env.url)
    monkeypatch.setenv("CRAFT_AI_CONTROL_URL", gristmill_env.url)
    assert CraftAiSdk(verbose_log=False).who_am_i()["email"] == "admin@localhost"


def test_access_token_refreshes_when_near_expiry(craft_sdk) -> None:
    craft_sdk.who_am_i()
    first = craft_sdk._access_token_data
    # pretend the token is about to expire: the client must fetch a new one by itself
    craft_sdk._access_token_data = {**first, "exp": 0}
    craft_sdk.who_am_i()
    assert craft_sdk._access_token_data["exp"] > 0


def test_bad_token_is_a_clear_error(gristmill_env) -> None:
    from craft_ai_sdk import CraftAiSdk
    from craft_ai_sdk.exceptions import SdkException

    sdk = CraftAiSdk(sdk_token="gm_0000_nope", environment_url=gristmill_env.url,
                     control_url=gristmill_env.url, verbose_log=False)
    with pytest.raises(SdkException) as caught:
        sdk.who_am_i()
    assert caught.value.status_code == 401
    assert "Invalid refresh token" in str(caught.value)


def test_environment_variables(craft_sdk, unique) -> None:
    name = f"COMPAT_{unique}"
    craft_sdk.create_or_update_environment_variable(name, "v1")
    craft_sdk.create_or_update_environment_variable(name, "v2")
    assert {"name": name, "value": "v2"} in craft_sdk.list_environment_variables()
    assert craft_sdk.delete_environment_variable(name) == {"name": name, "value": "v2"}
    assert name not in {v["name"] for v in craft_sdk.list_environment_variables()}


def test_environment_variable_errors_carry_the_message(craft_sdk) -> None:
    from craft_ai_sdk.exceptions import SdkException

    with pytest.raises(SdkException) as caught:
        craft_sdk.create_or_update_environment_variable("CRAFT_AI_SDK_TOKEN", "x")
    assert caught.value.status_code == 400 and "reserved" in str(caught.value)
    with pytest.raises(SdkException) as caught:
        craft_sdk.delete_environment_variable("NO_SUCH_VARIABLE_EVER")
    assert caught.value.status_code == 404


def test_data_store_small_objects(craft_sdk, unique, tmp_path) -> None:
    path = f"compat-{unique}/hello.txt"
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


def test_data_store_multipart_upload(craft_sdk, unique, tmp_path) -> None:
    threshold = craft_sdk._MULTIPART_THRESHOLD
    assert threshold == 3 * 1024 * 1024, "the multipart threshold must be small here"
    payload = os.urandom(threshold + 2 * 1024 * 1024 + 17)  # 3 parts, the last one short
    path = f"compat-{unique}/big.bin"
    craft_sdk.upload_data_store_object(io.BytesIO(payload), path)
    target = tmp_path / "big.bin"
    craft_sdk.download_data_store_object(path, str(target))
    assert target.read_bytes() == payload
    exact = os.urandom(4 * 1024 * 1024)  # an exact multiple of the part size: no `size` sent
    craft_sdk.upload_data_store_object(io.BytesIO(exact), f"{path}.exact")
    buffer = io.BytesIO()
    craft_sdk.download_data_store_object(f"{path}.exact", buffer)
    assert buffer.getvalue() == exact


def test_data_store_listing_follows_continuation_tokens(craft_sdk, unique) -> None:
    paths = {f"compat-list-{unique}/{i}" for i in range(12)}  # server pages hold 5 items
    for path in paths:
        craft_sdk.upload_data_store_object(io.BytesIO(b"x"), path)
    listed = [item["path"] for item in craft_sdk.list_data_store_objects()]
    assert paths <= set(listed)
    assert len(listed) == len(set(listed))


def test_data_store_errors_reach_the_user(craft_sdk, unique) -> None:
    from craft_ai_sdk.exceptions import SdkException

    with pytest.raises(SdkException) as caught:
        craft_sdk.get_data_store_object_information(f"missing-{unique}")
    assert caught.value.status_code == 404 and "not found" in str(caught.value)
    with pytest.raises(SdkException) as caught:
        craft_sdk.upload_data_store_object(io.BytesIO(b"x"), "../escape")
    assert caught.value.status_code == 400 and "'..'" in str(caught.value)
    with pytest.raises(SdkException):
        craft_sdk.download_data_store_object(f"missing-{unique}", io.BytesIO())
