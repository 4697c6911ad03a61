"""A pydantic body parameter is parsed from strict JSON (http/bodies.py StrictJsonRoute),
with the answer of the routes that parse their own bodies (json_object): 400 BadRequest
"The request body is not valid JSON: ...". Every body-taking route of the control service
is such a route."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, Form
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel

from gristmill_platform.errors import install_error_handlers
from gristmill_platform.http.bodies import StrictJsonRoute, json_object

JSON = {"content-type": "application/json"}


class Body(BaseModel):
    value: float | str | list[float] | dict[str, float]


def app_of(route_class: type[APIRoute]) -> FastAPI:
    app = FastAPI()
    app.router.route_class = route_class
    install_error_handlers(app)

    @app.post("/model")
    async def model(body: Body) -> dict[str, str]:
        return {"value": repr(body.value)}

    @app.post("/form")
    async def form(value: str = Form()) -> dict[str, str]:
        return {"value": value}

    @app.get("/plain")
    async def plain() -> dict[str, str]:
        return {"plain": "yes"}

    return app


def strict_answer(raw: bytes) -> dict[str, object]:
    """What a route parsing its own body (json_object) answers ``raw``."""
    from gristmill_platform.errors import BadRequest

    with pytest.raises(BadRequest) as refused:
        json_object(raw, 1024 * 1024)
    return {"message": refused.value.message, "name": refused.value.name}


@pytest.mark.parametrize("raw", [b'{"value": NaN}', b'{"value": Infinity}',
                                 b'{"value": [1, -Infinity]}', b'{"value": 1e999}',
                                 b'{"value": {"a": -1e400}}',
                                 b'{"value": ' + b"[" * 500 + b"]" * 500 + b"}",
                                 b'{"value": ', b"not json"])
def test_what_strict_json_refuses_gets_the_strict_routes_400(raw: bytes) -> None:
    response = TestClient(app_of(StrictJsonRoute)).post("/model", content=raw, headers=JSON)
    assert response.status_code == 400, response.text
    body = response.json()
    assert {"message": body["message"], "name": body["name"]} == strict_answer(raw)
    assert set(body) == {"message", "name", "request_id", "additional_data"}


def test_fastapi_alone_would_take_them() -> None:
    # the defect StrictJsonRoute closes: the lenient parser reads NaN and 1e999
    client = TestClient(app_of(APIRoute))
    for raw, value in ((b'{"value": NaN}', "nan"), (b'{"value": 1e999}', "inf")):
        response = client.post("/model", content=raw, headers=JSON)
        assert (response.status_code, response.json()) == (200, {"value": value})


def test_good_bodies_forms_and_routes_without_a_body_are_unchanged() -> None:
    client = TestClient(app_of(StrictJsonRoute))
    assert client.post("/model", json={"value": 1.5e308}).json() == {"value": "1.5e+308"}
    assert client.post("/model", json={"value": "NaN"}).json() == {"value": "'NaN'"}
    assert client.post("/form", data={"value": "NaN"}).json() == {"value": "NaN"}
    assert client.get("/plain").json() == {"plain": "yes"}
    # validation errors stay FastAPI's 422, a body not declared JSON is not parsed
    assert client.post("/model", json={"other": 1}).status_code == 422
    assert client.post("/model", content=b'{"value": NaN}',
                       headers={"content-type": "text/plain"}).status_code == 422
    # the routes are the same routes: one handler more only where a body is parsed
    routes = {route.path: route for route in app_of(StrictJsonRoute).router.routes
              if isinstance(route, APIRoute)}
    assert routes["/model"].body_field is not None and routes["/plain"].body_field is None


def test_the_openapi_document_does_not_change() -> None:
    assert app_of(StrictJsonRoute).openapi() == app_of(APIRoute).openapi()


def test_every_body_parameter_of_the_control_service_is_read_strictly(tmp_path, monkeypatch
                                                                      ) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("GRISTMILL_DATA_DIR", str(tmp_path))
    from gristmill_platform.app import create_app

    app = create_app()
    with_bodies = [route for route in app.router.routes
                   if isinstance(route, APIRoute) and route.body_field is not None]
    assert {route.path for route in with_bodies} >= {
        "/api/v1/environment-variables", "/api/v1/auth/refresh",
        "/api/v1/data-store/information", "/api/v1/data-store/upload/multipart/end"}
    lenient = [route.path for route in with_bodies if not isinstance(route, StrictJsonRoute)]
    assert lenient == []
