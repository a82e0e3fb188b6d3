"""Playback endpoints (docs/api.md#playback), envelope A. ``playback_control`` over the WebSocket runs the same
``service.control``.

Order of checks, as Laravel's middleware then controller run them: token (401), room binding (404), role (403),
then the input (422), the track (404) and the state preconditions (400). The role is checked by a dependency too,
so that it comes before the body is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from spotik.db.base import utcnow
from spotik.deps import CurrentUser, RoomDep, SessionDep, StateDep
from spotik.errors import JSONResponse
from spotik.http.input import read_input
from spotik.http.responses import ok
from spotik.playback import service
from spotik.playback.service import Action
from spotik.rooms.models import Room

router = APIRouter(prefix="/api/rooms/{room}", tags=["playback"])


async def administered_room(user: CurrentUser, room: RoomDep) -> Room:
    service.require_administrator(user, room)
    return room


AdminRoom = Annotated[Room, Depends(administered_room)]


async def _control(
    state: StateDep, session: SessionDep, room: Room, user: CurrentUser, action: Action, data: Mapping[str, Any]
) -> JSONResponse:
    outcome = await service.control(session, state.events, room=room, user=user, action=action, data=data)
    return ok(outcome.message, outcome.data(utcnow()))


@router.post("/tracks/{track}/play")
async def play_track(
    track: str, room: AdminRoom, user: CurrentUser, state: StateDep, session: SessionDep
) -> JSONResponse:
    return await _control(state, session, room, user, Action.PLAY, {"track_id": track})


@router.post("/playback/pause")
async def pause_playback(room: AdminRoom, user: CurrentUser, state: StateDep, session: SessionDep) -> JSONResponse:
    return await _control(state, session, room, user, Action.PAUSE, {})


@router.post("/playback/resume")
async def resume_playback(room: AdminRoom, user: CurrentUser, state: StateDep, session: SessionDep) -> JSONResponse:
    return await _control(state, session, room, user, Action.RESUME, {})


@router.post("/playback/skip")
async def skip_track(room: AdminRoom, user: CurrentUser, state: StateDep, session: SessionDep) -> JSONResponse:
    return await _control(state, session, room, user, Action.SKIP, {})


@router.post("/playback/stop")
async def stop_playback(room: AdminRoom, user: CurrentUser, state: StateDep, session: SessionDep) -> JSONResponse:
    return await _control(state, session, room, user, Action.STOP, {})


@router.post("/playback/seek")
async def seek_playback(
    request: Request, room: AdminRoom, user: CurrentUser, state: StateDep, session: SessionDep
) -> JSONResponse:
    return await _control(state, session, room, user, Action.SEEK, await read_input(request))


@router.get("/playback/status")
async def playback_status(user: CurrentUser, room: RoomDep, session: SessionDep) -> JSONResponse:
    await service.require_viewer(session, user, room)
    status = await service.status(session, room_id=room.id)
    return ok(status.message, status.data())
