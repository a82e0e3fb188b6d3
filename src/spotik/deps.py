"""Dependency aliases: the way handlers reach app state, a database session and the authenticated user."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection

from spotik.auth.models import User
from spotik.auth.service import authenticate
from spotik.auth.tokens import Claims
from spotik.errors import Unauthorized
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
