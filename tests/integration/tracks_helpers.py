"""Helpers shared by the tracks, votes and streaming tests: rooms, uploads, storage listings, bulk accounts."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select, update

from spotik.app import create_app
from spotik.auth.models import User
from spotik.db.base import utcnow
from spotik.rooms.models import Room
from spotik.settings import Settings
from spotik.state import AppState
from spotik.tracks.models import Track, TrackVote
from tests.fixtures.audio_files import make_wav
from tests.helpers import Account, bearer, register
from tests.openapi_contract import contract_hooks

ISSUER = "http://testserver/api/auth/login"


async def create_room(client: httpx2.AsyncClient, admin: Account, name: str = "Listening room") -> str:
    """A room administered by ``admin`` (its creator and first participant)."""
    response = await client.post("/api/rooms", headers=admin.headers, json={"name": name})
    assert response.status_code == 201, response.text
    room_id: str = response.json()["data"]["id"]
    return room_id


async def join_room(client: httpx2.AsyncClient, room_id: str, *accounts: Account) -> None:
    for account in accounts:
        response = await client.post(f"/api/rooms/{room_id}/join", headers=account.headers)
        assert response.status_code == 200, response.text


async def make_accounts(state: AppState, count: int, prefix: str) -> list[Account]:
    """Many accounts at once, written directly (registering 50 users through bcrypt would only slow tests)."""
    accounts: list[Account] = []
    async with state.sessionmaker() as session:
        users = [
            User(username=f"{prefix}{i}", email=f"{prefix}{i}@example.com", password_hash="x") for i in range(count)
        ]
        session.add_all(users)
        await session.commit()
        for user in users:
            token = state.tokens.issue(user.id, ISSUER)
            accounts.append(Account(str(user.id), user.username, user.email, "", token))
    return accounts


async def room_with_members(client: httpx2.AsyncClient, *names: str) -> tuple[str, list[Account]]:
    """Registers ``names`` (the first administers the room) and makes them all members."""
    accounts = [await register(client, name) for name in names]
    room_id = await create_room(client, accounts[0])
    await join_room(client, room_id, *accounts[1:])
    return room_id, accounts


def multipart(
    fields: Iterable[tuple[str, str]] = (),
    files: Iterable[tuple[str, str, bytes]] = (),
    boundary: str = "spotikboundary7MA4YWxkTrZu0gW",
) -> tuple[bytes, str]:
    """A multipart/form-data body built by hand (for streamed and malformed bodies)."""
    parts: list[bytes] = []
    for name, value in fields:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value.encode() + b"\r\n"
        )
    for name, filename, data in files:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


async def upload(
    client: httpx2.AsyncClient,
    account: Account | None,
    room_id: str,
    data: bytes,
    filename: str = "song.mp3",
    *,
    fields: dict[str, str] | None = None,
    cover: tuple[str, bytes] | None = None,
) -> httpx2.Response:
    files: dict[str, tuple[str, bytes, str]] = {"audio_file": (filename, data, "audio/mpeg")}
    if cover is not None:
        files["cover_image"] = (cover[0], cover[1], "image/png")
    headers = bearer(account.token) if account else {}
    return await client.post(f"/api/rooms/{room_id}/tracks", headers=headers, files=files, data=fields or {})


async def upload_ok(
    client: httpx2.AsyncClient, account: Account, room_id: str, path: Path, filename: str | None = None
) -> dict[str, Any]:
    response = await upload(client, account, room_id, path.read_bytes(), filename or path.name)
    assert response.status_code == 201, response.text
    track: dict[str, Any] = response.json()["track"]
    return track


def stored_files(root: Path) -> list[str]:
    """Every file under ``root``, hidden and temporary ones included, as sorted relative paths."""
    if not root.exists():
        return []
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if not path.is_dir())


async def count_rows(state: AppState, model: type[Track] | type[TrackVote]) -> int:
    async with state.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def vote_counts(state: AppState, track_id: str) -> tuple[int, int]:
    """``(tracks.vote_score, count(track_votes))`` for one track."""
    async with state.sessionmaker() as session:
        score = await session.scalar(select(Track.vote_score).where(Track.id == uuid.UUID(track_id)))
        votes = await session.scalar(
            select(func.count()).select_from(TrackVote).where(TrackVote.track_id == uuid.UUID(track_id))
        )
        return int(score or 0), int(votes or 0)


async def room_row(state: AppState, room_id: str) -> Room:
    async with state.sessionmaker() as session:
        room = await session.get(Room, uuid.UUID(room_id))
        assert room is not None
        return room


async def set_current_track(state: AppState, room_id: str, track_id: str) -> None:
    async with state.sessionmaker() as session:
        await session.execute(
            update(Room)
            .where(Room.id == uuid.UUID(room_id))
            .values(current_track_id=uuid.UUID(track_id), is_playing=True, playback_started_at=utcnow())
        )
        await session.commit()


@asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[tuple[httpx2.AsyncClient, AppState]]:
    """A second app (own settings) with its client and state, for limits that differ from the default app's."""
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        state: AppState = app.services
        transport = httpx2.ASGITransport(app=manager.app)
        hooks = contract_hooks(app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://testserver", event_hooks=hooks) as client:
            yield client, state


def long_wav(directory: Path) -> Path:
    """A minute of 8 kHz mono audio (~1 MB): long enough that the playback scheduler never ends it mid-test.

    The first upload into a room starts playing at once, and a track whose duration has elapsed is advanced
    (it leaves the queue, and its events would mix with the ones a test captures).
    """
    return make_wav(directory, 60.0, sample_rate=8000, channels=1)


Receive = Callable[[], Awaitable[dict[str, Any]]]


async def raw_post(
    client: httpx2.AsyncClient, path: str, headers: dict[str, str], receive: Receive
) -> list[dict[str, Any]]:
    """POST through the app's ASGI interface with a hand-written ``receive`` (to disconnect or act mid-body).

    Returns the ASGI messages the app sent.
    """
    transport = client._transport
    assert isinstance(transport, httpx2.ASGITransport)
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")] + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    await transport.app(scope, receive, send)
    return sent
