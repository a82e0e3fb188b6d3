from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from spotik.db.base import Base, UTCDateTime, utcnow_seconds


class Genre(Base):
    __tablename__ = "genres"
    __table_args__ = (UniqueConstraint("name", name="genres_name_unique"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(String(500), default=None)
    color: Mapped[str] = mapped_column(String(7), default="#6366f1", server_default=text("'#6366f1'"))
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=utcnow_seconds)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=utcnow_seconds, onupdate=utcnow_seconds)
