"""Real clients for the fault scenarios: an HTTP API client that records every answer, and WebSocket listeners.

Everything a client was told succeeded (a 2xx) is kept in :class:`Acknowledged`, which the consistency check
(tests/faults/consistency.py) compares with the database and the storage afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.helpers import Account
from tests.integration.tracks_helpers import multipart


@dataclass
class Acknowledged:
    """Writes the server acknowledged with a 2xx: each must be found afterwards."""

    tracks: dict[str, str] = field(default_factory=dict)  # track id -> room id
    votes: set[tuple[str, str]] = field(default_factory=set)  # (track id, user id)
    memberships: set[tuple[str, str]] = field(default_factory=set)  # (room id, user id)

    @property
    def count(self) -> int:
        return len(self.tracks) + len(self.votes) + len(self.memberships)


@dataclass(frozen=True)
class Outcome:
    kind: str
    status: int  # 0: no HTTP answer (connection refused, reset, client timeout)
    started: float  # time.monotonic()
    seconds: float
    retry_after: str | None = None
    error: str | None = None


class Api:
    """An HTTP client of one server that records every request's outcome."""

    def __init__(self, base_url: str, acknowledged: Acknowledged | None = None, timeout: float = 30.0) -> None:
        self.client = httpx2.AsyncClient(
            base_url=base_url, timeout=timeout, limits=httpx2.Limits(max_connections=50, max_keepalive_connections=50)
        )
        self.acknowledged = acknowledged if acknowledged is not None else Acknowledged()
        self.outcomes: list[Outcome] = []

    async def aclose(self) -> None:
        await self.client.aclose()

    async def request(self, kind: str, method: str, path: str, **kwargs: Any) -> httpx2.Response | None:
        started = time.monotonic()
        try:
            response = await self.client.request(method, path, **kwargs)
        except httpx2.HTTPError as exc:
            self.outcomes.append(Outcome(kind, 0, started, time.monotonic() - started, error=type(exc).__name__))
            return None
        self.outcomes.append(
            Outcome(
                kind, response.status_code, started, time.monotonic() - started, response.headers.get("retry-after")
            )
        )
        return response

    async def register(self, name: str) -> Account:
        password = "password-" + name
        body = {
            "username": name,
            "email": f"{name}@example.com",
            "password": password,
            "password_confirmation": password,
        }
        response = await self.request("register", "POST", "/api/auth/register", json=body)
        assert response is not None and response.status_code == 201, response and response.text
        data = response.json()["data"]
        return Account(data["user"]["id"], name, body["email"], password, data["token"])

    async def create_room(self, owner: Account, name: str = "Faults") -> str:
        response = await self.request("room", "POST", "/api/rooms", json={"name": name}, headers=owner.headers)
        assert response is not None and response.status_code == 201, response and response.text
        room_id: str = response.json()["data"]["id"]
        self.acknowledged.memberships.add((room_id, owner.id))
        return room_id

    async def join(self, room_id: str, account: Account) -> httpx2.Response | None:
        response = await self.request("join", "POST", f"/api/rooms/{room_id}/join", headers=account.headers)
        if response is not None and response.status_code == 200:
            self.acknowledged.memberships.add((room_id, account.id))
        return response

    async def upload(
        self, room_id: str, account: Account, audio: bytes, name: str = "tone.wav", cover: bytes | None = None
    ) -> httpx2.Response | None:
        files = [("audio_file", name, audio)] + ([("cover_image", "cover.png", cover)] if cover else [])
        body, content_type = multipart(files=files, boundary=f"faults{uuid.uuid4().hex}")
        response = await self.request(
            "upload",
            "POST",
            f"/api/rooms/{room_id}/tracks",
            content=body,
            headers={**account.headers, "Content-Type": content_type},
        )
        if response is not None and response.status_code == 201:
            self.acknowledged.tracks[response.json()["track"]["id"]] = room_id
        return response

    async def vote(self, room_id: str, track_id: str, account: Account) -> httpx2.Response | None:
        path = f"/api/rooms/{room_id}/tracks/{track_id}/vote"
        response = await self.request("vote", "POST", path, headers=account.headers)
        if response is not None and response.status_code == 200:
            self.acknowledged.votes.add((track_id, account.id))
        return response

    async def queue(self, room_id: str, account: Account) -> httpx2.Response | None:
        return await self.request("read", "GET", f"/api/rooms/{room_id}/tracks", headers=account.headers)

    async def health(self) -> dict[str, Any]:
        response = await self.client.get("/api/health")
        body: dict[str, Any] = response.json()
        return body


def frame(message_type: str, **data: Any) -> str:
    return json.dumps({"type": message_type, "data": data})


class Listener:
    """A WebSocket joined to a room, keeping every message it receives (or only counting them: ``keep=False``)."""

    def __init__(self, ws: ClientConnection, *, keep: bool = True) -> None:
        self.ws = ws
        self.keep = keep
        self.messages: list[dict[str, Any]] = []
        self.received = 0
        self.closed_code: int | None = None
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls, ws_url: str, account: Account, room_id: str | None, *, keep: bool = True, within: float = 20.0
    ) -> Listener:
        ws = await connect(f"{ws_url}?token={account.token}", open_timeout=within, max_size=2**22, ping_interval=None)
        listener = cls(ws, keep=keep)
        hello = json.loads(await asyncio.wait_for(ws.recv(), within))
        assert hello["type"] == "connection_established", hello
        if room_id is not None:
            await ws.send(frame("join_room", room_id=room_id))
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), within))
                if message["type"] == "room_joined":
                    break
                assert message["type"] != "error", message
        listener._task = asyncio.get_running_loop().create_task(listener._read())
        return listener

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.received += 1
                if self.keep:
                    self.messages.append(json.loads(raw))
                    self._arrived.set()
        except ConnectionClosed:
            pass
        finally:
            self.closed_code = self.ws.close_code or 1006
            self._arrived.set()

    @property
    def open_now(self) -> bool:
        return self.closed_code is None

    def of_type(self, *types: str) -> list[dict[str, Any]]:
        return [message for message in self.messages if message["type"] in types]

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], within: float, what: str = "message"
    ) -> dict[str, Any]:
        """The first kept message (old or new) matching ``predicate``, waiting up to ``within`` seconds."""
        deadline = time.monotonic() + within
        seen = 0
        while True:
            for message in self.messages[seen:]:
                if predicate(message):
                    return message
            seen = len(self.messages)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closed_code is not None:
                raise AssertionError(f"no {what} within {within}s (closed: {self.closed_code})")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    async def wait_closed(self, within: float) -> int:
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), within)
        assert self.closed_code is not None, f"still open after {within}s"
        return self.closed_code

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 5)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


async def wait_until(predicate: Callable[[], Any], within: float, what: str, every: float = 0.1) -> None:
    """Poll an (async or plain) condition until it holds, for at most ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within}s")
        await asyncio.sleep(every)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]
