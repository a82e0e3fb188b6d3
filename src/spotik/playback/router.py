"""Playback endpoints (contract §2.6 L column, plus D1's seek), envelope A.

Order of checks, as Laravel's middleware then controller run them: token (401), room binding (404), role (403),
then the track (404) and the state preconditions (400).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from spotik.db.base import utcnow
from spotik.deps import CurrentUser, RoomDep, SessionDep, StateDep, parse_uuid
from spotik.errors import Forbidden, JSONResponse
from spotik.http.input import read_input
from spotik.http.openapi import (
    BAD_INPUT,
    INVALID_A,
    ROOM_NOT_FOUND,
    UNAUTHENTICATED,
    error,
    request_body,
    responses,
    returns,
)
from spotik.http.responses import ok
from spotik.playback import schemas, service
from spotik.playback.schemas import (
    CONCURRENT_CHANGE,
    NOT_PLAYBACK_ADMIN,
    TRACK_NOT_IN_ROOM,
    PlaybackPausedResponse,
    PlaybackResumedResponse,
    PlaybackSeekedResponse,
    PlaybackStartedResponse,
    PlaybackStatusResponse,
    PlaybackStoppedResponse,
    SeekRequest,
    TrackSkippedResponse,
)
from spotik.rooms.models import Room
from spotik.rooms.repository import is_member
from spotik.validation import Field, label, validate

router = APIRouter(prefix="/api/rooms/{room}", tags=["playback"])

# PHP's is_numeric for strings: optional sign, digits with an optional fraction (or a bare fraction), exponent.
NUMERIC = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


async def playback_admin(user: CurrentUser, room: RoomDep) -> Room:
    if room.administrator_id != user.id:
        raise Forbidden("Only room administrator can control playback", error="Insufficient permissions")
    return room


async def playback_viewer(user: CurrentUser, room: RoomDep, session: SessionDep) -> Room:
    if room.administrator_id != user.id and not await is_member(session, room.id, user.id):
        raise Forbidden("You must be a participant of this room to view playback status", error="Not a participant")
    return room


AdminRoom = Annotated[Room, Depends(playback_admin)]
ViewerRoom = Annotated[Room, Depends(playback_viewer)]


def numeric(name: str, value: Any, _data: Mapping[str, Any]) -> str | None:
    if isinstance(value, bool):
        return f"The {label(name)} field must be a number."
    if isinstance(value, int | float) or (isinstance(value, str) and NUMERIC.fullmatch(value)):
        return None
    return f"The {label(name)} field must be a number."


@router.post(
    "/tracks/{track}/play",
    summary="Play a track of the room from its start",
    responses=responses(
        returns(PlaybackStartedResponse),
        UNAUTHENTICATED,
        ROOM_NOT_FOUND,
        NOT_PLAYBACK_ADMIN,
        TRACK_NOT_IN_ROOM,
        CONCURRENT_CHANGE,
    ),
)
async def play_track(track: str, room: AdminRoom, state: StateDep, session: SessionDep) -> JSONResponse:
    track_id = parse_uuid(track)
    if track_id is None:
        raise service.track_not_in_room()
    started = await service.play(session, state.events, room_id=room.id, track_id=track_id)
    return ok("Playback started successfully", schemas.started_data(started.track, started.started_at, utcnow()))


@router.post(
    "/playback/pause",
    summary="Pause",
    responses=responses(
        returns(PlaybackPausedResponse),
        {400: error("Nothing is playing (envelope A).")},
        UNAUTHENTICATED,
        ROOM_NOT_FOUND,
        NOT_PLAYBACK_ADMIN,
        CONCURRENT_CHANGE,
    ),
)
async def pause_playback(room: AdminRoom, state: StateDep, session: SessionDep) -> JSONResponse:
    paused = await service.pause(session, state.events, room_id=room.id)
    return ok(
        "Playback paused successfully", schemas.paused_data(paused.track, paused.paused_at, paused.position, utcnow())
    )


@router.post(
    "/playback/resume",
    summary="Resume",
    responses=responses(
        returns(PlaybackResumedResponse),
        {400: error("Nothing is paused (envelope A).")},
        UNAUTHENTICATED,
        ROOM_NOT_FOUND,
        NOT_PLAYBACK_ADMIN,
        CONCURRENT_CHANGE,
    ),
)
async def resume_playback(room: AdminRoom, state: StateDep, session: SessionDep) -> JSONResponse:
    resumed = await service.resume(session, state.events, room_id=room.id)
    data = schemas.resumed_data(resumed.track, resumed.resumed_at, resumed.position, utcnow())
    return ok("Playback resumed successfully", data)


@router.post(
    "/playback/skip",
    summary="Skip to the next track of the queue",
    responses=responses(
        returns(TrackSkippedResponse),
        {400: error("No current track (envelope A).")},
        UNAUTHENTICATED,
        ROOM_NOT_FOUND,
        NOT_PLAYBACK_ADMIN,
        CONCURRENT_CHANGE,
    ),
)
async def skip_track(room: AdminRoom, state: StateDep, session: SessionDep) -> JSONResponse:
    skipped = await service.skip(session, state.events, room_id=room.id)
    return ok(
        "Track skipped successfully", schemas.skipped_data(skipped.skipped_track_id, skipped.next_track, utcnow())
    )


@router.post(
    "/playback/stop",
    summary="Stop",
    responses=responses(
        returns(PlaybackStoppedResponse), UNAUTHENTICATED, ROOM_NOT_FOUND, NOT_PLAYBACK_ADMIN, CONCURRENT_CHANGE
    ),
)
async def stop_playback(room: AdminRoom, state: StateDep, session: SessionDep) -> JSONResponse:
    await service.stop(session, state.events, room_id=room.id)
    return ok("Playback stopped successfully", schemas.stopped_data(utcnow()))


@router.post(
    "/playback/seek",
    summary="Move within the current track",
    responses=responses(
        returns(PlaybackSeekedResponse),
        BAD_INPUT,
        {400: error("No current track, or a position that is negative or past its end (envelope A).")},
        UNAUTHENTICATED,
        ROOM_NOT_FOUND,
        NOT_PLAYBACK_ADMIN,
        CONCURRENT_CHANGE,
        INVALID_A,
    ),
    openapi_extra=request_body(SeekRequest),
)
async def seek_playback(request: Request, room: AdminRoom, state: StateDep, session: SessionDep) -> JSONResponse:
    values = validate(await read_input(request), {"position": Field((numeric,))})
    sought = await service.seek(session, state.events, room_id=room.id, position=float(values["position"]))
    data = schemas.sought_data(sought.track, sought.position, sought.sought_at, sought.is_playing, utcnow())
    return ok("Playback seeked successfully", data)


@router.get(
    "/playback/status",
    summary="What plays in the room (its participants)",
    responses=responses(
        returns(PlaybackStatusResponse),
        UNAUTHENTICATED,
        ROOM_NOT_FOUND,
        {403: error("The user is not a participant of the room (envelope A).")},
    ),
)
async def playback_status(room: ViewerRoom, session: SessionDep) -> JSONResponse:
    status = await service.status(session, room_id=room.id)
    data = schemas.status_data(status.state, status.track, status.position, status.now)
    return ok("Playback status retrieved successfully", data)
