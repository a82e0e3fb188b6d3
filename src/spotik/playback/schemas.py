"""Playback shapes: the ``data`` of the REST responses (docs/api.md#playback, as the Laravel backend answers) and the
event payloads (docs/api.md#event-payloads).

Every event payload carries ``room_id``, ``server_time``, ``timestamp`` and the room's playback fields
(``is_playing``, ``current_track``, ``playback_started_at``, ``playback_paused_at``), plus the union of the
names both client variants read (``started_at``/``playback_started_at``, ``paused_at``/``playback_paused_at``,
``position``/``current_position``, ``next_track``/``new_track``).

Position semantics the web client depends on (docs/api.md#position-arithmetic): it computes
``position + (now − started_at)`` whenever ``position > 0``. So events that describe a track *playing from its
start* carry ``position: 0``, and ``playback_resumed`` carries the resume instant as ``playback_started_at``
together with the paused position (never the pause-adjusted virtual start, which would count the position twice).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field
from typing_extensions import TypedDict

from spotik.http.openapi import Message, Responses, Timestamp, Uuid, closed, error, open_ended
from spotik.playback.clock import PlaybackState
from spotik.timefmt import iso
from spotik.tracks.models import Track
from spotik.tracks.schemas import track_brief


class StopReason(StrEnum):
    ADMINISTRATOR_STOP = "administrator_stop"
    NO_MORE_TRACKS = "no_more_tracks"
    TRACK_REMOVED = "track_removed"


class StartReason(StrEnum):
    ADMINISTRATOR_PLAY = "administrator_play"
    TRACK_SKIPPED = "track_skipped"
    TRACK_FINISHED = "track_finished"
    TRACK_UPLOADED = "track_uploaded"


class PlaybackEvent(StrEnum):
    STARTED = "playback_started"
    PAUSED = "playback_paused"
    RESUMED = "playback_resumed"
    STOPPED = "playback_stopped"
    SEEKED = "playback_seeked"
    SKIPPED = "track_skipped"


def brief(track: Track | None) -> dict[str, Any] | None:
    return None if track is None else track_brief(track)


def status_track(track: Track | None) -> dict[str, Any] | None:
    """The ``current_track`` of ``GET …/playback/status`` (Laravel's exact key set)."""
    if track is None:
        return None
    return {
        "id": str(track.id),
        "filename": track.filename,
        "original_name": track.original_name,
        "duration_seconds": track.duration_seconds,
        "file_path": track.file_path,
    }


# --- REST response data -------------------------------------------------------------------------------------


def started_data(track: Track, started_at: datetime, now: datetime) -> dict[str, Any]:
    return {"track_id": str(track.id), "started_at": iso(started_at), "server_time": iso(now)}


def paused_data(track: Track, paused_at: datetime, position: float | None, now: datetime) -> dict[str, Any]:
    return {"track_id": str(track.id), "paused_at": iso(paused_at), "position": position, "server_time": iso(now)}


def resumed_data(track: Track, resumed_at: datetime, position: float | None, now: datetime) -> dict[str, Any]:
    return {"track_id": str(track.id), "resumed_at": iso(resumed_at), "position": position, "server_time": iso(now)}


def skipped_data(skipped_track_id: uuid.UUID, next_track: Track | None, now: datetime) -> dict[str, Any]:
    return {
        "skipped_track_id": str(skipped_track_id),
        "next_track_id": None if next_track is None else str(next_track.id),
        "server_time": iso(now),
    }


def stopped_data(now: datetime) -> dict[str, Any]:
    return {"server_time": iso(now)}


def sought_data(track: Track, position: float, sought_at: datetime, is_playing: bool, now: datetime) -> dict[str, Any]:
    return {
        "track_id": str(track.id),
        "position": position,
        "seeked_at": iso(sought_at),
        "server_time": iso(now),
        "is_playing": is_playing,
    }


def status_data(entry: dict[str, Any], position: float | None, now: datetime) -> dict[str, Any]:
    """``entry``: the room's cached playback (its times as ``iso`` wrote them, the track as ``status_track``
    gives it)."""
    return {
        "is_playing": entry["is_playing"],
        "current_track": entry["track"],
        "position": position,
        "started_at": entry["started_at"],
        "paused_at": entry["paused_at"],
        "server_time": iso(now),
    }


# --- event payloads -----------------------------------------------------------------------------------------


def room_fields(
    room_id: uuid.UUID,
    *,
    is_playing: bool,
    track: Track | None,
    started_at: datetime | None,
    paused_at: datetime | None,
    now: datetime,
) -> dict[str, Any]:
    """The fields every playback event carries."""
    return {
        "room_id": str(room_id),
        "is_playing": is_playing,
        "current_track": brief(track),
        "playback_started_at": iso(started_at),
        "playback_paused_at": iso(paused_at),
        "server_time": iso(now),
        "timestamp": iso(now),
    }


def started_payload(
    room_id: uuid.UUID,
    track: Track,
    started_at: datetime,
    *,
    now: datetime,
    auto_started: bool,
    previous_track: Track | None,
    reason: StartReason,
) -> dict[str, Any]:
    return {
        **room_fields(room_id, is_playing=True, track=track, started_at=started_at, paused_at=None, now=now),
        "track": brief(track),
        "started_at": iso(started_at),
        "position": 0,
        "current_position": 0,
        "auto_started": auto_started,
        "previous_track": brief(previous_track),
        "reason": reason.value,
    }


def paused_payload(
    room_id: uuid.UUID, state: PlaybackState, track: Track, position: float | None, *, now: datetime
) -> dict[str, Any]:
    return {
        **room_fields(
            room_id, is_playing=False, track=track, started_at=state.started_at, paused_at=state.paused_at, now=now
        ),
        "track": brief(track),
        "paused_at": iso(state.paused_at),
        "position": position,
        "current_position": position,
    }


def resumed_payload(
    room_id: uuid.UUID, track: Track, resumed_at: datetime, position: float | None, *, now: datetime
) -> dict[str, Any]:
    # playback_started_at is the resume instant on purpose (see the module docstring), not the virtual start.
    return {
        **room_fields(room_id, is_playing=True, track=track, started_at=resumed_at, paused_at=None, now=now),
        "track": brief(track),
        "resumed_at": iso(resumed_at),
        "position": position,
        "current_position": position,
    }


def stopped_payload(
    room_id: uuid.UUID, previous_track: Track | None, reason: StopReason, stopped_at: datetime, *, now: datetime
) -> dict[str, Any]:
    return {
        **room_fields(room_id, is_playing=False, track=None, started_at=None, paused_at=None, now=now),
        "reason": reason.value,
        "previous_track": brief(previous_track),
        "stopped_at": iso(stopped_at),
        "position": None,
        "current_position": None,
    }


def sought_payload(
    room_id: uuid.UUID, state: PlaybackState, track: Track, position: float, sought_at: datetime, *, now: datetime
) -> dict[str, Any]:
    return {
        **room_fields(
            room_id,
            is_playing=state.is_playing,
            track=track,
            started_at=state.started_at,
            paused_at=state.paused_at,
            now=now,
        ),
        "track": brief(track),
        "seeked_at": iso(sought_at),
        "position": position,
        "current_position": position,
    }


def skipped_payload(
    room_id: uuid.UUID, skipped: Track, next_track: Track | None, started_at: datetime | None, *, now: datetime
) -> dict[str, Any]:
    return {
        **room_fields(
            room_id,
            is_playing=next_track is not None,
            track=next_track,
            started_at=started_at,
            paused_at=None,
            now=now,
        ),
        "skipped_track": brief(skipped),
        "previous_track": brief(skipped),
        "next_track": brief(next_track),
        "new_track": brief(next_track),
        "started_at": iso(started_at),
        "position": 0,
        "current_position": 0,
    }


# --- the OpenAPI document (shapes of the builders above; documentation only) -----------------------------------

ServerTime = Annotated[Timestamp, Field(description="The server's clock when it answered (for clock sync).")]
Position = Annotated[float, Field(description="Seconds into the track.")]


@closed
class PlaybackStarted(TypedDict):
    track_id: Uuid
    started_at: Timestamp
    server_time: ServerTime


@closed
class PlaybackPaused(TypedDict):
    track_id: Uuid
    paused_at: Timestamp
    position: Position | None
    server_time: ServerTime


@closed
class PlaybackResumed(TypedDict):
    track_id: Uuid
    resumed_at: Timestamp
    position: Position | None
    server_time: ServerTime


@closed
class TrackSkipped(TypedDict):
    skipped_track_id: Uuid
    next_track_id: Annotated[Uuid | None, Field(description="Null when the queue is empty (playback stops).")]
    server_time: ServerTime


@closed
class PlaybackStopped(TypedDict):
    server_time: ServerTime


@closed
class PlaybackSeeked(TypedDict):
    track_id: Uuid
    position: Position
    seeked_at: Timestamp
    server_time: ServerTime
    is_playing: bool


@closed
class StatusTrack(TypedDict):
    """The current track, as the playback status shows it (Laravel's key set)."""

    id: Uuid
    filename: str
    original_name: str
    duration_seconds: int
    file_path: str


@closed
class PlaybackStatus(TypedDict):
    is_playing: bool
    current_track: StatusTrack | None
    position: Position | None
    started_at: Timestamp | None
    paused_at: Timestamp | None
    server_time: ServerTime


@closed
class PlaybackStartedResponse(TypedDict):
    """The track plays from its start (envelope A)."""

    success: Literal[True]
    message: Message
    data: PlaybackStarted


@closed
class PlaybackPausedResponse(TypedDict):
    """Paused (envelope A)."""

    success: Literal[True]
    message: Message
    data: PlaybackPaused


@closed
class PlaybackResumedResponse(TypedDict):
    """Resumed (envelope A)."""

    success: Literal[True]
    message: Message
    data: PlaybackResumed


@closed
class TrackSkippedResponse(TypedDict):
    """Skipped to the next track of the queue, if any (envelope A)."""

    success: Literal[True]
    message: Message
    data: TrackSkipped


@closed
class PlaybackStoppedResponse(TypedDict):
    """Stopped (envelope A)."""

    success: Literal[True]
    message: Message
    data: PlaybackStopped


@closed
class PlaybackSeekedResponse(TypedDict):
    """Moved within the current track (envelope A)."""

    success: Literal[True]
    message: Message
    data: PlaybackSeeked


@closed
class PlaybackStatusResponse(TypedDict):
    """What plays in the room (envelope A)."""

    success: Literal[True]
    message: Message
    data: PlaybackStatus


@open_ended
class SeekRequest(TypedDict):
    """Where to move the current track to. Unknown fields are ignored."""

    position: Annotated[
        float | Annotated[str, Field(pattern=r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")],
        Field(description="Seconds from the start: a number, or a numeric string (PHP's is_numeric)."),
    ]


NOT_PLAYBACK_ADMIN: Responses = {403: error("Only the room's administrator controls playback (envelope A).")}
TRACK_NOT_IN_ROOM: Responses = {404: error("The track does not belong to this room (envelope A).")}
CONCURRENT_CHANGE: Responses = {409: error("Playback changed concurrently; retry (envelope A).")}
