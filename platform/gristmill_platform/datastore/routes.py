"""Data store management routes (Bearer auth), as the craft-ai-sdk 0.50.1 contract §9."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from gristmill_platform.datastore.backend import CompletedPart
from gristmill_platform.datastore.schemas import (
    DeletedObject,
    MultipartEnd,
    ObjectList,
    ObjectRead,
    PartRequest,
    PathBody,
    SignedPart,
    SignedUpload,
    SignedUrl,
)
from gristmill_platform.datastore.service import DataStoreService
from gristmill_platform.deps import AppStateDep, PrincipalDep, SessionDep
from gristmill_platform.http.bodies import required_string

router = APIRouter(prefix="/data-store", tags=["data store"])


async def datastore_service(state: AppStateDep, session: SessionDep) -> DataStoreService:
    return DataStoreService(
        state.datastore(session),
        max_path_length=state.settings.datastore_max_path_length,
        page_size=state.settings.datastore_list_page_size,
    )


ServiceDep = Annotated[DataStoreService, Depends(datastore_service)]


@router.get("/upload", response_model=SignedUpload)
async def presign_upload(
    principal: PrincipalDep, service: ServiceDep, path_to_object: str = Query(...)
) -> SignedUpload:
    post = await service.presign_upload(path_to_object)
    return SignedUpload(signed_url=post.url, fields=post.fields)


@router.post("/download", response_model=SignedUrl)
async def presign_download(
    request: Request, principal: PrincipalDep, service: ServiceDep
) -> SignedUrl:
    path = await required_string(request, "path_to_object")
    return SignedUrl(signed_url=await service.presign_download(path))


@router.get("/list", response_model=ObjectList)
async def list_objects(
    principal: PrincipalDep,
    service: ServiceDep,
    include_continuation_token: bool = False,
    continuation_token: str | None = None,
    folder_path: str | None = Query(
        None, description="Only the objects under this folder (craft-ai-sdk 0.74)"),
) -> ObjectList:
    prefix = service.folder_prefix(folder_path)
    if not include_continuation_token:
        items = await service.list_all(prefix=prefix)
        return ObjectList(items=[ObjectRead.of(i) for i in items], continuation_token=None)
    page = await service.list_page(continuation_token or None, prefix=prefix)
    return ObjectList(
        items=[ObjectRead.of(i) for i in page.items],
        continuation_token=page.continuation_token,
    )


@router.post("/information", response_model=ObjectRead)
async def information(body: PathBody, principal: PrincipalDep, service: ServiceDep) -> ObjectRead:
    return ObjectRead.of(await service.information(body.path_to_object))


@router.delete("/delete", response_model=DeletedObject)
async def delete(request: Request, principal: PrincipalDep, service: ServiceDep) -> DeletedObject:
    path = await required_string(request, "path_to_object")
    return DeletedObject(path=await service.delete(path))


@router.post("/upload/multipart")
async def create_multipart(
    body: PathBody, principal: PrincipalDep, service: ServiceDep
) -> dict[str, object]:
    return await service.create_multipart(body.path_to_object, principal)


@router.post("/upload/multipart/part", response_model=SignedPart)
async def presign_part(
    body: PartRequest, principal: PrincipalDep, service: ServiceDep
) -> SignedPart:
    part = await service.presign_part(
        body.path_to_object,
        body.multipart_upload_configuration,
        part_number=body.part_number,
        chunk_size=body.chunk_size,
        total_size=body.size,
    )
    return SignedPart(signed_url=part.url, headers=part.headers)


@router.post("/upload/multipart/end", response_model=ObjectRead)
async def complete_multipart(
    body: MultipartEnd, principal: PrincipalDep, service: ServiceDep, response: Response
) -> ObjectRead:
    info = await service.complete_multipart(
        body.path_to_object,
        body.multipart_upload_configuration,
        [CompletedPart(number=p.number, etag=p.metadata) for p in body.parts],
    )
    return ObjectRead.of(info)
