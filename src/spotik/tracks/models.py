from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint, func, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from spotik.db.base import UUID, Base, UTCDateTime, utcnow_seconds, uuid7

if TYPE_CHECKING:
    from spotik.auth.models import User
    from spotik.genres.models import Genre


class Track(Base):
    __tablename__ = "tracks"
    __table_args__ = (
        Index("idx_tracks_room_score", "room_id", "vote_score", "created_at"),
        Index("tracks_room_id_index", "room_id"),
        Index("tracks_uploader_id_index", "uploader_id"),
        Index("tracks_vote_score_index", "vote_score"),
        Index("tracks_genre_id_index", "genre_id"),
        Index("idx_tracks_queue_order", "room_id", "vote_score", "created_at"),
        Index("idx_tracks_uploader_time", "uploader_id", "created_at"),
        Index("idx_tracks_file_path", "file_path"),
        Index(
            "idx_tracks_voted",
            "room_id",
            text("vote_score DESC"),
            text("created_at ASC"),
            postgresql_where=text("vote_score > 0"),
            sqlite_where=text("vote_score > 0"),
        ),
        # Additive (docs/decisions.md#d7): one stored file per track.
        Index("tracks_filename_unique", "filename", unique=True),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid7)
    room_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("rooms.id", ondelete="CASCADE", name="tracks_room_id_foreign")
    )
    uploader_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("users.id", ondelete="CASCADE", name="tracks_uploader_id_foreign")
    )
    filename: Mapped[str] = mapped_column(String(255))
    original_name: Mapped[str] = mapped_column(String(255))
    file_path: Mapped[str] = mapped_column(String(500))
    duration_seconds: Mapped[int] = mapped_column(Integer)
    file_size_bytes: Mapped[int] = mapped_column(BigInteger)
    mime_type: Mapped[str] = mapped_column(String(100))
    vote_score: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    genre_id: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("genres.id", ondelete="SET NULL", name="tracks_genre_id_foreign"),
        default=None,
    )
    # Additive (docs/decisions.md#d5, docs/decisions.md#d7): when the track finished or was skipped; played tracks
    # leave the queue.
    played_at: Mapped[datetime | None] = mapped_column(UTCDateTime(6), default=None)
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=utcnow_seconds)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=utcnow_seconds, onupdate=utcnow_seconds)

    uploader: Mapped[User] = relationship(lazy="raise")
    genre: Mapped[Genre | None] = relationship(lazy="raise")


class TrackVote(Base):
    __tablename__ = "track_votes"
    __table_args__ = (
        UniqueConstraint("track_id", "user_id", name="track_votes_track_id_user_id_unique"),
        Index("track_votes_track_id_index", "track_id"),
        Index("track_votes_user_id_index", "user_id"),
        Index("idx_votes_track_time", "track_id", "created_at"),
        Index("idx_votes_user_time", "user_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid7)
    track_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("tracks.id", ondelete="CASCADE", name="track_votes_track_id_foreign")
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("users.id", ondelete="CASCADE", name="track_votes_user_id_foreign")
    )
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow_seconds, server_default=func.current_timestamp()
    )
