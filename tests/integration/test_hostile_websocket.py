"""Hostile WebSocket input (issue 14) on ``/ws`` (docs/api.md#websocket), with real WebSocket clients, on SQLite and
PostgreSQL: in process (``running_app``), under a real uvicorn (``live_server``) and in the real ``spotik serve``
process.

Every row gets the documented ``error`` code or close code, then "nothing written" (every row of the rooms,
memberships, tracks and votes tables is unchanged, and the socket joined no room) and "the server still serves":
the hostile socket itself (unless it was closed) and another client both get a ``pong``.

Decisions where the docs were silent:

* a message that names a known type but nests more than 32 levels deep is ``invalid_message`` (a ``ping`` whose
  ``client_time`` was nested past 254 levels could not be echoed and answered ``internal_error`` with a logged
  traceback); a value of the wrong type where a name is expected (``action: [1]``) is ``validation_failed`` (it was
  ``internal_error``);
* messages are not rate-limited (docs/api.md#limits-and-back-pressure): 1,000 messages sent at once are all answered
  in order, each socket's messages are handled one at a time and the server reads the next one only then (TCP
  back-pressure), so a flooding socket never delays another socket's ``pong`` by more than a bounded time; a flooder
  that does not read its answers is cut off as a slow consumer within ``WS_SEND_TIMEOUT``;
* duplicate keys: the last one counts (``{"type":"dance","type":"ping"}`` is a ``ping``), as in the REST bodies;
* ``user_id`` (or any other identity) in a payload is ignored: every message acts as the socket's authenticated user.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
from sqlalchemy import select
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from spotik.realtime.protocol import CloseCode
from spotik.rooms.models import Room, RoomParticipant
from spotik.settings import Settings
from spotik.state import AppState
from spotik.tracks.models import Track, TrackVote
from tests.e2e.server import ServerProcess
from tests.helpers import Account, register
from tests.integration.test_websocket import add_track
from tests.integration.test_websocket_support import (
    WAIT,
    LiveServer,
    RunningApp,
    create_room,
    join,
    live_server,
    people,
    receive,
    receive_type,
    running_app,
    send,
    wait_for,
)
from tests.openapi_contract import live_async_contract_hooks

FLOOD = 1_000
OTHER_PONG_WITHIN = (
    1.0  # seconds: another socket's ping answered during a flood (a starved loop would take the flood's)
)


# --- the scene, the database snapshot ---------------------------------------------------------------------------


@dataclass
class Scene:
    admin: Account  # created the room
    member: Account  # joined it over REST
    stranger: Account  # no membership
    room: str
    track: str  # a track of the room, uploaded by the admin


async def make_scene(client: httpx2.AsyncClient, state: AppState) -> Scene:
    admin, member, stranger = await people(client, "admin", "member", "stranger")
    room = await create_room(client, admin)
    await join(client, room, member)
    return Scene(admin, member, stranger, room, await add_track(state, room, admin.id, "song.mp3"))


async def db_state(state: AppState) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables a WebSocket message could change, column by column."""
    tables: dict[str, list[tuple[Any, ...]]] = {}
    async with state.sessionmaker() as session:
        for model in (Room, RoomParticipant, Track, TrackVote):
            columns = list(model.__table__.columns)
            rows = (await session.execute(select(*columns))).all()
            tables[model.__tablename__] = sorted((tuple(row) for row in rows), key=repr)
    return tables


def pong_of(message: dict[str, Any], client_time: Any) -> None:
    assert message["type"] == "pong", message
    assert message["data"]["client_time"] == client_time


async def ping(ws: Any, client_time: int) -> None:
    """A ping answered (in-process client), skipping broadcasts."""
    await ws.send_text(send("ping", client_time=client_time))
    pong_of(await receive_type(ws, "pong"), client_time)


# --- 1. frames and messages, in process ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Hostile:
    id: str
    frame: Callable[[Scene], str | bytes]  # str: a text frame; bytes: a binary frame
    reply: str  # the type of the answer
    error_code: str | None = None
    request_type: str | None = None  # the error's request_type (None: absent)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def message(type_: str, data: str) -> str:
    return '{"type": "' + type_ + '", "data": ' + data + "}"


