"""Spotik's data for a run, made through its REST API: users, rooms of which every user is a member, and a latency
room holding one queued (idle) track."""

from __future__ import annotations

import asyncio
import io
import time
import wave
from dataclasses import dataclass
from typing import Any

import httpx2

PASSWORD = "bench-Passw0rd!"  # noqa: S105 - throwaway users of a throwaway database


def wav_bytes(seconds: float = 2.0, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(1)
        out.setframerate(rate)
        out.writeframes(bytes([128]) * int(seconds * rate))
    return buffer.getvalue()


@dataclass
class SpotikFixture:
    tokens: list[str]
    rooms: list[str]  # memory rooms
    latency_room: str
    track: str
    setup_s: float = 0.0
    rest_joins: int = 0


def expect(response: httpx2.Response, *statuses: int) -> dict[str, Any]:
    if response.status_code not in statuses:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path} → {response.status_code}: {response.text[:300]}"
        )
    body: dict[str, Any] = response.json()
    return body


async def register_users(client: httpx2.AsyncClient, gate: asyncio.Semaphore, names: list[str]) -> list[str]:
    """Registers one user per name (``<name>@bench.example.com``), ``gate`` bounding the requests in flight; their
    tokens, in order."""

    async def register(name: str) -> str:
        payload = {
            "username": name,
            "email": f"{name}@bench.example.com",
            "password": PASSWORD,
            "password_confirmation": PASSWORD,
        }
        async with gate:
            body = expect(await client.post("/api/auth/register", json=payload), 200, 201)
        return str(body["data"]["token"])

    return list(await asyncio.gather(*(register(name) for name in names)))


async def spotik_setup(base_url: str, *, users: int, rooms: int, tag: str, concurrency: int = 16) -> SpotikFixture:
    """Users, rooms of which every user is a member, and a latency room holding one queued (idle) track."""
    started = time.monotonic()
    gate = asyncio.Semaphore(concurrency)
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx2.AsyncClient(base_url=base_url, timeout=60, limits=limits, trust_env=False) as client:
        tokens = await register_users(client, gate, [f"b{tag}u{index}" for index in range(users)])
        admin = {"Authorization": f"Bearer {tokens[0]}"}

        async def create_room(name: str) -> str:
            async with gate:
                body = expect(await client.post("/api/rooms", json={"name": name}, headers=admin), 200, 201)
            data = body["data"]
            return str((data.get("room") or data)["id"])

        room_ids = list(await asyncio.gather(*(create_room(f"bench {tag} {r}") for r in range(rooms))))
        latency_room = await create_room(f"bench {tag} latency")

        async def join(room_id: str, token: str) -> None:
            async with gate:
                expect(
                    await client.post(f"/api/rooms/{room_id}/join", headers={"Authorization": f"Bearer {token}"}),
                    200,
                    201,
                )

        joins = [(room_id, token) for room_id in [*room_ids, latency_room] for token in tokens[1:]]
        await asyncio.gather(*(join(room_id, token) for room_id, token in joins))
        files = {"audio_file": ("bench.wav", wav_bytes(), "audio/wav")}
        body = expect(await client.post(f"/api/rooms/{latency_room}/tracks", files=files, headers=admin), 200, 201)
        track = str((body.get("track") or body.get("data", {}).get("track") or body["data"])["id"])
        # The upload starts playback in an idle room; stop it so that no playback event crosses the measurements.
        expect(await client.post(f"/api/rooms/{latency_room}/playback/stop", headers=admin), 200)
    return SpotikFixture(tokens, room_ids, latency_room, track, round(time.monotonic() - started, 1), len(joins))
