"""Room and participant shapes (Laravel's RoomResource / RoomParticipantResource, with the fixes of
docs/decisions.md#d11).

* A participant's ``id`` is the **user's** id (``participant_id`` is the membership row): the client adds users from
  ``user_joined`` events and removes them by user id, so REST entries must use the same key (docs/decisions.md#b7).
* Rooms carry ``administrator_id`` and ``track_count`` (docs/decisions.md#b8); the room detail also carries the
  requesting ``user`` (docs/decisions.md#b6).
* ``current_playback_position`` is 0 while playing: rooms carry the pause-adjusted virtual start, and the client
  adds a non-zero position to the time elapsed since it, so anything else would be counted twice
  (docs/api.md#position-arithmetic). While paused it is the paused position (P − S): the client keeps it and adds
  the time since ``playback_resumed``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import Field
from typing_extensions import TypedDict

from spotik.auth.models import User
from spotik.auth.schemas import UserResource, user_full
from spotik.http.openapi import Message, Responses, Timestamp, Uuid, closed, error, open_ended
from spotik.rooms.models import Room, RoomParticipant
from spotik.timefmt import iso
from spotik.tracks.models import Track
from spotik.tracks.schemas import TrackResource, track_resource

DURATION_UNITS = ((1440, "day"), (60, "hour"), (1, "minute"))  # minutes each


def duration_in_room(joined_at: datetime | None, now: datetime | None = None) -> str:
    if joined_at is None:
        return "Just joined"
    minutes = int(((now or datetime.now(UTC)) - joined_at).total_seconds() // 60)
    for size, unit in DURATION_UNITS:
        if minutes >= size:
            count = minutes // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return "Just joined"


def paused_position(room: Room) -> float:
    started, paused = room.playback_started_at, room.playback_paused_at
    if room.is_playing or started is None or paused is None:
        return 0
    return round(max((paused - started).total_seconds(), 0.0), 3)


VIEWER_KEYS = ("user", "is_administrator", "is_participant")


def without_viewer(room: dict[str, Any]) -> dict[str, Any]:
    """A room payload fit for a broadcast: nothing that depends on who asked (the client merges it into its own)."""
    return {key: value for key, value in room.items() if key not in VIEWER_KEYS}


def participant_resource(participant: RoomParticipant, *, administrator_id: uuid.UUID) -> dict[str, Any]:
    return {
        "id": str(participant.user_id),
        "participant_id": str(participant.id),
        "user_id": str(participant.user_id),
        "room_id": str(participant.room_id),
        "joined_at": iso(participant.joined_at),
        "duration_in_room": duration_in_room(participant.joined_at),
        "is_administrator": participant.user_id == administrator_id,
        "user": user_full(participant.user),
        "username": participant.user.username,
    }


def room_resource(
    room: Room,
    *,
    viewer_id: uuid.UUID,
    track_count: int,
    cover_url: str | None,
    track_queue: list[Track] | None = None,
    voted_track_ids: frozenset[uuid.UUID] = frozenset(),
    viewer: User | None = None,
) -> dict[str, Any]:
    """``room`` must come with ``administrator``, ``current_track`` (+ uploader, genre) and ``participants.user``."""
    participants = room.participants
    current = room.current_track
    body: dict[str, Any] = {
        "id": str(room.id),
        "name": room.name,
        "administrator_id": str(room.administrator_id),
        "current_track_id": str(room.current_track_id) if room.current_track_id else None,
        "is_playing": room.is_playing,
        "playback_started_at": iso(room.playback_started_at),
        "playback_paused_at": iso(room.playback_paused_at),
        "current_playback_position": paused_position(room),
        "created_at": iso(room.created_at),
        "updated_at": iso(room.updated_at),
        "administrator": user_full(room.administrator),
        "current_track": (
            track_resource(current, has_voted=current.id in voted_track_ids) if current is not None else None
        ),
        "participants": [participant_resource(p, administrator_id=room.administrator_id) for p in participants],
        "participant_count": len(participants),
        "track_count": track_count,
        "cover_url": cover_url,
        "is_administrator": room.administrator_id == viewer_id,
        "is_participant": any(p.user_id == viewer_id for p in participants),
    }
    if track_queue is not None:
        body["track_queue"] = [track_resource(t, has_voted=t.id in voted_track_ids) for t in track_queue]
    if viewer is not None:
        body["user"] = user_full(viewer)
    return body


NOBODY = uuid.UUID(int=0)  # the viewer of a room state shared by every viewer


def for_viewer(state: dict[str, Any], viewer: User, voted: frozenset[str]) -> dict[str, Any]:
    """``state`` (a ``room_resource`` with a queue, built for ``NOBODY``, owned by the caller) as ``viewer`` sees
    it now: what ``room_resource(..., viewer_id=viewer.id, voted_track_ids=..., viewer=viewer)`` would give, with
    the keys in the same order. ``duration_in_room`` depends on the clock, so it is worked out again."""
    current = state["current_track"]
    if current is not None:
        current["has_voted"] = current["id"] in voted
    for track in state["track_queue"]:
        track["has_voted"] = track["id"] in voted
    seen_by(state, viewer.id)
    state["user"] = user_full(viewer)
    return state


def seen_by(room: dict[str, Any], viewer_id: uuid.UUID) -> dict[str, Any]:
    """``room`` (a ``room_resource`` built for ``NOBODY``, owned by the caller) with its viewer's ``is_*`` flags and
    its participants' ``duration_in_room`` as of now."""
    viewer = str(viewer_id)
    participants = room["participants"]
    for participant in participants:
        joined_at = participant["joined_at"] and datetime.fromisoformat(participant["joined_at"])
        participant["duration_in_room"] = duration_in_room(joined_at or None)
    room["is_administrator"] = room["administrator_id"] == viewer
    room["is_participant"] = any(p["user_id"] == viewer for p in participants)
    return room


