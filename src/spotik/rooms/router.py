from __future__ import annotations

from fastapi import APIRouter, Request

from spotik.deps import CurrentUser, RoomDep, SessionDep, StateDep
from spotik.errors import JSONResponse
from spotik.http.input import read_input
from spotik.http.responses import ok
from spotik.rooms import service

router = APIRouter(prefix="/api/rooms", tags=["rooms"])


@router.get("")
async def list_rooms(user: CurrentUser, state: StateDep, session: SessionDep) -> JSONResponse:
    rooms = await service.list_rooms(session, state.settings, viewer=user)
    return ok("Rooms retrieved successfully", rooms)


@router.post("", status_code=201)
async def create_room(request: Request, user: CurrentUser, state: StateDep, session: SessionDep) -> JSONResponse:
    room = await service.create_room(session, state.settings, creator=user, data=await read_input(request))
    return ok("Room created successfully", room, status_code=201)


@router.get("/{room}")
async def show_room(room: RoomDep, user: CurrentUser, state: StateDep, session: SessionDep) -> JSONResponse:
    payload = await service.room_payload(session, state.settings, room.id, viewer=user, detail=True)
    return ok("Room retrieved successfully", payload)


@router.put("/{room}")
async def update_room(
    request: Request, room: RoomDep, user: CurrentUser, state: StateDep, session: SessionDep
) -> JSONResponse:
    data = await read_input(request)
    payload = await service.update_room(session, state.settings, state.events, room=room, user=user, data=data)
    return ok("Room updated successfully", payload)


@router.delete("/{room}")
async def delete_room(room: RoomDep, user: CurrentUser, state: StateDep, session: SessionDep) -> JSONResponse:
    await service.delete_room(session, state.settings, state.events, room=room, user=user)
    return ok("Room deleted successfully")


@router.post("/{room}/join")
async def join_room(room: RoomDep, user: CurrentUser, state: StateDep, session: SessionDep) -> JSONResponse:
    joined, payload = await service.join_room(session, state.settings, state.events, room=room, user=user)
    return ok("Successfully joined the room" if joined else "You are already in this room", payload)


@router.post("/{room}/leave")
async def leave_room(room: RoomDep, user: CurrentUser, state: StateDep, session: SessionDep) -> JSONResponse:
    await service.leave_room(session, state.events, room=room, user=user)
    return ok("Successfully left the room")


@router.get("/{room}/participants")
async def list_participants(room: RoomDep, user: CurrentUser, session: SessionDep) -> JSONResponse:
    return ok("Participants retrieved successfully", await service.list_participants(session, room=room))