HOSTILE: list[Hostile] = [
    # room messages before join_room
    Hostile("room-state-before-join", lambda s: send("get_room_state"), "error", "not_in_room", "get_room_state"),
    Hostile("queue-before-join", lambda s: send("get_track_queue"), "error", "not_in_room", "get_track_queue"),
    Hostile("vote-before-join", lambda s: send("vote_track", track_id=s.track), "error", "not_in_room", "vote_track"),
    Hostile(
        "pause-before-join",
        lambda s: send("playback_control", action="pause"),
        "error",
        "not_in_room",
        "playback_control",
    ),
    Hostile(
        "play-before-join",
        lambda s: send("playback_control", action="play", track_id=s.track),
        "error",
        "not_in_room",
        "playback_control",
    ),
    Hostile("leave-before-join", lambda s: send("leave_room"), "room_left"),
    # unknown and malformed types
    Hostile("unknown-type", lambda s: send("dance"), "error", "unknown_message_type", "dance"),
    Hostile(
        "upper-case-type", lambda s: send("JOIN_ROOM", room_id=s.room), "error", "unknown_message_type", "JOIN_ROOM"
    ),
    Hostile("prototype-type", lambda s: send("__proto__"), "error", "unknown_message_type", "__proto__"),
    Hostile("long-type", lambda s: send("x" * 10_000), "error", "unknown_message_type", "x" * 64),
    Hostile("empty-type", lambda s: send(""), "error", "invalid_message"),
    Hostile("numeric-type", lambda s: '{"type": 7}', "error", "invalid_message"),
    Hostile("null-type", lambda s: '{"type": null}', "error", "invalid_message"),
    Hostile("list-type", lambda s: '{"type": ["join_room"]}', "error", "invalid_message"),
    Hostile("no-type", lambda s: '{"data": {}}', "error", "invalid_message"),
    Hostile("duplicate-type-keys-last-wins", lambda s: '{"type": "dance", "type": "ping"}', "pong"),
    # not JSON
    Hostile("not-json", lambda s: "{not json", "error", "invalid_json"),
    Hostile("empty-frame", lambda s: "", "error", "invalid_json"),
    Hostile("nan", lambda s: "NaN", "error", "invalid_json"),
    Hostile("infinity", lambda s: message("ping", '{"client_time": 1e999}'), "error", "invalid_json"),
    Hostile("lone-surrogate-escape", lambda s: message("ping", '{"client_time": "\\ud800"}'), "error", "invalid_json"),
    Hostile("trailing-garbage", lambda s: send("ping") + " trailing", "error", "invalid_json"),
    Hostile("javascript", lambda s: "alert(document.cookie)", "error", "invalid_json"),
    # JSON that is not an object, or whose data is not one
    Hostile("array", lambda s: "[1, 2]", "error", "invalid_message"),
    Hostile("string", lambda s: '"join_room"', "error", "invalid_message"),
    Hostile("number", lambda s: "42", "error", "invalid_message"),
    Hostile("null", lambda s: "null", "error", "invalid_message"),
    Hostile("data-array", lambda s: message("ping", "[1]"), "error", "invalid_message"),
    Hostile("data-string", lambda s: message("join_room", '"room"'), "error", "invalid_message"),
    # nesting
    Hostile("nested-5000-deep", lambda s: nested(5000), "error", "invalid_json"),
    Hostile(
        "ping-nested-300-deep",
        lambda s: message("ping", '{"client_time": ' + nested(300) + "}"),
        "error",
        "invalid_message",
    ),
    Hostile(
        "join-nested-40-deep",
        lambda s: message("join_room", '{"room_id": ' + nested(40) + "}"),
        "error",
        "invalid_message",
    ),
    # values of the wrong type
    Hostile(
        "action-list", lambda s: send("playback_control", action=[1]), "error", "validation_failed", "playback_control"
    ),
    Hostile(
        "action-object",
        lambda s: send("playback_control", action={"x": 1}),
        "error",
        "validation_failed",
        "playback_control",
    ),
    Hostile(
        "action-number", lambda s: send("playback_control", action=3), "error", "validation_failed", "playback_control"
    ),
    Hostile(
        "vote-type-list",
        lambda s: send("vote_track", track_id=s.track, vote_type=["up"]),
        "error",
        "validation_failed",
        "vote_track",
    ),
    Hostile("join-without-room", lambda s: send("join_room"), "error", "missing_room_id", "join_room"),
    Hostile("join-room-list", lambda s: send("join_room", room_id=[s.room]), "error", "room_not_found", "join_room"),
    Hostile(
        "join-room-object", lambda s: send("join_room", room_id={"id": s.room}), "error", "room_not_found", "join_room"
    ),
    Hostile("join-room-number", lambda s: send("join_room", room_id=1.5), "error", "room_not_found", "join_room"),
    Hostile("join-room-true", lambda s: send("join_room", room_id=True), "error", "room_not_found", "join_room"),
    Hostile(
        "join-room-sql", lambda s: send("join_room", room_id="' OR 1=1 --"), "error", "room_not_found", "join_room"
    ),
    Hostile("join-room-60k", lambda s: send("join_room", room_id="x" * 60_000), "error", "room_not_found", "join_room"),
    Hostile(
        "join-room-nul", lambda s: send("join_room", room_id=s.room + "\x00"), "error", "room_not_found", "join_room"
    ),
    Hostile(
        "join-unknown-room",
        lambda s: send("join_room", room_id=str(uuid.uuid4())),
        "error",
        "room_not_found",
        "join_room",
    ),
    # binary frames
    Hostile("binary-not-json", lambda s: b"\x00\x01\x02\x03", "error", "invalid_json"),
    Hostile("binary-invalid-utf8", lambda s: b'{"type": "ping\xff\xfe"}', "error", "invalid_json"),
    Hostile("binary-json-ping", lambda s: send("ping", client_time=5).encode(), "pong"),
    Hostile(
        "binary-json-room-message", lambda s: send("get_room_state").encode(), "error", "not_in_room", "get_room_state"
    ),
]


