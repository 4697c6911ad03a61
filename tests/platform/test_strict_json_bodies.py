"""Routes whose body FastAPI parses into a pydantic model read it as strictly as the routes
that parse their own (docs/limits.md#json): NaN, infinities, numbers that overflow a float
and documents nested too deep get the same 400 BadRequest, and nothing is stored."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.platform.test_auth import assert_error
from tests.platform.test_datastore import start_multipart

JSON = {"content-type": "application/json"}
# the number's text, and what the strict routes say of it
NOT_FINITE = [("NaN", "NaN is not a JSON number"),
              ("Infinity", "Infinity is not a JSON number"),
              ("-Infinity", "-Infinity is not a JSON number"),
              ("1e999", "the number 1e999 is out of range"),
              ("-1e400", "the number -1e400 is out of range")]


def send(api: httpx.Client, method: str, path: str, body: str) -> httpx.Response:
    return api.request(method, path, content=body.encode(), headers=JSON)


def refused(response: httpx.Response, fragment: str) -> None:
    body = assert_error(response, 400, fragment)
    assert body["name"] == "BadRequest"
    assert body["message"].startswith("The request body is not valid JSON: ")


@pytest.mark.parametrize(("number", "fragment"), NOT_FINITE)
def test_environment_variables_refuse_non_finite_numbers_and_store_nothing(
        api, unique, number, fragment) -> None:
    name = f"STRICT_{unique}"
    body = f'{{"environment_variables": {{"{name}": {number}, "{name}_OK": "kept?"}}}}'
    refused(send(api, "PUT", "/environment-variables", body), fragment)
    listed = {v["name"] for v in api.get("/environment-variables").json()}
    assert name not in listed and f"{name}_OK" not in listed


@pytest.mark.parametrize(("method", "path", "fields"), [
    ("POST", "/auth/refresh", '"refresh_token": "gm_x_y"'),
    ("POST", "/data-store/information", '"path_to_object": "strict/a.txt"'),
    ("POST", "/data-store/upload/multipart", '"path_to_object": "strict/a.txt"'),
    ("POST", "/data-store/upload/multipart/part",
     '"path_to_object": "strict/a.txt", "multipart_upload_configuration": {}, '
     '"part_number": 1, "chunk_size": 5'),
    ("POST", "/data-store/upload/multipart/end",
     '"path_to_object": "strict/a.txt", "multipart_upload_configuration": {}, "parts": []'),
], ids=lambda value: value if str(value).startswith("/") else None)
@pytest.mark.parametrize(("number", "fragment"), NOT_FINITE[::2])
def test_every_pydantic_body_refuses_non_finite_numbers(api, method, path, fields, number,
                                                        fragment) -> None:
    refused(send(api, method, path, f'{{{fields}, "extra": [{number}]}}'), fragment)


def test_multipart_upload_with_a_non_finite_size_starts_nothing(api, unique) -> None:
    path = f"strict-{unique}/big.bin"
    config = start_multipart(api, path)
    part = json.dumps({"path_to_object": path, "multipart_upload_configuration": config,
                       "part_number": 1, "chunk_size": 5, "size": 0})
    refused(send(api, "POST", "/data-store/upload/multipart/part",
                 part.replace('"size": 0', '"size": 1e999')), "out of range")


def test_deep_and_malformed_bodies_get_the_strict_routes_answer(api) -> None:
    deep = "[" * 5_000 + "]" * 5_000
    refused(send(api, "PUT", "/environment-variables",
                 f'{{"environment_variables": {{"X": {deep}}}}}'), "nests deeper than 100")
    refused(send(api, "POST", "/data-store/information", '{"path_to_object": '),
            "Expecting value")


def test_well_formed_bodies_still_work_and_validation_errors_stay_422(api, unique) -> None:
    name = f"STRICT_OK_{unique}"
    response = send(api, "PUT", "/environment-variables",
                    f'{{"environment_variables": {{"{name}": 1.5e308}}}}')
    assert response.status_code == 200, response.text
    assert {v["name"]: v["value"] for v in api.get("/environment-variables").json()}[
        name] == "1.5e+308"
    assert_error(send(api, "PUT", "/environment-variables", '{"wrong": {}}'), 422,
                 "environment_variables")
    # a body that is not declared JSON is not parsed as JSON: as before, a 422
    assert api.put("/environment-variables", content=b'{"environment_variables": NaN}',
                   headers={"content-type": "text/plain"}).status_code == 422
