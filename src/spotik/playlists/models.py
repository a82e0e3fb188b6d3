from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, false, text
from sqlalchemy.orm import Mapped, mapped_column

from spotik.db.base import UUID, Base, UTCDateTime, utcnow_seconds

_BIGINT = BigInteger().with_variant(Integer, "sqlite")


class Playlist(Base):
    __tablename__ = "playlists"
    __table_args__ = (Index("playlists_user_id_created_at_index", "user_id", "created_at"),)

    id: Mapped[int] = mapped_column(_BIGINT, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text, default=None)
    is_public: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("users.id", ondelete="CASCADE", name="playlists_user_id_foreign")
    )
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=utcnow_seconds)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=utcnow_seconds, onupdate=utcnow_seconds)


class PlaylistTrack(Base):
    __tablename__ = "playlist_tracks"
    __table_args__ = (
        UniqueConstraint("playlist_id", "track_id", name="playlist_tracks_playlist_id_track_id_unique"),
        Index("playlist_tracks_playlist_id_position_index", "playlist_id", "position"),
    )

    id: Mapped[int] = mapped_column(_BIGINT, primary_key=True, autoincrement=True)
    playlist_id: Mapped[int] = mapped_column(
        BigInteger,
        ForeignKey("playlists.id", ondelete="CASCADE", name="playlist_tracks_playlist_id_foreign"),
    )
    track_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("tracks.id", ondelete="CASCADE", name="playlist_tracks_track_id_foreign")
    )
    position: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=utcnow_seconds)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=utcnow_seconds, onupdate=utcnow_seconds)
