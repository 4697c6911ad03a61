"""Data store: browse by prefix, object information, download, delete; uploads go from
the browser straight to the signed upload URLs the API hands out (one POST, or multipart
parts for large files), so the console never buffers a file."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse

from gristmill_platform.console import services
from gristmill_platform.console.web import ConsoleRoute, ViewerDep, render
from gristmill_platform.datastore.backend import CompletedPart
from gristmill_platform.datastore.local import LocalDataStore
from gristmill_platform.datastore.streaming import blob_response
from gristmill_platform.deps import AppStateDep, SessionDep
from gristmill_platform.errors import BadRequest
from gristmill_platform.http.bodies import json_or_form

router = APIRouter(prefix="/console/data-store", route_class=ConsoleRoute,
                   include_in_schema=False)


def browse(paths: list[tuple[str, Any]], prefix: str
           ) -> tuple[list[str], list[tuple[str, Any]]]:
    """The folders right under ``prefix`` and the objects directly in it. Pure."""
    folders: set[str] = set()
    objects = []
    for path, info in paths:
        if not path.startswith(prefix):
            continue
        rest = path[len(prefix):]
        if "/" in rest:
            folders.add(prefix + rest.split("/", 1)[0] + "/")
        else:
            objects.append((path, info))
    return sorted(folders), objects


@router.get("")
async def datastore_page(request: Request, viewer: ViewerDep, state: AppStateDep,
                         session: SessionDep, prefix: str = "") -> HTMLResponse:
    items = await services.datastore(state, session).list_all(prefix=prefix)
    folders, objects = browse([(i.path, i) for i in items], prefix)
    crumbs = []
    parts = [p for p in prefix.split("/") if p]
    for index, part in enumerate(parts):
        crumbs.append((part, "/".join(parts[:index + 1]) + "/"))
    return render(request, "datastore.html", prefix=prefix, folders=folders,
                  objects=[info for _, info in objects], crumbs=crumbs, total=len(items))


@router.get("/info")
async def info(request: Request, viewer: ViewerDep, state: AppStateDep, session: SessionDep,
               path: str) -> HTMLResponse:
    found = await services.datastore(state, session).information(path)
    return render(request, "_object_info.html", info=found)


@router.get("/object", response_model=None)
async def download(viewer: ViewerDep, state: AppStateDep, session: SessionDep, path: str
                   ) -> Response:
    service = services.datastore(state, session)
    found = await service.information(path)
    backend = state.datastore(session)
    if not isinstance(backend, LocalDataStore):
        return Response(status_code=307,
                        headers={"Location": await service.presign_download(path)})
    info_, blob = await backend.blob_path(found.path)
    return await blob_response(info_, blob, found.path.rsplit("/", 1)[-1])


@router.post("/delete", response_model=None)
async def delete(request: Request, viewer: ViewerDep, state: AppStateDep, session: SessionDep
                 ) -> Response:
    form = await request.form()
    path = str(form.get("path") or "")
    await services.datastore(state, session).delete(path)
    prefix = path.rsplit("/", 1)[0] + "/" if "/" in path else ""
    # the folder's name is the user's (non-Latin-1 characters, '+', '#'): encoded
    return Response(status_code=303,
                    headers={"Location": f"/console/data-store?prefix={quote(prefix, safe='')}"})


async def _body(request: Request) -> dict[str, Any]:
    body = await json_or_form(request)
    if not isinstance(body.get("path"), str) or not body["path"]:
        raise BadRequest("path is required")
    return body


@router.post("/upload-url", response_model=None)
async def upload_url(request: Request, viewer: ViewerDep, state: AppStateDep,
                     session: SessionDep) -> Response:
    body = await _body(request)
    signed = await services.datastore(state, session).presign_upload(body["path"])
    return JSONResponse({"url": signed.url, "fields": signed.fields})


def _int(body: dict[str, Any], key: str) -> int:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequest(f"{key} must be a positive integer")
    return value


@router.post("/multipart", response_model=None)
async def multipart_start(request: Request, viewer: ViewerDep, state: AppStateDep,
                          session: SessionDep) -> Response:
    body = await _body(request)
    config = await services.datastore(state, session).create_multipart(body["path"],
                                                                        viewer.principal)
    return JSONResponse({"config": config})


@router.post("/multipart/part", response_model=None)
async def multipart_part(request: Request, viewer: ViewerDep, state: AppStateDep,
                         session: SessionDep) -> Response:
    body = await _body(request)
    part = await services.datastore(state, session).presign_part(
        body["path"], body.get("config"), part_number=_int(body, "part_number"),
        chunk_size=_int(body, "chunk_size"), total_size=_int(body, "size"))
    return JSONResponse({"url": part.url, "headers": part.headers})


def _completed(part: object) -> CompletedPart:
    """One uploaded part as the upload script reports it: {"number": n, "metadata": etag}."""
    if (not isinstance(part, dict) or isinstance(part.get("number"), bool)
            or not isinstance(part.get("number"), int) or "metadata" not in part):
        raise BadRequest('parts must be a list of {"number": <integer>, "metadata": <etag>}')
    return CompletedPart(number=part["number"], etag=str(part["metadata"]))


@router.post("/multipart/end", response_model=None)
async def multipart_end(request: Request, viewer: ViewerDep, state: AppStateDep,
                        session: SessionDep) -> Response:
    body = await _body(request)
    parts = body.get("parts")
    if not isinstance(parts, list):
        raise BadRequest("parts must be a list")
    done = await services.datastore(state, session).complete_multipart(
        body["path"], body.get("config"), [_completed(part) for part in parts])
    return JSONResponse({"path": done.path, "size": done.size})
