"""Room queries. Each loader fetches a fixed number of statements whatever the number of rooms or members."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload, selectinload
from sqlalchemy.sql.base import ExecutableOption

from spotik.rooms.models import Room, RoomParticipant
from spotik.tracks.models import Track

# administrator and current track (with its uploader and genre) joined in; participants and their users in one
# extra SELECT … IN each.
ROOM_GRAPH: tuple[ExecutableOption, ...] = (
    joinedload(Room.administrator),
    joinedload(Room.current_track).joinedload(Track.uploader),
    joinedload(Room.current_track).joinedload(Track.genre),
    selectinload(Room.participants).joinedload(RoomParticipant.user),
)


async def get_room(session: AsyncSession, room_id: uuid.UUID, *, for_update: bool = False) -> Room | None:
    statement = select(Room).where(Room.id == room_id)
    if for_update:
        statement = statement.with_for_update()
    return await session.scalar(statement)


async def rooms_with_graph(session: AsyncSession) -> Sequence[Room]:
    statement = select(Room).options(*ROOM_GRAPH).order_by(Room.created_at.desc(), Room.id.desc())
    return (await session.scalars(statement)).unique().all()


async def room_with_graph(session: AsyncSession, room_id: uuid.UUID) -> Room | None:
    statement = select(Room).options(*ROOM_GRAPH).where(Room.id == room_id)
    return (await session.scalars(statement)).unique().one_or_none()


async def track_counts(session: AsyncSession, room_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Tracks still in each room's queue (played tracks excluded), in one grouped query."""
    if not room_ids:
        return {}
    statement = (
        select(Track.room_id, func.count())
        .where(Track.room_id.in_(room_ids), Track.played_at.is_(None))
        .group_by(Track.room_id)
    )
    return {room_id: count for room_id, count in (await session.execute(statement)).all()}


async def membership(session: AsyncSession, room_id: uuid.UUID, user_id: uuid.UUID) -> RoomParticipant | None:
    return await session.scalar(
        select(RoomParticipant).where(RoomParticipant.room_id == room_id, RoomParticipant.user_id == user_id)
    )


async def is_member(session: AsyncSession, room_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    statement = select(
        select(RoomParticipant.id)
        .where(RoomParticipant.room_id == room_id, RoomParticipant.user_id == user_id)
        .exists()
    )
    return bool(await session.scalar(statement))


async def participants_with_users(session: AsyncSession, room_id: uuid.UUID) -> Sequence[RoomParticipant]:
    statement = (
        select(RoomParticipant)
        .options(joinedload(RoomParticipant.user))
        .where(RoomParticipant.room_id == room_id)
        .order_by(RoomParticipant.joined_at, RoomParticipant.id)
    )
    return (await session.scalars(statement)).all()


async def delete_room(session: AsyncSession, room_id: uuid.UUID) -> None:
    """The room and, by cascade, its tracks, votes and memberships (not committed)."""
    await session.execute(delete(Room).where(Room.id == room_id))


async def remove_member(session: AsyncSession, room_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    """Whether a membership was deleted (not committed)."""
    result = await session.execute(
        delete(RoomParticipant).where(RoomParticipant.room_id == room_id, RoomParticipant.user_id == user_id)
    )
    return bool(getattr(result, "rowcount", 0))
