"""Server-driven playback (docs/api.md#playback, docs/api.md#playback-clock, docs/decisions.md#d4,
docs/decisions.md#d5).

State lives in the room row: ``current_track_id``, ``playback_started_at`` (S, the pause-adjusted virtual start),
``playback_paused_at`` (P) and ``is_playing``; the arithmetic is in ``spotik.playback.clock``.

**Exactly once, without locks.** Every transition is a compare-and-set: read the four columns, compute the new
state, then ``UPDATE rooms SET … WHERE id = :room AND <all four columns still equal what was read>`` and check the
row count. Whoever loses a race (another request, this process's scheduler, another instance's scheduler) sees
``rowcount == 0``, rolls back, re-reads and decides again from the new state — so a transition is applied at most
once, and an auto-advance can never run twice for the same track end. On PostgreSQL (READ COMMITTED) a concurrent
UPDATE of the same row waits for the first one to commit and then re-checks its WHERE against the new row; on
SQLite writers are serialised outright. Side writes (``tracks.played_at``) happen in the same transaction, after
the compare-and-set succeeded.

Events are published on the bus only after the commit, never from inside a transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy.ext.asyncio import AsyncSession

from spotik.auth.models import User
from spotik.db.base import utcnow
from spotik.errors import BadRequest, Conflict, Forbidden, NotFound, ValidationFailed
from spotik.events import DomainEvent, EventBus
from spotik.playback import clock, repository, schemas
from spotik.playback.clock import IDLE, PlaybackState
from spotik.playback.repository import Snapshot
from spotik.playback.schemas import PlaybackEvent, StartReason, StopReason
from spotik.reads import ROOM_STATE, Reads, room_tag
from spotik.rooms.models import Room
from spotik.timefmt import from_iso, iso
from spotik.tracks.models import Track
from spotik.validation import Field, numeric, parse_uuid, validate

# A lost compare-and-set means somebody else changed the room between our read and our write (a few
# milliseconds); losing five times in a row means something is hammering the room, and the client may retry.
MAX_ATTEMPTS = 5

PLAYBACK_EVENT_TYPES = frozenset(event.value for event in PlaybackEvent)


# --- errors (the wording of docs/api.md#playback) -------------------------------------------------------------


def no_active_playback() -> BadRequest:
    return BadRequest("No track is currently playing", error="No active playback")


def no_paused_playback() -> BadRequest:
    return BadRequest("No track is currently paused", error="No paused playback")


def no_active_track() -> BadRequest:
    return BadRequest("No track is currently playing", error="No active track")


def track_not_in_room() -> NotFound:
    return NotFound("Track does not belong to this room", error="Invalid track")


def negative_position() -> BadRequest:
    return BadRequest("Position cannot be negative", error="Invalid position")


def position_beyond_track() -> BadRequest:
    return BadRequest("Position exceeds track duration", error="Invalid position")


def room_not_found() -> NotFound:
    return NotFound("Room not found", error="Room not found")


def concurrent_change() -> Conflict:
    return Conflict("Playback changed concurrently, please retry", error="Concurrent playback change")


# --- results: what each action did, with the message and the data both REST and WebSocket answer with ---------


@dataclass(frozen=True, slots=True)
class Started:
    track: Track
    started_at: datetime
    message: ClassVar[str] = "Playback started successfully"

    def data(self, now: datetime) -> dict[str, Any]:
        return schemas.started_data(self.track, self.started_at, now)


@dataclass(frozen=True, slots=True)
class Paused:
    track: Track
    paused_at: datetime
    position: float | None
    message: ClassVar[str] = "Playback paused successfully"

    def data(self, now: datetime) -> dict[str, Any]:
        return schemas.paused_data(self.track, self.paused_at, self.position, now)


@dataclass(frozen=True, slots=True)
class Resumed:
    track: Track
    resumed_at: datetime
    position: float | None
    message: ClassVar[str] = "Playback resumed successfully"

    def data(self, now: datetime) -> dict[str, Any]:
        return schemas.resumed_data(self.track, self.resumed_at, self.position, now)


@dataclass(frozen=True, slots=True)
class Skipped:
    skipped_track_id: uuid.UUID
    next_track: Track | None
    message: ClassVar[str] = "Track skipped successfully"

    def data(self, now: datetime) -> dict[str, Any]:
        return schemas.skipped_data(self.skipped_track_id, self.next_track, now)


@dataclass(frozen=True, slots=True)
class Stopped:
    previous_track: Track | None
    message: ClassVar[str] = "Playback stopped successfully"

    def data(self, now: datetime) -> dict[str, Any]:
        return schemas.stopped_data(now)


@dataclass(frozen=True, slots=True)
class Sought:
    track: Track
    position: float
    sought_at: datetime
    is_playing: bool
    message: ClassVar[str] = "Playback seeked successfully"

    def data(self, now: datetime) -> dict[str, Any]:
        return schemas.sought_data(self.track, self.position, self.sought_at, self.is_playing, now)


Outcome = Started | Paused | Resumed | Skipped | Stopped | Sought


@dataclass(frozen=True, slots=True)
class AdvanceOutcome:
    """What one scheduler visit to a room did. ``due_at`` is set when the track has not ended yet."""

    advanced: bool
    due_at: datetime | None = None


class Action(StrEnum):
    """What the administrator can do (REST: one route each; WebSocket: ``playback_control``'s ``action``)."""

    PLAY = "play"
    PAUSE = "pause"
    RESUME = "resume"
    SKIP = "skip"
    STOP = "stop"
    SEEK = "seek"


# --- who may do what ---------------------------------------------------------------------------------------------


def require_administrator(user: User, room: Room) -> None:
    if room.administrator_id != user.id:
        raise Forbidden("Only room administrator can control playback", error="Insufficient permissions")


def require_viewer(user_id: uuid.UUID, administrator_id: uuid.UUID, *, member: bool) -> None:
    if administrator_id != user_id and not member:
        raise Forbidden("You must be a participant of this room to view playback status", error="Not a participant")


def _track_id(data: Mapping[str, Any]) -> uuid.UUID:
    raw = data.get("track_id")
    if raw is None or raw == "":
        raise ValidationFailed({"track_id": ["The track id field is required."]})
    track_id = parse_uuid(raw)
    if track_id is None:
        raise track_not_in_room()
    return track_id


def _position(data: Mapping[str, Any]) -> float:
    values = validate({"position": data.get("position")}, {"position": Field((numeric,))})
    return float(values["position"])


async def control(
    session: AsyncSession, bus: EventBus, *, room: Room, user: User, action: Action, data: Mapping[str, Any]
) -> Outcome:
    """One administrator action on ``room``, REST's and the WebSocket's alike: the role, then the input
    (``track_id`` for play, ``position`` for seek), then the transition."""
    require_administrator(user, room)
    match action:
        case Action.PLAY:
            return await play(session, bus, room_id=room.id, track_id=_track_id(data))
        case Action.PAUSE:
            return await pause(session, bus, room_id=room.id)
        case Action.RESUME:
            return await resume(session, bus, room_id=room.id)
        case Action.SKIP:
            return await skip(session, bus, room_id=room.id)
        case Action.STOP:
            return await stop(session, bus, room_id=room.id)
        case Action.SEEK:
            return await seek(session, bus, room_id=room.id, position=_position(data))


# --- events ----------------------------------------------------------------------------------------------------


def playback_started_event(
    room_id: uuid.UUID,
    track: Track,
    started_at: datetime,
    *,
    auto_started: bool = False,
    previous_track: Track | None = None,
    reason: StartReason | None = None,
) -> DomainEvent:
    if reason is None:
        reason = StartReason.TRACK_UPLOADED if auto_started else StartReason.ADMINISTRATOR_PLAY
    data = schemas.started_payload(
        room_id,
        track,
        started_at,
        now=utcnow(),
        auto_started=auto_started,
        previous_track=previous_track,
        reason=reason,
    )
    return DomainEvent(PlaybackEvent.STARTED.value, room_id, data)


def playback_stopped_event(
    room_id: uuid.UUID, previous_track: Track | None, reason: StopReason, stopped_at: datetime
) -> DomainEvent:
    data = schemas.stopped_payload(room_id, previous_track, reason, stopped_at, now=utcnow())
    return DomainEvent(PlaybackEvent.STOPPED.value, room_id, data)


async def _publish(bus: EventBus, events: Sequence[DomainEvent]) -> None:
    for event in events:
        await bus.publish(event)


async def _load_or_404(session: AsyncSession, room_id: uuid.UUID) -> Snapshot:
    snapshot = await repository.load(session, room_id)
    if snapshot is None:
        raise room_not_found()
    return snapshot


# --- transitions -----------------------------------------------------------------------------------------------


async def play(session: AsyncSession, bus: EventBus, *, room_id: uuid.UUID, track_id: uuid.UUID) -> Started:
    """Play ``track`` from its start, whatever the room was doing. A played track may be replayed (it rejoins the
    queue); a track interrupted by this stays in the queue, unplayed."""
    for _ in range(MAX_ATTEMPTS):
        track = await repository.room_track(session, room_id, track_id)
        if track is None:
            raise track_not_in_room()
        snapshot = await _load_or_404(session, room_id)
        now = utcnow()
        new = clock.started(track.id, now)
        if await repository.compare_and_set(
            session, room_id, snapshot.state, new, now, then=[repository.mark_unplayed(track.id)]
        ):
            track.played_at = None
            event = playback_started_event(room_id, track, now, previous_track=snapshot.track)
            await _publish(bus, [event])
            return Started(track, now)
    raise concurrent_change()


async def pause(session: AsyncSession, bus: EventBus, *, room_id: uuid.UUID) -> Paused:
    for _ in range(MAX_ATTEMPTS):
        snapshot = await _load_or_404(session, room_id)
        track = snapshot.track
        if not snapshot.state.is_active or track is None:
            raise no_active_playback()
        now = utcnow()
        new = clock.paused(snapshot.state, now)
        if await repository.compare_and_set(session, room_id, snapshot.state, new, now):
            position = clock.position(new, now, track.duration_seconds)
            payload = schemas.paused_payload(room_id, new, track, position, now=utcnow())
            await _publish(bus, [DomainEvent(PlaybackEvent.PAUSED.value, room_id, payload)])
            return Paused(track, now, position)
    raise concurrent_change()


async def resume(session: AsyncSession, bus: EventBus, *, room_id: uuid.UUID) -> Resumed:
    for _ in range(MAX_ATTEMPTS):
        snapshot = await _load_or_404(session, room_id)
        track = snapshot.track
        if not snapshot.state.is_paused or track is None:
            raise no_paused_playback()
        now = utcnow()
        paused_position = clock.position(snapshot.state, now, track.duration_seconds)
        new = clock.resumed(snapshot.state, now)
        if await repository.compare_and_set(session, room_id, snapshot.state, new, now):
            payload = schemas.resumed_payload(room_id, track, now, paused_position, now=utcnow())
            await _publish(bus, [DomainEvent(PlaybackEvent.RESUMED.value, room_id, payload)])
            return Resumed(track, now, paused_position)
    raise concurrent_change()


async def _move_on(
    session: AsyncSession, room_id: uuid.UUID, snapshot: Snapshot, finished: Track, now: datetime
) -> tuple[bool, Track | None]:
    """Mark ``finished`` played and start the next track now, or stop when the queue is empty.

    Returns (False, None) when the compare-and-set lost, else (True, the started track or None if it stopped).
    """
    following = await repository.next_track(session, room_id, excluding=finished.id)
    if following is not None:
        new, guards = clock.started(following.id, now), []
    else:
        new, guards = IDLE, [repository.queue_empty(room_id, finished.id)]
    done = await repository.compare_and_set(
        session, room_id, snapshot.state, new, now, guards=guards, then=[repository.mark_played(finished.id, now)]
    )
    if not done:
        return False, None
    finished.played_at = now
    return True, following


async def skip(session: AsyncSession, bus: EventBus, *, room_id: uuid.UUID) -> Skipped:
    """Mark the current track played and start the next one (or stop when the queue is empty).

    If the track this request set out to skip stops being current while it retries (the scheduler advanced it,
    or another skip won), the skip has already happened: it answers from the new state instead of skipping a
    second track.
    """
    # Only the id survives a lost attempt: the rollback expires every ORM object the session holds.
    target_id: uuid.UUID | None = None
    for _ in range(MAX_ATTEMPTS):
        snapshot = await _load_or_404(session, room_id)
        if target_id is not None and snapshot.state.current_track_id != target_id:
            return Skipped(target_id, snapshot.track if snapshot.state.is_playing else None)
        target = snapshot.track
        if snapshot.state.current_track_id is None or target is None:
            raise no_active_track()
        target_id = target.id
        now = utcnow()
        done, following = await _move_on(session, room_id, snapshot, target, now)
        if not done:
            continue
        events = [
            DomainEvent(
                PlaybackEvent.SKIPPED.value,
                room_id,
                schemas.skipped_payload(room_id, target, following, now if following else None, now=utcnow()),
            )
        ]
        if following is not None:
            events.append(
                playback_started_event(room_id, following, now, previous_track=target, reason=StartReason.TRACK_SKIPPED)
            )
        else:
            events.append(playback_stopped_event(room_id, target, StopReason.NO_MORE_TRACKS, now))
        await _publish(bus, events)
        return Skipped(target.id, following)
    raise concurrent_change()


async def stop(session: AsyncSession, bus: EventBus, *, room_id: uuid.UUID) -> Stopped:
    """Any state → idle. The current track is *not* marked played: it stays in the queue."""
    for _ in range(MAX_ATTEMPTS):
        snapshot = await _load_or_404(session, room_id)
        if snapshot.state == IDLE:
            return Stopped(None)
        now = utcnow()
        if await repository.compare_and_set(session, room_id, snapshot.state, IDLE, now):
            await _publish(bus, [playback_stopped_event(room_id, snapshot.track, StopReason.ADMINISTRATOR_STOP, now)])
            return Stopped(snapshot.track)
    raise concurrent_change()


async def seek(session: AsyncSession, bus: EventBus, *, room_id: uuid.UUID, position: float) -> Sought:
    """S := now − position (P := now when paused, so the room stays paused at that position)."""
    if position < 0:
        raise negative_position()
    for _ in range(MAX_ATTEMPTS):
        snapshot = await _load_or_404(session, room_id)
        track = snapshot.track
        if snapshot.state.current_track_id is None or snapshot.state.started_at is None or track is None:
            raise no_active_track()
        if position > track.duration_seconds:
            raise position_beyond_track()
        now = utcnow()
        new = clock.sought(snapshot.state, now, position)
        if await repository.compare_and_set(session, room_id, snapshot.state, new, now):
            assert new.started_at is not None
            actual = clock.seconds(now - new.started_at)  # the position as stored (microseconds)
            payload = schemas.sought_payload(room_id, new, track, actual, now, now=utcnow())
            await _publish(bus, [DomainEvent(PlaybackEvent.SEEKED.value, room_id, payload)])
            return Sought(track, actual, now, new.is_playing)
    raise concurrent_change()


async def status(session: AsyncSession, reads: Reads, *, room_id: uuid.UUID) -> dict[str, Any]:
    """``GET …/playback/status``'s data: the room's playback columns and current track through the cache
    (``room_state``, ``<room>:playback``, tagged with the room: every playback change is an event of the room), the
    position computed now."""

    async def build(own: AsyncSession) -> dict[str, Any]:
        snapshot = await _load_or_404(own, room_id)
        state, track = snapshot.state, snapshot.track
        return {
            "current_track_id": None if state.current_track_id is None else str(state.current_track_id),
            "started_at": iso(state.started_at),
            "paused_at": iso(state.paused_at),
            "is_playing": state.is_playing,
            "track": schemas.status_track(track),
        }

    entry = await reads.through(ROOM_STATE, f"{room_id}:playback", build, session=session, tags=(room_tag(room_id),))
    state = PlaybackState(
        None if entry["current_track_id"] is None else uuid.UUID(entry["current_track_id"]),
        from_iso(entry["started_at"]),
        from_iso(entry["paused_at"]),
        entry["is_playing"],
    )
    track = entry["track"]
    now = utcnow()
    position = clock.position(state, now, None if track is None else track["duration_seconds"])
    return schemas.status_data(entry, position, now)


async def start_if_idle(session: AsyncSession, bus: EventBus, *, room_id: uuid.UUID, track: Track) -> bool:
    """Start ``track`` now if the room is idle (nothing current, not playing); commit and publish if it did."""
    started_at = utcnow()
    if not await repository.start_if_idle(session, room_id, clock.started(track.id, started_at), started_at):
        return False
    await session.commit()
    await bus.publish(playback_started_event(room_id, track, started_at, auto_started=True))
    return True


async def stop_for_removed_track(session: AsyncSession, *, room_id: uuid.UUID, track: Track) -> DomainEvent | None:
    """For deleting a track: if it is the room's current track, make the room idle *in the caller's transaction*
    and return the ``playback_stopped`` event (reason ``track_removed``) for the caller to publish after its
    commit. Returns None (and changes nothing) when ``track`` is not current."""
    now = utcnow()
    if not await repository.clear_if_current(session, room_id, track.id, now):
        return None
    return playback_stopped_event(room_id, track, StopReason.TRACK_REMOVED, now)


async def advance_if_due(session: AsyncSession, bus: EventBus, *, room_id: uuid.UUID) -> AdvanceOutcome:
    """The scheduler's visit: if the current track has ended (now ≥ S + duration while playing), mark it played and
    start the next one now (``playback_started``, reason ``track_finished``), or stop when the queue is empty
    (``playback_stopped``, reason ``no_more_tracks``). Safe to call from any number of processes at once: the
    compare-and-set lets exactly one of them advance a given track end."""
    snapshot = await repository.load(session, room_id)
    if snapshot is None or not snapshot.state.is_playing:
        return AdvanceOutcome(advanced=False)
    state, finished = snapshot.state, snapshot.track
    now = utcnow()
    if state.current_track_id is None or finished is None:
        # Playing with no track (a foreign key set it NULL behind our back): make the room idle.
        if await repository.compare_and_set(session, room_id, state, IDLE, now):
            await _publish(bus, [playback_stopped_event(room_id, None, StopReason.TRACK_REMOVED, now)])
            return AdvanceOutcome(advanced=True)
        return AdvanceOutcome(advanced=False)
    end = clock.due_at(state, finished.duration_seconds)
    if end is None:
        return AdvanceOutcome(advanced=False)
    if now < end:
        return AdvanceOutcome(advanced=False, due_at=end)
    done, following = await _move_on(session, room_id, snapshot, finished, now)
    if not done:
        return AdvanceOutcome(advanced=False)
    if following is not None:
        event = playback_started_event(
            room_id, following, now, previous_track=finished, reason=StartReason.TRACK_FINISHED
        )
    else:
        event = playback_stopped_event(room_id, finished, StopReason.NO_MORE_TRACKS, now)
    await _publish(bus, [event])
    return AdvanceOutcome(advanced=True)
