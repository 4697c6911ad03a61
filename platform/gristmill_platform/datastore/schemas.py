from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, field_serializer

from gristmill_platform.datastore.backend import ObjectInfo
from gristmill_platform.http.dates import iso


class ObjectRead(BaseModel):
    path: str
    last_modified: datetime
    size: int

    @field_serializer("last_modified")
    def _iso(self, value: datetime) -> str:
        return iso(value)

    @classmethod
    def of(cls, info: ObjectInfo) -> ObjectRead:
        return cls(path=info.path, last_modified=info.last_modified, size=info.size)


class ObjectList(BaseModel):
    items: list[ObjectRead]
    continuation_token: str | None


class PathBody(BaseModel):
    path_to_object: str


class SignedUpload(BaseModel):
    signed_url: str
    fields: dict[str, str]


class SignedUrl(BaseModel):
    signed_url: str


class PartRequest(BaseModel):
    path_to_object: str
    multipart_upload_configuration: Any
    chunk_size: int = Field(ge=1)
    part_number: int = Field(ge=1)
    size: int | None = Field(default=None, ge=0)


class SignedPart(BaseModel):
    signed_url: str
    headers: dict[str, str]


class PartListed(BaseModel):
    number: int = Field(ge=1)
    metadata: str | None = None


class MultipartEnd(BaseModel):
    path_to_object: str
    multipart_upload_configuration: Any
    parts: list[PartListed]


class DeletedObject(BaseModel):
    path: str
