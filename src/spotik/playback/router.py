"""Playback endpoints (docs/api.md#playback), envelope A. ``playback_control`` over the WebSocket runs the same
``service.control``.

Order of checks, as Laravel's middleware then controller run them: token (401), room binding (404), role (403),
then the input (422), the track (404) and the state preconditions (400). The role is checked by a dependency too,
so that it comes before the body is read.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from spotik.db.base import utcnow
from spotik.deps import CurrentUser, RoomDep, RoomRefDep, SessionDep, StateDep
from spotik.errors import JSONResponse
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
from spotik.http.responses import Answer, ok
from spotik.playback import service
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
from spotik.playback.service import Action
from spotik.rooms.models import Room
from spotik.rooms.service import RoomRef
from spotik.tracks.service import is_viewer

router = APIRouter(prefix="/api/rooms/{room}", tags=["playback"])

# What any administrator action can answer besides its own errors.
ADMIN_ACTION = responses(UNAUTHENTICATED, ROOM_NOT_FOUND, NOT_PLAYBACK_ADMIN, CONCURRENT_CHANGE)


async def administered_room(user: CurrentUser, room: RoomDep) -> Room:
    service.require_administrator(user, room)
    return room


AdminRoom = Annotated[Room, Depends(administered_room)]


async def _control(
    state: StateDep, session: SessionDep, room: Room, user: CurrentUser, action: Action, data: Mapping[str, Any]
) -> JSONResponse:
    outcome = await service.control(session, state.events, room=room, user=user, action=action, data=data)
    return ok(outcome.message, outcome.data(utcnow()))


@router.post(
    "/tracks/{track}/play",
    summary="Play a track of the room from its start",
    responses=responses(
        returns(PlaybackStartedResponse),
        ADMIN_ACTION,
        TRACK_NOT_IN_ROOM,
    ),
)
async def play_track(
    track: str, room: AdminRoom, user: CurrentUser, state: StateDep, session: SessionDep
) -> JSONResponse:
    return await _control(state, session, room, user, Action.PLAY, {"track_id": track})


@router.post(
    "/playback/pause",
    summary="Pause",
    responses=responses(
        returns(PlaybackPausedResponse),
        {400: error("Nothing is playing (envelope A).")},
        ADMIN_ACTION,
    ),
)
async def pause_playback(room: AdminRoom, user: CurrentUser, state: StateDep, session: SessionDep) -> JSONResponse:
    return await _control(state, session, room, user, Action.PAUSE, {})


@router.post(
    "/playback/resume",
    summary="Resume",
    responses=responses(
        returns(PlaybackResumedResponse),
        {400: error("Nothing is paused (envelope A).")},
        ADMIN_ACTION,
    ),
)
async def resume_playback(room: AdminRoom, user: CurrentUser, state: StateDep, session: SessionDep) -> JSONResponse:
    return await _control(state, session, room, user, Action.RESUME, {})


@router.post(
    "/playback/skip",
    summary="Skip to the next track of the queue",
    responses=responses(
        returns(TrackSkippedResponse),
        {400: error("No current track (envelope A).")},
        ADMIN_ACTION,
    ),
)
async def skip_track(room: AdminRoom, user: CurrentUser, state: StateDep, session: SessionDep) -> JSONResponse:
    return await _control(state, session, room, user, Action.SKIP, {})


@router.post(
    "/playback/stop",
    summary="Stop",
    responses=responses(returns(PlaybackStoppedResponse), ADMIN_ACTION),
)
async def stop_playback(room: AdminRoom, user: CurrentUser, state: StateDep, session: SessionDep) -> JSONResponse:
    return await _control(state, session, room, user, Action.STOP, {})


@router.post(
    "/playback/seek",
    summary="Move within the current track",
    responses=responses(
        returns(PlaybackSeekedResponse),
        BAD_INPUT,
        {400: error("No current track, or a position that is negative or past its end (envelope A).")},
        ADMIN_ACTION,
        INVALID_A,
    ),
    openapi_extra=request_body(SeekRequest),
)
async def seek_playback(
    request: Request, room: AdminRoom, user: CurrentUser, state: StateDep, session: SessionDep
) -> JSONResponse:
    return await _control(state, session, room, user, Action.SEEK, await read_input(request))


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
async def playback_status(user: CurrentUser, room: RoomRefDep, session: SessionDep, state: StateDep) -> JSONResponse:
    return (await status_answer(state, session, user.id, room)).response


async def status_answer(state: StateDep, session: AsyncSession, user_id: uuid.UUID, room: RoomRef) -> Answer:
    """``GET …/playback/status`` (also served by ``spotik.http.hot``, which needs no ``User`` for it): never kept
    (the position and the server time are worked out at each read)."""
    member = await is_viewer(session, state.reads, room.id, user_id)
    service.require_viewer(user_id, room.administrator_id, member=member)
    data = await service.status(session, state.reads, room_id=room.id)
    return Answer(ok("Playback status retrieved successfully", data))
