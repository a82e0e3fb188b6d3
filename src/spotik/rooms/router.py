from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from sqlalchemy.ext.asyncio import AsyncSession

from spotik.auth.models import User
from spotik.deps import CurrentUser, RoomDep, RoomRefDep, SessionDep, StateDep
from spotik.errors import JSONResponse
from spotik.http.input import read_input
from spotik.http.openapi import (
    BAD_INPUT,
    INVALID_A,
    ROOM_NOT_FOUND,
    UNAUTHENTICATED,
    Done,
    error,
    request_body,
    responses,
    returns,
)
from spotik.http.responses import Answer, ok
from spotik.reads import ROOMS_TAG, user_tag, viewer_tags
from spotik.rooms import service
from spotik.rooms.schemas import (
    NOT_ADMINISTRATOR,
    ParticipantListResponse,
    RoomCreateRequest,
    RoomDetailResponse,
    RoomJoinedResponse,
    RoomListResponse,
    RoomResponse,
    RoomUpdateRequest,
    durations_change_at,
)
from spotik.rooms.service import RoomRef

router = APIRouter(prefix="/api/rooms", tags=["rooms"])


async def rooms_answer(state: StateDep, session: AsyncSession, user: User) -> Answer:
    """``GET /api/rooms`` (also served by ``spotik.http.hot``): kept until any room changes or a participant's
    ``duration_in_room`` turns."""
    now = datetime.now(UTC)
    rooms = await service.list_rooms(session, state.reads, state.settings, viewer=user)
    tags = (ROOMS_TAG, user_tag(user.id))
    return Answer(ok("Rooms retrieved successfully", rooms), tags, durations_change_at(rooms, now))


@router.get("", summary="Every room", responses=responses(returns(RoomListResponse), UNAUTHENTICATED))
async def list_rooms(user: CurrentUser, state: StateDep, session: SessionDep) -> JSONResponse:
    return (await rooms_answer(state, session, user)).response


@router.post(
    "",
    status_code=201,
    summary="Create a room (the creator administers it and joins it)",
    responses=responses(returns(RoomResponse, 201), BAD_INPUT, UNAUTHENTICATED, INVALID_A),
    openapi_extra=request_body(RoomCreateRequest),
)
async def create_room(request: Request, user: CurrentUser, state: StateDep, session: SessionDep) -> JSONResponse:
    room = await service.create_room(session, state.reads, state.settings, creator=user, data=await read_input(request))
    return ok("Room created successfully", room, status_code=201)


@router.get(
    "/{room}",
    summary="A room with its queue",
    responses=responses(returns(RoomDetailResponse), UNAUTHENTICATED, ROOM_NOT_FOUND),
)
async def show_room(room: RoomRefDep, user: CurrentUser, state: StateDep, session: SessionDep) -> JSONResponse:
    return (await room_answer(state, session, user, room)).response


async def room_answer(state: StateDep, session: AsyncSession, user: User, room: RoomRef) -> Answer:
    """``GET /api/rooms/{room}`` (also served by ``spotik.http.hot``): kept until the room, its queue, the viewer's
    votes or the viewer change, or a participant's ``duration_in_room`` turns."""
    now = datetime.now(UTC)
    payload = await service.room_detail(session, state.reads, state.settings, room.id, viewer=user)
    response = ok("Room retrieved successfully", payload)
    return Answer(response, viewer_tags(room.id, user.id), durations_change_at([payload], now))


@router.put(
    "/{room}",
    summary="Change a room's settings (its administrator)",
    responses=responses(
        returns(RoomResponse), BAD_INPUT, UNAUTHENTICATED, NOT_ADMINISTRATOR, ROOM_NOT_FOUND, INVALID_A
    ),
    openapi_extra=request_body(RoomUpdateRequest, required=False),
)
async def update_room(
    request: Request, room: RoomDep, user: CurrentUser, state: StateDep, session: SessionDep
) -> JSONResponse:
    data = await read_input(request)
    payload = await service.update_room(session, state.settings, state.events, room=room, user=user, data=data)
    return ok("Room updated successfully", payload)


@router.delete(
    "/{room}",
    summary="Delete a room with its tracks (its administrator)",
    responses=responses(returns(Done), UNAUTHENTICATED, NOT_ADMINISTRATOR, ROOM_NOT_FOUND),
)
async def delete_room(room: RoomDep, user: CurrentUser, state: StateDep, session: SessionDep) -> JSONResponse:
    await service.delete_room(session, state.settings, state.events, room=room, user=user)
    return ok("Room deleted successfully")


@router.post(
    "/{room}/join",
    summary="Join a room (idempotent)",
    responses=responses(returns(RoomJoinedResponse), UNAUTHENTICATED, ROOM_NOT_FOUND),
)
async def join_room(room: RoomDep, user: CurrentUser, state: StateDep, session: SessionDep) -> JSONResponse:
    joined, payload = await service.join_room(session, state.settings, state.events, room=room, user=user)
    return ok("Successfully joined the room" if joined else "You are already in this room", payload)


@router.post(
    "/{room}/leave",
    summary="Leave a room",
    responses=responses(
        returns(Done),
        UNAUTHENTICATED,
        {403: error("The administrator cannot leave: delete the room instead (envelope A).")},
        ROOM_NOT_FOUND,
        {404: error("The user is not a participant (envelope A).")},
    ),
)
async def leave_room(room: RoomDep, user: CurrentUser, state: StateDep, session: SessionDep) -> JSONResponse:
    await service.leave_room(session, state.events, room=room, user=user)
    return ok("Successfully left the room")


@router.get(
    "/{room}/participants",
    summary="A room's participants",
    responses=responses(returns(ParticipantListResponse), UNAUTHENTICATED, ROOM_NOT_FOUND),
)
async def list_participants(room: RoomDep, user: CurrentUser, session: SessionDep) -> JSONResponse:
    return ok("Participants retrieved successfully", await service.list_participants(session, room=room))
