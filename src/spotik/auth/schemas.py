"""Response shapes of the auth endpoints (Laravel's UserResource and auth payloads)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field
from typing_extensions import TypedDict

from spotik.auth.models import User
from spotik.http.openapi import Message, Timestamp, Uuid, closed, open_ended
from spotik.timefmt import iso


def user_brief(user: User) -> dict[str, Any]:
    return {"id": str(user.id), "username": user.username, "email": user.email, "created_at": iso(user.created_at)}


def user_full(user: User) -> dict[str, Any]:
    return {**user_brief(user), "updated_at": iso(user.updated_at)}


def token_payload(token: str, ttl_seconds: int) -> dict[str, Any]:
    return {"token": token, "token_type": "bearer", "expires_in": ttl_seconds}


# --- the OpenAPI document (shapes of the builders above; documentation only) -----------------------------------


@closed
class UserSummary(TypedDict):
    """A user as registration and login return it (``user_brief``)."""

    id: Uuid
    username: str
    email: str
    created_at: Timestamp | None


@closed
class UserResource(TypedDict):
    """A user (Laravel's UserResource, ``user_full``)."""

    id: Uuid
    username: str
    email: str
    created_at: Timestamp | None
    updated_at: Timestamp | None


@closed
class TokenData(TypedDict):
    """A new access token."""

    token: Annotated[str, Field(description="A JWT for `Authorization: Bearer`.")]
    token_type: Literal["bearer"]
    expires_in: Annotated[int, Field(description="Seconds until the token expires.")]


@closed
class AuthData(TypedDict):
    """The user and their new token."""

    user: UserSummary
    token: str
    token_type: Literal["bearer"]
    expires_in: int


@closed
class AuthResponse(TypedDict):
    """Registered or logged in (envelope A)."""

    success: Literal[True]
    message: Message
    data: AuthData


@closed
class TokenResponse(TypedDict):
    """A refreshed token (envelope A)."""

    success: Literal[True]
    message: Message
    data: TokenData


@closed
class CurrentUserData(TypedDict):
    user: UserResource


@closed
class CurrentUserResponse(TypedDict):
    """The authenticated user (envelope A)."""

    success: Literal[True]
    message: Message
    data: CurrentUserData


@open_ended
class RegisterRequest(TypedDict):
    """A new account. Unknown fields are ignored."""

    username: Annotated[str, Field(max_length=50)]
    email: Annotated[str, Field(max_length=255, json_schema_extra={"format": "email"})]
    password: Annotated[str, Field(min_length=8, description="8 characters or more, at most 72 bytes in UTF-8.")]
    password_confirmation: Annotated[str, Field(description="The same password again.")]


@open_ended
class LoginRequest(TypedDict):
    """Credentials. Unknown fields are ignored."""

    email: Annotated[str, Field(json_schema_extra={"format": "email"})]
    password: str
