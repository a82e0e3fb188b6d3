"""Small helpers for talking to the API in tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx2


@dataclass
class Account:
    id: str
    username: str
    email: str
    password: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def register(client: httpx2.AsyncClient, username: str, password: str = "correct horse") -> Account:
    email = f"{username}@example.com"
    response = await client.post(
        "/api/auth/register",
        json={"username": username, "email": email, "password": password, "password_confirmation": password},
    )
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    return Account(data["user"]["id"], username, email, password, data["token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_envelope_a_error(body: dict[str, Any], message: str | None = None) -> None:
    assert body["success"] is False
    assert isinstance(body["message"], str) and body["message"]
    if message is not None:
        assert body["message"] == message