@pytest.mark.parametrize("row", [pytest.param(r, id=r.id) for r in HOSTILE])
async def test_hostile_messages_get_their_documented_answer(settings: Settings, row: Hostile) -> None:
    async with running_app(settings) as env:
        scene = await make_scene(env.client, env.state)
        before = await db_state(env.state)
        async with env.ws(scene.member.token) as ws, env.ws(scene.admin.token) as other:
            await receive_type(ws, "connection_established")
            await receive_type(other, "connection_established")
            frame = row.frame(scene)
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:
                await ws.send_text(frame)
            answer = await receive(ws)
            assert answer["type"] == row.reply, answer
            if row.error_code is not None:
                data = answer["data"]
                assert data["error_code"] == row.error_code
                assert data.get("request_type") == row.request_type
                assert isinstance(data["message"], str) and 0 < len(data["message"]) < 200
                assert "Traceback" not in data["message"] and "/" not in data["message"]
            # The socket is still open and useful, joined nowhere; another client is served too.
            await ping(ws, 1)
            await ping(other, 2)
            (connection,) = [c for c in env.realtime.registry if c.user_id == scene.member.id]
            assert connection.room_id is None and not connection.closing
        assert await db_state(env.state) == before


# --- 2. identities: join_room without membership, forged user_id ---------------------------------------------------


@asynccontextmanager
async def in_room(env: RunningApp, account: Account, room: str) -> AsyncIterator[Any]:
    async with env.ws(account.token) as ws:
        await receive_type(ws, "connection_established")
        await ws.send_text(send("join_room", room_id=room))
        await receive_type(ws, "room_joined")
        await receive_type(ws, "user_connected_websocket")
        yield ws


