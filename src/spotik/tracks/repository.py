"""Track and vote queries shared by the rooms, tracks and playback services."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import and_, case, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload
from sqlalchemy.sql.elements import ColumnElement

from spotik.db.base import utcnow, uuid7
from spotik.db.upsert import insert_ignore
from spotik.genres.models import Genre
from spotik.rooms.models import RoomParticipant
from spotik.tracks.models import Track, TrackVote

# Queue order (docs/api.md#queue-order): most votes first, then oldest upload; ids are time-ordered UUIDs and break ties
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


# --- single tracks ---------------------------------------------------------------------------------------------


class StoredFiles(NamedTuple):
    """What locates a track's files on disk (its audio under the audio root, its cover by id)."""

    id: uuid.UUID
    file_path: str
    filename: str


async def room_track_files(session: AsyncSession, room_id: uuid.UUID) -> list[StoredFiles]:
    statement = select(Track.id, Track.file_path, Track.filename).where(Track.room_id == room_id)
    return [StoredFiles(*row) for row in (await session.execute(statement)).all()]


async def get_track(session: AsyncSession, track_id: uuid.UUID) -> Track | None:
    return await session.get(Track, track_id)


async def track_by_filename(session: AsyncSession, filename: str) -> Track | None:
    return await session.scalar(select(Track).where(Track.filename == filename).limit(1))


async def get_genre(session: AsyncSession, genre_id: int) -> Genre | None:
    return await session.get(Genre, genre_id)


def _ahead_of(track: Track, score: int) -> ColumnElement[bool]:
    """Tracks that come before ``track`` in queue order (QUEUE_ORDER as a predicate) if it had ``score`` votes."""
    same_score_older = and_(
        Track.vote_score == score,
        or_(
            Track.created_at < track.created_at,
            and_(Track.created_at == track.created_at, Track.id < track.id),
        ),
    )
    return and_(Track.id != track.id, or_(Track.vote_score > score, same_score_older))


def _count_where(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


async def queue_position(session: AsyncSession, track: Track) -> tuple[int, int]:
    """``(1-based position of track, number of tracks)`` in its room's queue, in one query."""
    statement = select(func.count(), _count_where(_ahead_of(track, track.vote_score))).where(
        Track.room_id == track.room_id, Track.played_at.is_(None)
    )
    total, before = (await session.execute(statement)).one()
    return int(before) + 1, int(total)


async def tracks_ahead(session: AsyncSession, track: Track, scores: Sequence[int]) -> list[int]:
    """For each of ``scores``: how many queued tracks would come before ``track`` if it had that score.

    One query; the database compares with its own ordering rules, so the answer always agrees with QUEUE_ORDER.
    """
    counts = [_count_where(_ahead_of(track, score)) for score in scores]
    statement = select(*counts).where(Track.room_id == track.room_id, Track.played_at.is_(None))
    return [int(value) for value in (await session.execute(statement)).one()]


async def delete_track(session: AsyncSession, track_id: uuid.UUID) -> bool:
    """Delete the row (votes and playlist entries cascade in the database); False if it was already gone."""
    result = await session.execute(
        delete(Track).where(Track.id == track_id).execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


# --- votes -----------------------------------------------------------------------------------------------------


async def add_vote(session: AsyncSession, track_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    """Insert the (track, user) vote unless it exists (unique key); whether a row was inserted."""
    return await insert_ignore(
        session,
        TrackVote.__table__,  # type: ignore[arg-type]
        {"id": uuid7(), "track_id": track_id, "user_id": user_id, "created_at": utcnow()},
    )


async def remove_vote(session: AsyncSession, track_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    result = await session.execute(
        delete(TrackVote)
        .where(TrackVote.track_id == track_id, TrackVote.user_id == user_id)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


async def change_vote_score(session: AsyncSession, track_id: uuid.UUID, delta: int) -> int | None:
    """``vote_score = vote_score + delta`` computed by the database (so concurrent votes never lose an update)."""
    result = await session.execute(
        update(Track)
        .where(Track.id == track_id)
        .values(vote_score=Track.vote_score + delta)
        .returning(Track.vote_score)
        .execution_options(synchronize_session=False)
    )
    score = result.scalar_one_or_none()
    return None if score is None else int(score)


async def vote_score(session: AsyncSession, track_id: uuid.UUID) -> int | None:
    score = await session.scalar(select(Track.vote_score).where(Track.id == track_id))
    return None if score is None else int(score)


async def queue_scores(session: AsyncSession, room_id: uuid.UUID) -> list[tuple[uuid.UUID, int]]:
    """``(id, vote_score)`` of the room's queue in queue order: the cheap form of the queue, for reorder checks."""
    statement = (
        select(Track.id, Track.vote_score)
        .where(Track.room_id == room_id, Track.played_at.is_(None))
        .order_by(*QUEUE_ORDER)
    )
    return [(track_id, int(score)) for track_id, score in (await session.execute(statement))]


async def voted_among(
    session: AsyncSession, user_id: uuid.UUID, track_ids: Sequence[uuid.UUID]
) -> frozenset[uuid.UUID]:
    if not track_ids:
        return frozenset()
    statement = select(TrackVote.track_id).where(TrackVote.user_id == user_id, TrackVote.track_id.in_(track_ids))
    return frozenset((await session.scalars(statement)).all())


# --- search ----------------------------------------------------------------------------------------------------


def like_pattern(text: str) -> str:
    """``%text%`` with LIKE's wildcards and the escape character escaped (ESCAPE '\\')."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def search_member_tracks(
    session: AsyncSession, user_id: uuid.UUID, text: str, *, limit: int
) -> tuple[Sequence[Track], int]:
    """Tracks of the rooms ``user_id`` belongs to whose name contains ``text`` (case-insensitive), newest first.

    Returns at most ``limit`` tracks (uploader and genre loaded) and the number of all matches, in one query.
    """
    member_rooms = select(RoomParticipant.room_id).where(RoomParticipant.user_id == user_id)
    total = func.count().over().label("total")
    statement = (
        select(Track, total)
        .options(joinedload(Track.uploader), joinedload(Track.genre))
        .where(Track.room_id.in_(member_rooms), Track.original_name.ilike(like_pattern(text), escape="\\"))
        .order_by(Track.created_at.desc(), Track.id.desc())
        .limit(limit)
    )
    rows = (await session.execute(statement)).all()
    return [track for track, _ in rows], (int(rows[0][1]) if rows else 0)
