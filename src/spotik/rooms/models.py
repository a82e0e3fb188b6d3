from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Boolean, ForeignKey, Index, String, UniqueConstraint, false, func, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from spotik.db.base import UUID, Base, UTCDateTime, utcnow_seconds, uuid7

if TYPE_CHECKING:
    from spotik.auth.models import User
    from spotik.tracks.models import Track


class Room(Base):
    __tablename__ = "rooms"
    __table_args__ = (
        Index("rooms_name_index", "name"),
        Index("rooms_administrator_id_index", "administrator_id"),
        Index("rooms_current_track_id_index", "current_track_id"),
        Index("rooms_is_playing_index", "is_playing"),
        Index("idx_rooms_time_name", "created_at", "name"),
        Index("idx_rooms_playing_updated", "is_playing", "updated_at"),
        Index("idx_rooms_current_track", "current_track_id"),
        Index(
            "idx_rooms_active",
            text("updated_at DESC"),
            postgresql_where=text("is_playing = true"),
            sqlite_where=text("is_playing = 1"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid7)
    name: Mapped[str] = mapped_column(String(100))
    administrator_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("users.id", ondelete="CASCADE", name="rooms_administrator_id_foreign")
    )
    current_track_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID,
        ForeignKey("tracks.id", ondelete="SET NULL", name="rooms_current_track_id_foreign", use_alter=True),
        default=None,
    )
    # Sub-second precision is one of Spotik's additive changes to the Laravel schema (docs/decisions.md#d7).
    playback_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(6), default=None)
    playback_paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime(6), default=None)
    is_playing: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=utcnow_seconds)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=utcnow_seconds, onupdate=utcnow_seconds)

    # Relationships never load lazily (async): ask for them with selectinload/joinedload. Deletes cascade in the
    # database (ON DELETE CASCADE), so they are issued as DELETE statements, not through these collections.
    administrator: Mapped[User] = relationship(lazy="raise", foreign_keys=[administrator_id])
    current_track: Mapped[Track | None] = relationship(lazy="raise", foreign_keys=[current_track_id])
    participants: Mapped[list[RoomParticipant]] = relationship(
        lazy="raise", order_by="RoomParticipant.joined_at", viewonly=True
    )


class RoomParticipant(Base):
    __tablename__ = "room_participants"
    __table_args__ = (
        UniqueConstraint("room_id", "user_id", name="room_participants_room_id_user_id_unique"),
        Index("room_participants_room_id_index", "room_id"),
        Index("room_participants_user_id_index", "user_id"),
        Index("idx_participants_room_time", "room_id", "joined_at"),
        Index("idx_participants_user_time", "user_id", "joined_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid7)
    room_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("rooms.id", ondelete="CASCADE", name="room_participants_room_id_foreign")
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("users.id", ondelete="CASCADE", name="room_participants_user_id_foreign")
    )
    joined_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow_seconds, server_default=func.current_timestamp()
    )

    user: Mapped[User] = relationship(lazy="raise")
