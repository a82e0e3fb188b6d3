"""How the real-time bench reaches each app under test: the frames it waits for, the sockets' URLs and join
messages (``Target``), the request that makes the server broadcast a round's frame (Spotik: a vote; the baseline:
``POST /broadcast``), and what Spotik's memory monitor reports (live heap, garbage collections)."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx2

from spotikbench.fixtures import SpotikFixture, expect
from spotikbench.servers import ServerProcess

# Frames the bench looks for (substrings of the server's compact JSON).
SPOTIK_HELLO = '"type":"connection_established"'
SPOTIK_JOINED = '"type":"room_joined"'
BASELINE_JOIN = '{"type":"join_room","data":{"room_id":"bench"}}'
BASELINE_JOINED = '"type":"join_room"'  # the echo
VOTE_NEEDLES = ['"type":"track_voted"', '"vote_added":true']
UNVOTE_NEEDLES = ['"type":"track_unvoted"']


@dataclass
class Target:
    """How to reach one app: the frame that greets a socket, the one that answers its join, and the sockets' URLs
    and join messages (socket numbers decide user and room)."""

    name: str
    hello: str | None
    joined: str
    connect_items: Callable[[ServerProcess, int, int], list[tuple[str, str]]]  # (server, first, count)
    heap: Callable[[ServerProcess], Awaitable[dict[str, Any]]] | None = None  # the server's live-memory figures


Trigger = Callable[[int], Awaitable[tuple[float, int, float]]]  # round → (t0, HTTP status, response ms)
Needles = Callable[[int], tuple[str, list[str]]]  # round → (kind of round, substrings of its frame)
MakeTrigger = Callable[[], tuple[Trigger, Needles, Callable[[], Awaitable[None]]]]


GcPauses = Callable[[], Awaitable[list[dict[str, Any]]]]


def spotik_target(fixture: SpotikFixture, room_size: int, memory: bool) -> Target:
    def items(server: ServerProcess, first: int, count: int) -> list[tuple[str, str]]:
        out = []
        for index in range(first, first + count):
            token = fixture.tokens[index % len(fixture.tokens)]
            room = fixture.rooms[index // room_size] if memory else fixture.latency_room
            out.append((f"{server.ws_url}?token={token}", json.dumps({"type": "join_room", "data": {"room_id": room}})))
        return out

    async def heap(server: ServerProcess) -> dict[str, Any]:
        figures: dict[str, Any] = (await spotik_monitor(server, fixture))["heap"]
        return figures

    return Target("spotik", SPOTIK_HELLO, SPOTIK_JOINED, items, heap)


async def spotik_monitor(server: ServerProcess, fixture: SpotikFixture) -> dict[str, Any]:
    """The server's memory monitor status, from the dashboard."""
    headers = {"Authorization": f"Bearer {fixture.tokens[0]}"}
    async with httpx2.AsyncClient(base_url=server.base_url, headers=headers, timeout=30, trust_env=False) as c:
        body = expect(await c.get("/api/performance/dashboard"), 200)
    monitor: dict[str, Any] = body["data"]["memory"]["monitor"]
    return monitor


def baseline_target(name: str) -> Target:
    def items(server: ServerProcess, first: int, count: int) -> list[tuple[str, str]]:
        return [(server.ws_url, BASELINE_JOIN)] * count

    return Target(name, None, BASELINE_JOINED, items)


def spotik_gc_pauses(server: ServerProcess, fixture: SpotikFixture) -> GcPauses:
    """The server's garbage collections so far, by generation (count, total ms): the memory monitor times every
    collection, the interpreter's automatic ones included, so a collector pause inside the rounds shows here."""

    async def fetch() -> list[dict[str, Any]]:
        pauses: list[dict[str, Any]] = (await spotik_monitor(server, fixture))["gc_pauses"]
        return pauses

    return fetch


def spotik_vote_trigger(server: ServerProcess, fixture: SpotikFixture) -> MakeTrigger:
    """Vote, then unvote, alternately (the room's admin, user 0): ``POST`` publishes ``track_voted``, ``DELETE``
    publishes ``track_voted`` then ``track_unvoted`` (the latter is the round's frame)."""

    def make() -> tuple[Trigger, Needles, Callable[[], Awaitable[None]]]:
        client = httpx2.AsyncClient(
            base_url=server.base_url,
            headers={"Authorization": f"Bearer {fixture.tokens[0]}"},
            timeout=30,
            trust_env=False,
        )
        path = f"/api/rooms/{fixture.latency_room}/tracks/{fixture.track}/vote"

        async def trigger(index: int) -> tuple[float, int, float]:
            method = "POST" if index % 2 == 0 else "DELETE"
            t0 = time.monotonic()
            response = await client.request(method, path)
            return t0, response.status_code, (time.monotonic() - t0) * 1000

        def needles(index: int) -> tuple[str, list[str]]:
            return ("vote", VOTE_NEEDLES) if index % 2 == 0 else ("unvote", UNVOTE_NEEDLES)

        return trigger, needles, client.aclose

    return make


def baseline_trigger(server: ServerProcess, frame_bytes: Callable[[], int], serial: list[int]) -> MakeTrigger:
    def make() -> tuple[Trigger, Needles, Callable[[], Awaitable[None]]]:
        client = httpx2.AsyncClient(base_url=server.base_url, timeout=30, trust_env=False)
        base = serial[0]
        size = frame_bytes()

        async def trigger(index: int) -> tuple[float, int, float]:
            serial[0] = max(serial[0], base + index + 1)
            t0 = time.monotonic()
            response = await client.post("/broadcast", params={"seq": base + index, "size": size})
            return t0, response.status_code, (time.monotonic() - t0) * 1000

        def needles(index: int) -> tuple[str, list[str]]:
            return "broadcast", [f'"seq":{base + index},']

        return trigger, needles, client.aclose

    return make
