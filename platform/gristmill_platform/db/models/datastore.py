"""Index of the local data store's objects. The bytes live in blob files; a row makes an
object visible, so a blob whose upload was interrupted is never listed."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from gristmill_platform.db.base import Base
from gristmill_platform.db.types import UTCDateTime, utcnow


class DataStoreObject(Base):
    __tablename__ = "datastore_objects"

    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    blob: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    last_modified: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MultipartUpload(Base):
    __tablename__ = "datastore_multipart_uploads"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    path: Mapped[str] = mapped_column(String(1024))
    # Parts are written in place at (number - 1) * chunk_size, so completing the upload
    # is a rename, not a copy of every part.
    blob: Mapped[str] = mapped_column(String(64))
    chunk_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MultipartPart(Base):
    __tablename__ = "datastore_multipart_parts"

    upload_id: Mapped[str] = mapped_column(
        ForeignKey("datastore_multipart_uploads.id", ondelete="CASCADE"), primary_key=True
    )
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    etag: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
