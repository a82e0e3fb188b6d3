from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from spotik.db.base import Base, UTCDateTime, utcnow_seconds

# The seeded genres (Laravel's GenreSeeder), inserted by the first migration when absent.
SEEDED_GENRES: tuple[tuple[str, str, str], ...] = (
    ("Pop", "Popular music with catchy melodies and broad appeal", "#ff6b6b"),
    ("Rock", "Guitar-driven music with strong rhythms", "#4ecdc4"),
    ("Hip Hop", "Rhythmic music with rap vocals and beats", "#45b7d1"),
    ("Electronic", "Music produced with electronic instruments and technology", "#96ceb4"),
    ("Jazz", "Improvisational music with complex harmonies", "#feca57"),
    ("Classical", "Traditional orchestral and chamber music", "#ff9ff3"),
    ("R&B", "Rhythm and blues with soulful vocals", "#54a0ff"),
    ("Country", "American folk music with storytelling lyrics", "#5f27cd"),
    ("Reggae", "Jamaican music with offbeat rhythms", "#00d2d3"),
    ("Alternative", "Non-mainstream rock and indie music", "#ff6348"),
)


class Genre(Base):
    __tablename__ = "genres"
    __table_args__ = (UniqueConstraint("name", name="genres_name_unique"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(String(500), default=None)
    color: Mapped[str] = mapped_column(String(7), default="#6366f1", server_default=text("'#6366f1'"))
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=utcnow_seconds)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=utcnow_seconds, onupdate=utcnow_seconds)
