"""Dependency aliases: the way handlers reach the app-scoped objects, a database session and the authenticated user."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection

from spotik.auth.credentials import credentials
from spotik.auth.models import User
from spotik.auth.service import authenticate
from spotik.auth.tokens import Claims
from spotik.errors import Unauthorized
from spotik.rooms.models import Room
from spotik.rooms.service import RoomRef, find_room, find_room_ref
from spotik.state import AppState, SpotikApp


async def app_state(connection: HTTPConnection) -> AppState:
    app = connection.app
    if not isinstance(app, SpotikApp):  # a route mounted in some other app: a programming error
        raise TypeError("Spotik's routes run inside the app built by spotik.app.create_app")
    return app.services


StateDep = Annotated[AppState, Depends(app_state)]


async def db_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    async with state.sessionmaker() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(db_session)]


async def token_from(connection: HTTPConnection) -> str | None:
    return credentials(connection.scope).token


BearerToken = Annotated[str | None, Depends(token_from)]


async def current_claims_and_user(token: BearerToken, state: StateDep, session: SessionDep) -> tuple[Claims, User]:
    if token is None:
        raise Unauthorized("Token not provided", error="Token absent")
    return await authenticate(session, state.tokens, token, state.reads)


async def current_user(auth: Annotated[tuple[Claims, User], Depends(current_claims_and_user)]) -> User:
    return auth[1]


CurrentUser = Annotated[User, Depends(current_user)]


async def room_from_path(room: str, session: SessionDep) -> Room:
    """``{room}`` route binding: an unknown or malformed id is a 404 (never a 422 or a 500)."""
    return await find_room(session, room)


RoomDep = Annotated[Room, Depends(room_from_path)]


async def room_ref_from_path(room: str, session: SessionDep, state: StateDep) -> RoomRef:
    """``{room}`` binding of the cached reads: the same 404s as ``room_from_path``, from the cache when it can."""
    return await find_room_ref(session, state.reads, room)


RoomRefDep = Annotated[RoomRef, Depends(room_ref_from_path)]
