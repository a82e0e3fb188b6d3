"""Response shapes of the auth endpoints (Laravel's UserResource and auth payloads)."""

from __future__ import annotations

from typing import Any

from spotik.auth.models import User
from spotik.timefmt import iso


def user_brief(user: User) -> dict[str, Any]:
    return {"id": str(user.id), "username": user.username, "email": user.email, "created_at": iso(user.created_at)}


def user_full(user: User) -> dict[str, Any]:
    return {**user_brief(user), "updated_at": iso(user.updated_at)}


def token_payload(token: str, ttl_seconds: int) -> dict[str, Any]:
    return {"token": token, "token_type": "bearer", "expires_in": ttl_seconds}
