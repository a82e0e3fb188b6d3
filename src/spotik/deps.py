"""Dependency aliases: the way handlers reach app state, a database session and the authenticated user."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection

from spotik.auth.models import User
from spotik.auth.service import authenticate
from spotik.auth.tokens import Claims
from spotik.errors import NotFound, Unauthorized
from spotik.rooms.models import Room
from spotik.rooms.repository import get_room
from spotik.state import AppState


def app_state(connection: HTTPConnection) -> AppState:
    state: AppState = connection.state.spotik
    return state


StateDep = Annotated[AppState, Depends(app_state)]


async def db_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    async with state.sessionmaker() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(db_session)]


def token_from(connection: HTTPConnection) -> str | None:
    """``Authorization: Bearer``, else ``?token=`` (audio elements and WebSockets cannot send headers)."""
    header = connection.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return connection.query_params.get("token") or None


BearerToken = Annotated[str | None, Depends(token_from)]


async def current_claims_and_user(token: BearerToken, state: StateDep, session: SessionDep) -> tuple[Claims, User]:
    if token is None:
        raise Unauthorized("Token not provided", error="Token absent")
    return await authenticate(session, state.tokens, token)


async def current_user(auth: Annotated[tuple[Claims, User], Depends(current_claims_and_user)]) -> User:
    return auth[1]


CurrentUser = Annotated[User, Depends(current_user)]


def parse_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


async def room_from_path(room: str, session: SessionDep) -> Room:
    """``{room}`` route binding: an unknown or malformed id is a 404 (never a 422 or a 500)."""
    room_id = parse_uuid(room)
    found = await get_room(session, room_id) if room_id else None
    if found is None:
        raise NotFound("Room not found", error="Room not found")
    return found


RoomDep = Annotated[Room, Depends(room_from_path)]
