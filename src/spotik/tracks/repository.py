"""Track and vote queries shared by the rooms, tracks and playback services."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload
from sqlalchemy.sql.elements import ColumnElement

from spotik.tracks.models import Track, TrackVote

# Queue order (contract §3.1): most votes first, then oldest upload; ids are time-ordered UUIDs and break ties
# between uploads within the same second (created_at has whole-second precision in the Laravel schema).
QUEUE_ORDER: tuple[ColumnElement[Any], ...] = (
    Track.vote_score.desc(),
    Track.created_at.asc(),
    Track.id.asc(),
)


async def queue_tracks(session: AsyncSession, room_id: uuid.UUID) -> Sequence[Track]:
    """The room's queue: every unplayed track (the current one included while it plays), uploader and genre loaded."""
    statement = (
        select(Track)
        .options(joinedload(Track.uploader), joinedload(Track.genre))
        .where(Track.room_id == room_id, Track.played_at.is_(None))
        .order_by(*QUEUE_ORDER)
    )
    return (await session.scalars(statement)).all()


async def voted_track_ids(session: AsyncSession, user_id: uuid.UUID, room_id: uuid.UUID) -> frozenset[uuid.UUID]:
    """Ids of the room's tracks that ``user_id`` voted for, in one query."""
    statement = (
        select(TrackVote.track_id)
        .join(Track, Track.id == TrackVote.track_id)
        .where(TrackVote.user_id == user_id, Track.room_id == room_id)
    )
    return frozenset((await session.scalars(statement)).all())