async def nothing_broadcast(ws: Any) -> None:
    """Nothing reached ``ws`` before the answer to a ping sent now (the socket's messages keep their order)."""
    await ws.send_text(send("ping", client_time="marker"))
    pong_of(await receive(ws), "marker")


@pytest.mark.parametrize("forged", [None, "admin", "member"])
async def test_join_room_without_membership_is_denied_whatever_the_payload_says(
    settings: Settings, forged: str | None
) -> None:
    async with running_app(settings) as env:
        scene = await make_scene(env.client, env.state)
        async with in_room(env, scene.admin, scene.room) as admin_ws:
            before = await db_state(env.state)
            async with env.ws(scene.stranger.token) as ws:
                await receive_type(ws, "connection_established")
                data: dict[str, Any] = {"room_id": scene.room}
                if forged is not None:
                    account = getattr(scene, forged)
                    data |= {"user_id": account.id, "user": {"id": account.id}, "token": account.token}
                await ws.send_text(send("join_room", **data))
                answer = await receive(ws)
                assert answer["data"]["error_code"] == "access_denied" and answer["data"]["request_type"] == "join_room"
                # Not joined: the room's messages stay closed to it.
                await ws.send_text(send("get_room_state"))
                assert (await receive(ws))["data"]["error_code"] == "not_in_room"
                await ping(ws, 3)
                assert env.realtime.registry.room_size(scene.room) == 1
            # No presence announcement reached the room, no membership was created.
            await nothing_broadcast(admin_ws)
            assert await db_state(env.state) == before


async def test_a_forged_user_id_never_acts_for_another_user(settings: Settings) -> None:
    async with running_app(settings) as env:
        scene = await make_scene(env.client, env.state)
        admin_id = uuid.UUID(scene.admin.id)
        async with in_room(env, scene.admin, scene.room) as admin_ws, in_room(env, scene.member, scene.room) as ws:
            await admin_ws.send_text(send("vote_track", track_id=scene.track))
            await receive_type(admin_ws, "vote_success")
            forged = {"user_id": scene.admin.id, "uploader_id": scene.admin.id, "administrator_id": scene.member.id}

            # The administrator's rights are not borrowed: a member's play is refused as the member's.
            await ws.send_text(send("playback_control", action="play", track_id=scene.track, **forged))
            refused = await receive_type(ws, "error")
            assert (refused["data"]["error_code"], refused["data"]["status"]) == ("forbidden", 403)
            async with env.state.sessionmaker() as session:
                room = await session.get(Room, uuid.UUID(scene.room))
                assert room is not None and room.current_track_id is None and not room.is_playing

            # Removing "the administrator's" vote removes the member's (there is none), not the administrator's.
            await ws.send_text(send("vote_track", track_id=scene.track, vote_type="remove", **forged))
            kept = await receive_type(ws, "vote_success")
            assert kept["data"]["message"] == "No vote to remove" and kept["data"]["vote_score"] == 1

            # A vote is the member's own.
            await ws.send_text(send("vote_track", track_id=scene.track, **forged))
            voted = await receive_type(ws, "vote_success")
            assert voted["data"]["vote_score"] == 2
            async with env.state.sessionmaker() as session:
                voters = set(await session.scalars(select(TrackVote.user_id)))
            assert voters == {admin_id, uuid.UUID(scene.member.id)}
            event = await receive_type(admin_ws, "track_voted")
            assert event["data"]["voter"]["id"] == scene.member.id

            # The pong, the room state: the socket's own user throughout.
            await ws.send_text(send("get_room_state", **forged))
            state = await receive_type(ws, "room_state")
            assert state["data"]["room"]["is_administrator"] is False


# --- 3. under a real uvicorn: invalid UTF-8, oversized frames, floods ---------------------------------------------


async def recv_json(ws: ClientConnection, within: float = WAIT) -> dict[str, Any]:
    async with asyncio.timeout(within):
        received: dict[str, Any] = orjson.loads(await ws.recv())
    return received


async def recv_type(ws: ClientConnection, message_type: str, within: float = WAIT) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while True:
            received = await recv_json(ws, within)
            if received["type"] == message_type:
                return received


