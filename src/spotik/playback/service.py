"""Server-driven playback (contract §2.6, §3.4, D4, D5).

State lives in the room row: ``current_track_id``, ``playback_started_at`` (S, the pause-adjusted virtual start),
``playback_paused_at`` (P) and ``is_playing``. Position while playing = now − S; while paused = P − S.
Every transition is a conditional UPDATE (compare-and-set on the state it was computed from), so concurrent
requests and several Spotik instances sharing one database can never apply the same transition twice.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from spotik.db.base import utcnow
from spotik.events import DomainEvent, EventBus
from spotik.rooms.models import Room
from spotik.timefmt import iso
from spotik.tracks.models import Track
from spotik.tracks.schemas import track_brief


def playback_started_event(
    room_id: uuid.UUID, track: Track, started_at: datetime, *, auto_started: bool = False
) -> DomainEvent:
    brief = track_brief(track)
    data: dict[str, Any] = {
        "room_id": str(room_id),
        "track": brief,
        "current_track": brief,
        "is_playing": True,
        "started_at": iso(started_at),
        "playback_started_at": iso(started_at),
        "playback_paused_at": None,
        "position": 0,
        "current_position": 0,
        "server_time": iso(utcnow()),
        "auto_started": auto_started,
    }
    return DomainEvent("playback_started", room_id, data)


async def start_if_idle(session: AsyncSession, bus: EventBus, *, room_id: uuid.UUID, track: Track) -> bool:
    """Start ``track`` now if the room is idle (nothing current, not playing); commit and publish if it did."""
    started_at = utcnow()
    result = await session.execute(
        update(Room)
        .where(Room.id == room_id, Room.current_track_id.is_(None), Room.is_playing.is_(False))
        .values(
            current_track_id=track.id,
            playback_started_at=started_at,
            playback_paused_at=None,
            is_playing=True,
            updated_at=started_at,
        )
        .execution_options(synchronize_session=False)
    )
    if not getattr(result, "rowcount", 0):
        return False
    await session.commit()
    await bus.publish(playback_started_event(room_id, track, started_at, auto_started=True))
    return True
