from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from spotik.db.base import UUID, Base, UTCDateTime, utcnow_seconds, uuid7


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("username", name="users_username_unique"),
        UniqueConstraint("email", name="users_email_unique"),
        Index("users_username_index", "username"),
        Index("users_email_index", "email"),
        Index("idx_users_email", "email"),
        Index("idx_users_username", "username"),
        Index("idx_users_created", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid7)
    username: Mapped[str] = mapped_column(String(50))
    email: Mapped[str] = mapped_column(String(255))
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=utcnow_seconds)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=utcnow_seconds, onupdate=utcnow_seconds)


class JwtBlacklist(Base):
    """Revoked token ids (Laravel's ``jwt_blacklist`` table), kept until the token could no longer be used."""

    __tablename__ = "jwt_blacklist"
    __table_args__ = (Index("jwt_blacklist_expires_at_index", "expires_at"),)

    jti: Mapped[str] = mapped_column(String(255), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=utcnow_seconds)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=utcnow_seconds)
