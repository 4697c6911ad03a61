from __future__ import annotations

import json

import pytest

from gristmill import errors
from gristmill.errors import api_error_from_body, data_store_error_from_body


def body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, errors.BadRequestError),
        (401, errors.AuthenticationError),
        (403, errors.PermissionDeniedError),
        (404, errors.NotFoundError),
        (409, errors.ConflictError),
        (413, errors.PayloadTooLargeError),
        (422, errors.UnprocessableEntityError),
        (429, errors.RateLimitError),
        (500, errors.InternalServerError),
        (502, errors.InternalServerError),
        (503, errors.ServiceUnavailableError),
        (418, errors.APIError),
    ],
)
def test_class_by_status(status: int, cls: type[errors.APIError]) -> None:
    err = api_error_from_body(status, body(message="boom", name="Boom"))
    assert type(err) is cls
    assert isinstance(err, errors.APIError)
    assert isinstance(err, errors.GristmillError)
    assert err.status_code == status


def test_service_unavailable_is_a_server_error() -> None:
    assert issubclass(errors.ServiceUnavailableError, errors.InternalServerError)


def test_fields_and_str_carry_the_server_message() -> None:
    err = api_error_from_body(
        404,
        body(
            message="Object 'x' not found",
            name="NoSuchKey",
            request_id="req-1",
            additional_data={"path": "x"},
        ),
        method="POST",
        url="http://h/api/v1/data-store/information",
    )
    assert (err.message, err.name, err.request_id) == ("Object 'x' not found", "NoSuchKey", "req-1")
    assert err.additional_data == {"path": "x"}
    text = str(err)
    assert "Object 'x' not found" in text
    assert "NoSuchKey" in text
    assert "req-1" in text
    assert '"path": "x"' in text


def test_no_request_id_placeholder_is_hidden() -> None:
    err = api_error_from_body(400, body(message="bad", request_id="NO_REQUEST_ID"))
    assert err.request_id is None
    assert "NO_REQUEST_ID" not in str(err)


def test_execution_failed_by_name() -> None:
    err = api_error_from_body(500, body(message="step raised", name="ExecutionFailed"))
    assert isinstance(err, errors.ExecutionFailedError)
    assert not isinstance(err, errors.InternalServerError)


def test_non_json_error_body_is_shown() -> None:
    err = api_error_from_body(500, b"<html>Bad things</html>")
    assert type(err) is errors.InternalServerError
    assert "Bad things" in err.message


def test_fastapi_default_body_is_understood() -> None:
    err = api_error_from_body(404, body(detail="Not Found"))
    assert err.message == "Not Found"


def test_missing_message_gets_a_default() -> None:
    assert api_error_from_body(400, b"{}").message == "The server returned an error"
    assert api_error_from_body(400, b"").message == "The server returned an error"
    assert "[1, 2]" in api_error_from_body(400, b"[1, 2]").message


@pytest.mark.parametrize("status", [502, 504])
def test_gateway_errors_say_the_platform_is_unreachable(status: int) -> None:
    err = api_error_from_body(status, body(message="upstream"))
    assert "could not be reached" in err.message
    assert "upstream" in err.message


def test_authentication_error_has_a_hint() -> None:
    text = str(api_error_from_body(401, body(message="Invalid refresh token")))
    assert "Invalid refresh token" in text
    assert "GRISTMILL_SDK_TOKEN" in text


@pytest.mark.parametrize("name", ["InvalidEndpointToken", "MissingEndpointToken"])
def test_endpoint_token_errors_hint_at_the_endpoint_token_not_the_sdk_token(name: str) -> None:
    err = api_error_from_body(401, body(message="Invalid endpoint token", name=name))
    assert isinstance(err, errors.AuthenticationError)
    text = str(err)
    assert "GRISTMILL_SDK_TOKEN" not in text and "sdk_token=" not in text
    assert "endpoint token" in text
    for source in ("create_deployment", 'get_deployment(name)["endpoint_token"]',
                   "generate_new_endpoint_token", "invalidates the previous one"):
        assert source in text
    # other 401s keep the SDK token hint
    assert "GRISTMILL_SDK_TOKEN" in str(api_error_from_body(401, body(name="Unauthorized")))


def test_data_store_xml_error() -> None:
    err = data_store_error_from_body(
        403,
        b'<?xml version="1.0"?><Error><Code>SignatureDoesNotMatch</Code>'
        b"<Message>bad signature</Message><RequestId>r1</RequestId></Error>",
    )
    assert isinstance(err, errors.DataStoreError)
    assert (err.code, err.message, err.status_code) == (
        "SignatureDoesNotMatch",
        "bad signature",
        403,
    )
    assert err.additional_data == {"RequestId": "r1"}
    assert "SignatureDoesNotMatch" in str(err) and "bad signature" in str(err)


def test_data_store_namespaced_xml_error() -> None:
    err = data_store_error_from_body(
        404,
        b'<Error xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Code>NoSuchKey</Code>'
        b"<Message>gone</Message></Error>",
    )
    assert (err.code, err.message) == ("NoSuchKey", "gone")


def test_data_store_non_xml_error() -> None:
    err = data_store_error_from_body(500, b"oops")
    assert err.code == "InvalidResponse"
    assert "oops" in err.message