async def close_code(ws: ClientConnection, within: float = WAIT) -> tuple[int | None, list[dict[str, Any]]]:
    """Read until the server closes: its close code, and the messages before it."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(within):
        try:
            while True:
                seen.append(orjson.loads(await ws.recv()))
        except ConnectionClosed as closed:
            return (closed.rcvd.code if closed.rcvd is not None else None), seen


@asynccontextmanager
async def client(url: str, token: str, **kwargs: Any) -> AsyncIterator[ClientConnection]:
    async with connect(f"{url}?token={token}", ping_interval=None, **kwargs) as ws:
        await recv_type(ws, "connection_established")
        yield ws


async def live_ping(ws: ClientConnection, client_time: int) -> float:
    started = time.perf_counter()
    await ws.send(send("ping", client_time=client_time))
    pong_of(await recv_type(ws, "pong"), client_time)
    return time.perf_counter() - started


@asynccontextmanager
async def live_scene(server: LiveServer) -> AsyncIterator[Scene]:
    hooks = live_async_contract_hooks(server.http)
    async with httpx2.AsyncClient(base_url=server.http, timeout=WAIT, event_hooks=hooks) as http:
        yield await make_scene(http, server.state)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\xff\xfe", id="invalid-bytes"),
        pytest.param(b'{"type": "ping", "data": {"client_time": "\xc0\xaf"}}', id="overlong-encoding"),
        pytest.param(b'{"type": "ping", "data": {"client_time": "\xed\xa0\x80"}}', id="encoded-surrogate"),
        pytest.param(b'{"type": "ping", "data": {"client_time": "\xf4\x90\x80\x80"}}', id="beyond-u10ffff"),
        pytest.param(b'{"type": "ping", "data": {"client_time": "\xe2\x82"}}', id="cut-sequence"),
    ],
)
async def test_invalid_utf8_in_a_text_frame_closes_1007(settings: Settings, payload: bytes) -> None:
    async with live_server(settings) as server, live_scene(server) as scene:
        before = await db_state(server.state)
        async with client(server.ws_url, scene.member.token) as ws, client(server.ws_url, scene.admin.token) as other:
            await ws.send(payload, text=True)  # sent as a text frame, unvalidated
            code, seen = await close_code(ws)
            assert code == 1007 and seen == []
            await wait_for(lambda: len(server.realtime.registry) == 1, what="the closed socket forgotten")
            await live_ping(other, 1)
        assert server.realtime.tally.received == {"ping": 1}  # the bystander's: the invalid frame never reached the app
        assert await db_state(server.state) == before


async def test_an_oversized_frame_is_answered_then_closed_1009(settings: Settings) -> None:
    """Under a uvicorn whose own frame limit is larger (its default): the application's check answers, then 1009."""
    async with live_server(settings, ws_max_message_bytes=4096) as server, live_scene(server) as scene:
        before = await db_state(server.state)
        async with client(server.ws_url, scene.member.token) as ws, client(server.ws_url, scene.admin.token) as other:
            await ws.send(send("join_room", room_id=scene.room, padding="x" * 4096))
            code, seen = await close_code(ws)
            assert code == CloseCode.MESSAGE_TOO_BIG == 1009
            assert [m["data"]["error_code"] for m in seen] == ["message_too_big"]
            await live_ping(other, 1)
        assert await db_state(server.state) == before
        assert server.realtime.tally.received == {"too_big": 1, "ping": 1}


