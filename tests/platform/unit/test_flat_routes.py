"""The control service's routes are one flat list (http/flat_routes.py): copied routes
behave as the included ones did, what cannot be copied faithfully is refused, and the
app holds no included-router tree."""

from __future__ import annotations

from typing import Annotated

import pytest
from fastapi import APIRouter, Depends, FastAPI, Header
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel
from starlette.routing import Route

from gristmill_platform.http.flat_routes import NotFlattenable, include_flat


class Item(BaseModel):
    name: str
    secret: str | None = None


def require_key(x_key: Annotated[str, Header()]) -> str:
    return x_key


def routers() -> list[APIRouter]:
    items = APIRouter(prefix="/items", tags=["items"], dependencies=[Depends(require_key)])

    @items.post("/{name}", status_code=201, response_model=Item,
                response_model_exclude_none=True, summary="Create an item")
    async def create(name: str) -> Item:
        return Item(name=name)

    @items.get("/{name}", include_in_schema=False)
    async def read(name: str) -> dict[str, str]:
        return {"read": name}

    other = APIRouter()

    @other.get("/items/{name}")
    async def shadowed(name: str) -> dict[str, str]:  # never reached: /items/{name} first
        return {"shadowed": name}

    return [items, other]


def flat_app() -> FastAPI:
    app = FastAPI()
    include_flat(app.router, routers(), prefix="/api")
    return app


def nested_app() -> FastAPI:
    app = FastAPI()
    api = APIRouter(prefix="/api")
    for router in routers():
        api.include_router(router)
    app.include_router(api)
    return app


def test_copied_routes_answer_as_included_ones() -> None:
    for app in (flat_app(), nested_app()):
        client = TestClient(app)
        created = client.post("/api/items/a", headers={"x-key": "k"})
        assert (created.status_code, created.json()) == (201, {"name": "a"})
        assert client.get("/api/items/a", headers={"x-key": "k"}).json() == {"read": "a"}
        # the router's dependency came along
        assert client.get("/api/items/a").status_code == 422
        # method not allowed, not found: as before
        assert client.delete("/api/items/a").status_code == 405
        assert client.get("/api/nothing").status_code == 404


def test_the_openapi_document_is_the_same() -> None:
    assert flat_app().openapi()["paths"] == nested_app().openapi()["paths"]
    paths = flat_app().openapi()["paths"]
    assert set(paths) == {"/api/items/{name}"}
    operation = paths["/api/items/{name}"]["post"]
    assert (operation["summary"], operation["tags"]) == ("Create an item", ["items"])
    assert "201" in operation["responses"]


def test_the_app_holds_one_route_per_operation_in_order() -> None:
    routes = flat_app().router.routes
    copied = [route for route in routes if isinstance(route, APIRoute)]
    assert [(route.path, sorted(route.methods)) for route in copied] == [
        ("/api/items/{name}", ["POST"]), ("/api/items/{name}", ["GET"]),
        ("/api/items/{name}", ["GET"])]
    assert [route.name for route in copied] == ["create", "read", "shadowed"]


def test_a_router_including_another_is_refused() -> None:
    outer, inner = APIRouter(), APIRouter()

    @inner.get("/x")
    async def x() -> None:
        return None

    outer.include_router(inner)
    with pytest.raises(NotFlattenable, match="include it directly"):
        include_flat(FastAPI().router, [outer])


def test_a_plain_starlette_route_is_refused() -> None:
    router = APIRouter()
    router.routes.append(Route("/plain", lambda request: None))
    with pytest.raises(NotFlattenable, match="Route '/plain'"):
        include_flat(FastAPI().router, [router])


def test_the_control_service_app_is_flat(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("GRISTMILL_DATA_DIR", str(tmp_path))
    from gristmill_platform.app import create_app

    app = create_app()
    kinds = {type(route).__name__ for route in app.router.routes}
    # the app's route class (an APIRoute reading JSON strictly), the console's, and
    # FastAPI's own /openapi.json: no tree left
    assert kinds <= {"StrictJsonRoute", "ConsoleRoute", "Route"}, kinds
    paths = [getattr(route, "path", "") for route in app.router.routes]
    assert "/api/v1/pipelines/{pipeline_name}/run" in paths
    assert "/console/deployments/{name}" in paths


def test_plain_routes_take_the_target_route_class_and_others_keep_theirs() -> None:
    class TargetRoute(APIRoute):
        pass

    class OwnRoute(APIRoute):
        pass

    own = APIRouter(route_class=OwnRoute)

    @own.get("/own")
    async def own_route() -> dict[str, str]:
        return {"own": "yes"}

    app = FastAPI()
    app.router.route_class = TargetRoute
    include_flat(app.router, [*routers(), own], prefix="/api")
    classes = {(route.path, route.name): type(route) for route in app.router.routes
               if isinstance(route, APIRoute)}
    assert classes[("/api/items/{name}", "create")] is TargetRoute
    assert classes[("/api/items/{name}", "shadowed")] is TargetRoute
    assert classes[("/api/own", "own_route")] is OwnRoute
    assert TestClient(app).get("/api/own").json() == {"own": "yes"}
    # a target of FastAPI's default class: the copies are APIRoutes, as before
    assert {type(route) for route in flat_app().router.routes
            if isinstance(route, APIRoute)} == {APIRoute}
