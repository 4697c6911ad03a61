from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from gristmill_platform.db.base import Base
from gristmill_platform.db.types import UTCDateTime, utcnow


class ConsoleSession(Base):
    """A web console sign-in. Only a SHA-256 of the cookie's session id is kept, so a read
    of this table cannot be replayed as a cookie. The session acts through the SDK token it
    was opened with: revoking that token (or deleting the user) ends the session too."""

    __tablename__ = "console_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    sdk_token_id: Mapped[str] = mapped_column(
        ForeignKey("sdk_tokens.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