@pytest.mark.parametrize("kind", ["ping", pytest.param("get_room_state", marks=pytest.mark.slow)])
async def test_a_flood_of_1000_messages_is_answered_in_order_without_starving_others(
    settings: Settings, kind: str
) -> None:
    async with live_server(settings) as server, live_scene(server) as scene:
        async with client(server.ws_url, scene.member.token) as ws, client(server.ws_url, scene.admin.token) as other:
            await ws.send(send("join_room", room_id=scene.room))
            await recv_type(ws, "room_joined")
            before = await db_state(server.state)
            answers: list[str] = []
            answer_type = {"ping": "pong", "get_room_state": "room_state"}[kind]

            async def read_answers() -> None:
                while len(answers) < FLOOD:
                    received = await recv_json(ws, 60)
                    if received["type"] != "user_connected_websocket":
                        answers.append(received["type"])

            async def ping_meanwhile() -> list[float]:
                """The other client pings (one at a time) for as long as the flood's answers are coming."""
                rounds: list[float] = []
                while not reader.done():
                    rounds.append(await live_ping(other, len(rounds)))
                return rounds

            reader = asyncio.create_task(read_answers())
            pinger = asyncio.create_task(ping_meanwhile())
            started = time.perf_counter()
            for index in range(FLOOD):
                await ws.send(send(kind, client_time=index) if kind == "ping" else send(kind))
            sent_in = time.perf_counter() - started
            await asyncio.wait_for(reader, 120)
            rounds = await asyncio.wait_for(pinger, WAIT)
            assert sent_in < 1.0, f"the flood took {sent_in:.2f}s to send"
            assert answers == [answer_type] * FLOOD  # none dropped, none refused: no rate limit
            assert rounds, "the other client could not ping during the flood"
            assert max(rounds) < OTHER_PONG_WITHIN, f"the other client waited {max(rounds):.2f}s for a pong"
            await live_ping(ws, 1)
        assert await db_state(server.state) == before


async def test_a_flooder_that_does_not_read_is_cut_off_and_the_others_are_served(settings: Settings) -> None:
    async with (
        live_server(settings, ws_send_timeout=1.0) as server,
        live_scene(server) as scene,
    ):
        before = await db_state(server.state)
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", server.port))
        async with (
            client(server.ws_url, scene.member.token, sock=raw, max_queue=1) as ws,
            client(server.ws_url, scene.admin.token) as other,
        ):
            padding = "x" * 32_000  # echoed in every pong: 32 MB of answers, more than any socket buffer holds
            with contextlib.suppress(ConnectionClosed):  # the server may cut it off before the flood is all sent
                for index in range(FLOOD):  # never reads a single answer
                    await ws.send(send("ping", client_time=f"{index}{padding}"))
            await wait_for(
                lambda: all(c.user_id != scene.member.id for c in server.realtime.registry),
                within=WAIT + 5,
                what="the flooder cut off",
            )
            assert server.realtime.tally.dropped["slow_consumer"] > 0
            await live_ping(other, 1)
        assert await db_state(server.state) == before


# --- 4. the real `spotik serve` process: its WebSocket layer enforces WS_MAX_MESSAGE_BYTES -------------------------


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(
        tmp_path / "served-storage",
        {"DATABASE_URL": database_url, "AUTO_MIGRATE": "false", "WS_MAX_MESSAGE_BYTES": "4096"},
    )
    try:
        process.wait_until_serving()
        yield process
    finally:
        process.stop()


@pytest.mark.e2e
async def test_spotik_serve_closes_an_oversized_frame_1009_and_an_invalid_one_1007(served: ServerProcess) -> None:
    url = f"ws://127.0.0.1:{served.port}/ws"
    hooks = live_async_contract_hooks(served.base_url)
    async with httpx2.AsyncClient(base_url=served.base_url, timeout=WAIT, event_hooks=hooks) as http:
        member, other = await register(http, "member"), await register(http, "other")
        async with client(url, member.token) as ws, client(url, other.token) as bystander:
            await ws.send(send("ping", padding="x" * 4096))
            code, seen = await close_code(ws)
            # The server's WebSocket layer closes before the application sees the frame: no error message first.
            assert (code, seen) == (1009, [])
            await live_ping(bystander, 1)
        async with client(url, member.token) as ws, client(url, other.token) as bystander:
            await ws.send(b'{"type": "ping\xff"}', text=True)
            assert await close_code(ws) == (1007, [])
            await live_ping(bystander, 2)
        assert (await http.get("/api/ping")).status_code == 200
