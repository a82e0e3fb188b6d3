"""Playback queries: the room's four playback columns, the queue head, and the compare-and-set that changes them.

The rules (what a transition is, when it may happen) are in ``spotik.playback.service``; this holds the statements.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Executable, Float, func, select, update
from sqlalchemy import cast as sql_cast
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from spotik.playback import clock
from spotik.playback.clock import PlaybackState
from spotik.rooms.models import Room
from spotik.tracks.models import Track
from spotik.tracks.repository import QUEUE_ORDER


@dataclass(frozen=True, slots=True)
class Snapshot:
    state: PlaybackState
    track: Track | None


async def load(session: AsyncSession, room_id: uuid.UUID) -> Snapshot | None:
    """The room's playback columns and its current track, fresh from the database (one query)."""
    statement = (
        select(Room.current_track_id, Room.playback_started_at, Room.playback_paused_at, Room.is_playing, Track)
        .outerjoin(Track, Track.id == Room.current_track_id)
        .where(Room.id == room_id)
        .execution_options(populate_existing=True)
    )
    row = (await session.execute(statement)).one_or_none()
    if row is None:
        return None
    current_track_id, started_at, paused_at, is_playing, track = row
    return Snapshot(PlaybackState(current_track_id, started_at, paused_at, bool(is_playing)), track)


async def room_track(session: AsyncSession, room_id: uuid.UUID, track_id: uuid.UUID) -> Track | None:
    statement = (
        select(Track).where(Track.id == track_id, Track.room_id == room_id).execution_options(populate_existing=True)
    )
    return await session.scalar(statement)


async def next_track(session: AsyncSession, room_id: uuid.UUID, *, excluding: uuid.UUID | None) -> Track | None:
    """The head of the queue (score, then age, then id) among unplayed tracks, ``excluding`` the current one."""
    statement = (
        select(Track)
        .where(Track.room_id == room_id, Track.played_at.is_(None))
        .order_by(*QUEUE_ORDER)
        .limit(1)
        .execution_options(populate_existing=True)
    )
    if excluding is not None:
        statement = statement.where(Track.id != excluding)
    return await session.scalar(statement)


def queue_empty(room_id: uuid.UUID, excluding: uuid.UUID) -> ColumnElement[bool]:
    """Guard for "stop, the queue is empty": a track uploaded meanwhile makes the compare-and-set fail, and the
    retry starts that track instead of leaving an idle room with a queued track."""
    others = select(Track.id).where(Track.room_id == room_id, Track.played_at.is_(None), Track.id != excluding)
    return ~others.exists()


def mark_played(track_id: uuid.UUID, now: datetime) -> Executable:
    return (
        update(Track)
        .where(Track.id == track_id, Track.played_at.is_(None))
        .values(played_at=now)
        .execution_options(synchronize_session=False)
    )


def mark_unplayed(track_id: uuid.UUID) -> Executable:
    return (
        update(Track)
        .where(Track.id == track_id, Track.played_at.is_not(None))
        .values(played_at=None)
        .execution_options(synchronize_session=False)
    )


def _state_is(state: PlaybackState) -> list[ColumnElement[bool]]:
    def equals(column: Any, value: Any) -> ColumnElement[bool]:
        return cast("ColumnElement[bool]", column.is_(None) if value is None else column == value)

    return [
        equals(Room.current_track_id, state.current_track_id),
        equals(Room.playback_started_at, state.started_at),
        equals(Room.playback_paused_at, state.paused_at),
        Room.is_playing.is_(state.is_playing),
    ]


def _set_state(new: PlaybackState, now: datetime) -> dict[str, Any]:
    return {
        "current_track_id": new.current_track_id,
        "playback_started_at": new.started_at,
        "playback_paused_at": new.paused_at,
        "is_playing": new.is_playing,
        "updated_at": now,
    }


async def compare_and_set(
    session: AsyncSession,
    room_id: uuid.UUID,
    expected: PlaybackState,
    new: PlaybackState,
    now: datetime,
    *,
    guards: Sequence[ColumnElement[bool]] = (),
    then: Sequence[Executable] = (),
) -> bool:
    """expected → new in one transaction (plus the ``then`` writes), committed. False if the room had changed."""
    statement = (
        update(Room)
        .where(Room.id == room_id, *_state_is(expected), *guards)
        .values(**_set_state(new, now))
        .execution_options(synchronize_session=False)
    )
    try:
        result = cast("CursorResult[Any]", await session.execute(statement))
        if result.rowcount != 1:
            await session.rollback()
            return False
        for write in then:
            await session.execute(write)
        await session.commit()
    except IntegrityError:
        # The track we meant to start was deleted meanwhile (foreign key): decide again from fresh state.
        await session.rollback()
        return False
    return True


async def start_if_idle(session: AsyncSession, room_id: uuid.UUID, new: PlaybackState, now: datetime) -> bool:
    """idle (nothing current, not playing) → ``new``, in the caller's transaction (not committed)."""
    statement = (
        update(Room)
        .where(Room.id == room_id, Room.current_track_id.is_(None), Room.is_playing.is_(False))
        .values(**_set_state(new, now))
        .execution_options(synchronize_session=False)
    )
    result = cast("CursorResult[Any]", await session.execute(statement))
    return result.rowcount == 1


async def clear_if_current(session: AsyncSession, room_id: uuid.UUID, track_id: uuid.UUID, now: datetime) -> bool:
    """The room → idle if ``track_id`` is its current track, in the caller's transaction (not committed)."""
    statement = (
        update(Room)
        .where(Room.id == room_id, Room.current_track_id == track_id)
        .values(**_set_state(clock.IDLE, now))
        .execution_options(synchronize_session=False)
    )
    result = cast("CursorResult[Any]", await session.execute(statement))
    return result.rowcount == 1


def track_end_expression(dialect: str) -> ColumnElement[Any]:
    """S + duration as Unix seconds (float), computed by the database. A playing room whose track vanished
    (``current_track_id`` NULL) counts as ended at S, so that the scheduler repairs it."""
    duration = func.coalesce(Track.duration_seconds, 0)
    start: ColumnElement[Any]
    if dialect == "postgresql":
        # extract(epoch …) of a timestamp *without* time zone reads it as UTC, which is what the columns hold.
        start = sql_cast(func.extract("epoch", Room.playback_started_at), Float)
    elif dialect == "sqlite":
        # julianday() parses the stored text with its fractional seconds (millisecond precision is plenty for a
        # wake-up time; the decision to advance is made again on the exact values in Python).
        start = (func.julianday(Room.playback_started_at) - clock.JULIAN_DAY_OF_UNIX_EPOCH) * clock.SECONDS_PER_DAY
    else:  # pragma: no cover - the two supported databases
        raise NotImplementedError(f"no track-end expression for {dialect}")
    return start + duration


async def earliest_track_ends(
    session: AsyncSession, *, limit: int, skip: frozenset[uuid.UUID] = frozenset()
) -> list[tuple[uuid.UUID, float]]:
    """(room id, track end in Unix seconds) of the playing rooms whose track ends first — one query."""
    ends = track_end_expression(session.get_bind().dialect.name).label("ends_at")
    statement = (
        select(Room.id, ends)
        .select_from(Room)
        .outerjoin(Track, Track.id == Room.current_track_id)
        .where(Room.is_playing.is_(True), Room.playback_started_at.is_not(None))
        .order_by(ends, Room.id)
        .limit(limit)
    )
    if skip:
        statement = statement.where(Room.id.not_in(skip))
    return [(room_id, float(ends_at)) for room_id, ends_at in (await session.execute(statement)).all()]