def durations_change_at(rooms: Iterable[dict[str, Any]], now: datetime) -> datetime | None:
    """The first moment after ``now`` at which a participant's ``duration_in_room`` in ``rooms`` reads otherwise:
    until then, payloads built at or after ``now`` read the same. None when no participant has a join time. Take
    ``now`` before building the payload, so that a duration that turns meanwhile ends the answer at once."""
    soonest: datetime | None = None
    for room in rooms:
        for participant in room["participants"]:
            if participant["joined_at"]:
                joined = datetime.fromisoformat(participant["joined_at"])
                minutes = max(int((now - joined).total_seconds() // 60), 0)
                unit = next((size for size, _ in DURATION_UNITS if minutes >= size), 1)
                turns = joined + timedelta(minutes=(minutes // unit + 1) * unit)
                soonest = turns if soonest is None or turns < soonest else soonest
    return soonest


# --- the OpenAPI document (shapes of the builders above; documentation only) -----------------------------------


@closed
class ParticipantResource(TypedDict):
    """A room's participant (``participant_resource``): ``id`` is the user's id (§9.7)."""

    id: Annotated[Uuid, Field(description="The user's id.")]
    participant_id: Annotated[Uuid, Field(description="The membership's id.")]
    user_id: Uuid
    room_id: Uuid
    joined_at: Timestamp | None
    duration_in_room: Annotated[str, Field(examples=["5 minutes", "Just joined"])]
    is_administrator: bool
    user: UserResource
    username: str


@closed
class RoomSummary(TypedDict):
    """A room in the room list (``room_resource`` without the viewer and the queue)."""

    id: Uuid
    name: str
    administrator_id: Uuid
    current_track_id: Uuid | None
    is_playing: bool
    playback_started_at: Annotated[
        Timestamp | None, Field(description="The pause-adjusted virtual start of the current track.")
    ]
    playback_paused_at: Timestamp | None
    current_playback_position: Annotated[float, Field(description="0 while playing; the paused position otherwise.")]
    created_at: Timestamp | None
    updated_at: Timestamp | None
    administrator: UserResource
    current_track: TrackResource | None
    participants: list[ParticipantResource]
    participant_count: int
    track_count: int
    cover_url: str | None
    is_administrator: Annotated[bool, Field(description="Whether the requesting user administers the room.")]
    is_participant: Annotated[bool, Field(description="Whether the requesting user is a participant.")]


@closed
class RoomResource(RoomSummary):
    """A room as the requesting ``user`` sees it."""

    user: Annotated[UserResource, Field(description="The requesting user.")]


@closed
class RoomDetail(RoomResource):
    """A room with its queue."""

    track_queue: list[TrackResource]


@closed
class Membership(TypedDict):
    """The requesting user's membership of a room."""

    id: Uuid
    room_id: Uuid
    user_id: Uuid
    joined_at: Timestamp


@closed
class RoomJoined(TypedDict):
    room: RoomResource
    participant: Membership


@closed
class RoomListResponse(TypedDict):
    """Every room (envelope A)."""

    success: Literal[True]
    message: Message
    data: list[RoomSummary]


@closed
class RoomResponse(TypedDict):
    """A room (envelope A)."""

    success: Literal[True]
    message: Message
    data: RoomResource


@closed
class RoomDetailResponse(TypedDict):
    """A room with its queue (envelope A)."""

    success: Literal[True]
    message: Message
    data: RoomDetail


@closed
class RoomJoinedResponse(TypedDict):
    """Joined, or already a participant (envelope A; the message tells which)."""

    success: Literal[True]
    message: Message
    data: RoomJoined


@closed
class ParticipantListResponse(TypedDict):
    """A room's participants (envelope A)."""

    success: Literal[True]
    message: Message
    data: list[ParticipantResource]


@open_ended
class RoomCreateRequest(TypedDict):
    """A new room. Unknown fields are ignored."""

    name: Annotated[str, Field(max_length=100)]


@open_ended
class RoomUpdateRequest(TypedDict, total=False):
    """The room's settings to change (only those sent). Unknown fields are ignored."""

    name: Annotated[str, Field(max_length=100, description="May not be empty.")]


NOT_ADMINISTRATOR: Responses = {403: error("Only the room's administrator may do this (envelope A).")}
