"""The WebSocket gateway in process (docs/api.md#websocket, docs/decisions.md#d3, docs/decisions.md#d4): handshake,
every message type, every error and close code, limits, queues, stale cleanup and graceful shutdown — with real
WebSocket clients, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import orjson
import pytest
from httpx2.websockets import AsyncWebSocketClient

from spotik.realtime import protocol
from spotik.realtime.janitor import Janitor
from spotik.realtime.protocol import CloseCode
from spotik.settings import Settings
from spotik.state import AppState
from spotik.tracks.models import Track
from tests.helpers import Account
from tests.integration.test_websocket_support import (
    RunningApp,
    closed_with,
    create_room,
    join,
    people,
    receive,
    receive_type,
    receive_types,
    running_app,
    send,
    wait_for,
)

ISO_MICRO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def assert_iso(value: Any) -> None:
    assert isinstance(value, str) and ISO_MICRO_Z.match(value), value


async def add_track(state: AppState, room_id: str, uploader_id: str, name: str = "song.mp3") -> str:
    async with state.sessionmaker() as session:
        filename = f"{uuid.uuid4()}.mp3"
        track = Track(
            room_id=uuid.UUID(room_id),
            uploader_id=uuid.UUID(uploader_id),
            filename=filename,
            original_name=name,
            file_path=f"tracks/{filename}",
            duration_seconds=180,
            file_size_bytes=1000,
            mime_type="audio/mpeg",
        )
        session.add(track)
        await session.commit()
        return str(track.id)


async def joined(env: RunningApp, account: Account, room_id: str, **kwargs: Any) -> Any:
    """A socket of ``account`` that has joined ``room_id`` (its own presence broadcast consumed)."""
    context = env.ws(account.token, **kwargs)
    ws = await context.__aenter__()
    await receive_type(ws, "connection_established")
    await ws.send_text(send("join_room", room_id=room_id))
    await receive_type(ws, "room_joined")
    await receive_type(ws, "user_connected_websocket")
    return context, ws


async def make_trio(env: RunningApp) -> dict[str, Any]:
    """admin (room owner), member (joined over REST), stranger (no membership) and the room."""
    admin, member, stranger = await people(env.client, "admin", "member", "stranger")
    room = await create_room(env.client, admin)
    await join(env.client, room, member)
    return {"admin": admin, "member": member, "stranger": stranger, "room": room}


# --- handshake ---------------------------------------------------------------------------------------------------


async def test_query_token_connects_and_announces_the_connection(settings: Settings) -> None:
    async with running_app(settings) as env:
        (alice,) = await people(env.client, "alice")
        async with env.ws(alice.token) as ws:
            hello = await receive(ws)
            assert hello["type"] == "connection_established"
            assert set(hello) == {"type", "data", "timestamp"}
            data = hello["data"]
            assert data["user"]["id"] == alice.id and data["user"]["username"] == "alice"
            assert "password" not in orjson.dumps(data).decode()
            assert isinstance(data["connection_id"], str) and data["connection_id"]
            assert isinstance(data["message"], str)
            assert_iso(data["server_time"])
            assert_iso(hello["timestamp"])
            assert env.realtime.registry.get(data["connection_id"]) is not None


async def test_bearer_header_token(settings: Settings) -> None:
    async with running_app(settings) as env:
        (alice,) = await people(env.client, "alice")
        async with env.ws(headers={"Authorization": f"Bearer {alice.token}"}) as ws:
            assert (await receive(ws))["data"]["user"]["id"] == alice.id


async def test_subprotocol_token_is_accepted_and_echoed(settings: Settings) -> None:
    async with running_app(settings) as env:
        (alice,) = await people(env.client, "alice")
        async with env.ws(subprotocols=[f"token.{alice.token}"]) as ws:
            assert ws.subprotocol == f"token.{alice.token}"
            assert (await receive(ws))["data"]["user"]["id"] == alice.id


async def test_header_token_wins_over_query_which_wins_over_subprotocol(settings: Settings) -> None:
    """The same order as HTTP's (one token reader): Authorization, then ?token=, then the subprotocol."""
    async with running_app(settings) as env:
        alice, bob, carol = await people(env.client, "alice", "bob", "carol")
        offer = [f"token.{carol.token}"]
        async with env.ws(bob.token, headers={"Authorization": f"Bearer {alice.token}"}, subprotocols=offer) as ws:
            assert (await receive(ws))["data"]["user"]["id"] == alice.id
        async with env.ws(bob.token, subprotocols=offer) as ws:
            assert ws.subprotocol == offer[0]  # echoed even when another credential was used
            assert (await receive(ws))["data"]["user"]["id"] == bob.id


@pytest.mark.parametrize("token", [None, "", "not-a-jwt", "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0."])
async def test_missing_or_bad_token_gets_an_error_then_4401(settings: Settings, token: str | None) -> None:
    async with running_app(settings) as env:
        async with env.ws(token) as ws:
            code, reason, seen = await closed_with(ws)
        assert code == CloseCode.UNAUTHORIZED == 4401
        assert [m["type"] for m in seen] == ["error"]
        assert seen[0]["data"]["error_code"] == "authentication_failed"
        assert seen[0]["data"]["message"]
        assert reason


async def test_revoked_token_is_refused(settings: Settings) -> None:
    async with running_app(settings) as env:
        (alice,) = await people(env.client, "alice")
        assert (await env.client.post("/api/auth/logout", headers=alice.headers)).status_code == 200
        async with env.ws(alice.token) as ws:
            code, _, seen = await closed_with(ws)
        assert code == 4401 and seen[0]["data"]["error_code"] == "authentication_failed"
        assert len(env.realtime.registry) == 0


async def test_origin_is_checked_against_the_cors_list(settings: Settings) -> None:
    async with running_app(settings) as env:
        (alice,) = await people(env.client, "alice")
        async with env.ws(alice.token, headers={"Origin": "http://evil.example"}) as ws:
            code, _, seen = await closed_with(ws)
        assert code == CloseCode.FORBIDDEN == 4403
        assert seen[0]["data"]["error_code"] == "origin_not_allowed"
        for allowed in ("http://client.example", "http://127.0.0.1:3000"):
            async with env.ws(alice.token, headers={"Origin": allowed}) as ws:
                assert (await receive(ws))["type"] == "connection_established"


async def test_plain_http_get_on_ws_is_400(settings: Settings) -> None:
    async with running_app(settings) as env:
        response = await env.client.get("/ws")
        assert response.status_code == 400
        assert response.json()["message"] == "WebSocket upgrade required"


# --- limits ------------------------------------------------------------------------------------------------------


async def test_total_connection_limit_refuses_with_4429(settings: Settings) -> None:
    async with running_app(settings, ws_max_connections=2) as env:
        (alice,) = await people(env.client, "alice")
        async with env.ws(alice.token) as first, env.ws(alice.token) as second:
            await receive(first)
            await receive(second)
            async with env.ws(alice.token) as third:
                code, reason, seen = await closed_with(third)
            assert code == CloseCode.TOO_MANY == 4429
            assert "connection limit" in reason
            assert seen[0]["data"]["error_code"] == "connection_limit"
            assert len(env.realtime.registry) == 2
        await wait_for(lambda: len(env.realtime.registry) == 0, what="sockets forgotten")
        async with env.ws(alice.token) as again:  # a freed slot is usable again
            assert (await receive(again))["type"] == "connection_established"


async def test_room_connection_limit_refuses_with_4429(settings: Settings) -> None:
    async with running_app(settings, ws_max_connections_per_room=1) as env:
        admin, member = await people(env.client, "admin", "member")
        room = await create_room(env.client, admin)
        other_room = await create_room(env.client, member, "Other")
        await join(env.client, room, member)
        context, _first = await joined(env, admin, room)
        try:
            async with env.ws(member.token) as second:
                await receive(second)
                await second.send_text(send("join_room", room_id=room))
                code, reason, seen = await closed_with(second)
            assert code == 4429 and "room connection limit" in reason
            assert seen[-1]["data"]["error_code"] == "room_connection_limit"
            assert env.realtime.registry.room_size(room) == 1
            async with env.ws(member.token) as third:  # other rooms are not affected
                await receive(third)
                await third.send_text(send("join_room", room_id=other_room))
                assert (await receive_type(third, "room_joined"))["data"]["room"]["id"] == other_room
        finally:
            await context.__aexit__(None, None, None)


# --- frames ------------------------------------------------------------------------------------------------------


async def test_oversized_frame_closes_with_1009(settings: Settings) -> None:
    async with running_app(settings, ws_max_message_bytes=1024) as env:
        (alice,) = await people(env.client, "alice")
        async with env.ws(alice.token) as ws:
            await receive(ws)
            await ws.send_text(send("ping", client_time=1, padding="x" * 900))  # under the limit: fine
            assert (await receive(ws))["type"] == "pong"
            await ws.send_text(send("ping", padding="x" * 2000))
            code, _, seen = await closed_with(ws)
        assert code == CloseCode.MESSAGE_TOO_BIG == 1009
        assert seen[-1]["data"]["error_code"] == "message_too_big"


@pytest.mark.parametrize(
    ("frame", "error_code"),
    [
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_message"),
        ('{"data": {}}', "invalid_message"),
        ('{"type": "ping", "data": [1]}', "invalid_message"),
        ('{"type": "dance", "data": {}}', "unknown_message_type"),
    ],
)
async def test_bad_frames_are_answered_and_the_socket_stays_open(
    settings: Settings, frame: str, error_code: str
) -> None:
    async with running_app(settings) as env:
        (alice,) = await people(env.client, "alice")
        async with env.ws(alice.token) as ws:
            await receive(ws)
            await ws.send_text(frame)
            answer = await receive(ws)
            assert answer["type"] == "error"
            assert answer["data"]["error_code"] == error_code and answer["data"]["message"]
            await ws.send_text(send("ping", client_time=7))
            assert (await receive(ws))["type"] == "pong"


async def test_binary_json_frames_are_accepted(settings: Settings) -> None:
    async with running_app(settings) as env:
        (alice,) = await people(env.client, "alice")
        async with env.ws(alice.token) as ws:
            await receive(ws)
            await ws.send_bytes(send("ping", client_time=3).encode())
            assert (await receive(ws))["data"]["client_time"] == 3


# --- message types -----------------------------------------------------------------------------------------------


async def test_ping_answers_with_the_times_a_client_needs_for_its_clock_offset(settings: Settings) -> None:
    async with running_app(settings) as env:
        (alice,) = await people(env.client, "alice")
        async with env.ws(alice.token) as ws:
            await receive(ws)
            await ws.send_text(send("ping", client_time=1764100000123))
            pong = await receive(ws)
        data = pong["data"]
        assert pong["type"] == "pong" and data["client_time"] == 1764100000123
        for key in ("server_receive_time", "server_send_time", "server_time"):
            assert_iso(data[key])
        assert data["server_receive_time"] <= data["server_send_time"] <= pong["timestamp"]


async def test_join_room_replies_with_the_room_and_announces_presence(settings: Settings) -> None:
    async with running_app(settings) as env:
        trio = await make_trio(env)
        admin, member, room = trio["admin"], trio["member"], trio["room"]
        context, admin_ws = await joined(env, admin, room)
        try:
            async with env.ws(member.token) as ws:
                await receive(ws)
                await ws.send_text(send("join_room", room_id=room))
                reply = await receive_type(ws, "room_joined")
                data = reply["data"]
                assert data["websocket_connected"] is True and data["message"]
                assert data["room"]["id"] == room and data["room"]["is_participant"] is True
                assert {p["id"] for p in data["room"]["participants"]} == {admin.id, member.id}
                assert data["room"]["user"]["id"] == member.id and data["room"]["track_queue"] == []
                assert data["websocket_connections"] == 2 and set(data["online_users"]) == {admin.id, member.id}
                # everyone in the room — the member too — hears about the new socket
                for socket in (admin_ws, ws):
                    announced = await receive_type(socket, "user_connected_websocket")
                    assert announced["data"]["user"]["id"] == member.id
                    assert announced["data"]["websocket_connections"] == 2
                    assert announced["data"]["room_id"] == room
                    assert_iso(announced["data"]["timestamp"])
        finally:
            await context.__aexit__(None, None, None)


async def test_join_room_is_idempotent(settings: Settings) -> None:
    async with running_app(settings) as env:
        trio = await make_trio(env)
        admin, room = trio["admin"], trio["room"]
        context, ws = await joined(env, admin, room)
        try:
            await ws.send_text(send("join_room", room_id=room))
            again = await receive(ws)
            assert again["type"] == "room_joined" and again["data"]["room"]["id"] == room
            await ws.send_text(send("ping"))
            assert (await receive(ws))["type"] == "pong"  # no second presence broadcast came before the pong
            assert env.realtime.registry.room_size(room) == 1
        finally:
            await context.__aexit__(None, None, None)


@pytest.mark.parametrize(
    ("room_id", "error_code"),
    [(None, "missing_room_id"), ("", "missing_room_id"), ("nope", "room_not_found"), ("uuid", "room_not_found")],
)
async def test_join_room_errors_keep_the_socket_open(settings: Settings, room_id: str | None, error_code: str) -> None:
    async with running_app(settings) as env:
        trio = await make_trio(env)
        if room_id == "uuid":
            room_id = str(uuid.uuid4())
        async with env.ws(trio["admin"].token) as ws:
            await receive(ws)
            await ws.send_text(send("join_room", **({} if room_id is None else {"room_id": room_id})))
            answer = await receive(ws)
            assert answer["type"] == "error" and answer["data"]["error_code"] == error_code
            assert answer["data"]["request_type"] == "join_room"
            await ws.send_text(send("ping"))
            assert (await receive(ws))["type"] == "pong"


async def test_join_room_needs_membership(settings: Settings) -> None:
    async with running_app(settings) as env:
        trio = await make_trio(env)
        stranger, room = trio["stranger"], trio["room"]
        async with env.ws(stranger.token) as ws:
            await receive(ws)
            await ws.send_text(send("join_room", room_id=room))
            answer = await receive(ws)
            assert answer["type"] == "error" and answer["data"]["error_code"] == "access_denied"
            assert env.realtime.registry.room_size(room) == 0
            await join(env.client, room, stranger)  # REST join first, then the socket may join
            await ws.send_text(send("join_room", room_id=room))
            assert (await receive_type(ws, "room_joined"))["data"]["room"]["id"] == room


async def test_joining_another_room_leaves_the_first(settings: Settings) -> None:
    async with running_app(settings) as env:
        trio = await make_trio(env)
        admin, member, room = trio["admin"], trio["member"], trio["room"]
        second = await create_room(env.client, member, "Second")
        context, admin_ws = await joined(env, admin, room)
        try:
            async with env.ws(member.token) as ws:
                await receive(ws)
                await ws.send_text(send("join_room", room_id=room))
                await receive_type(ws, "room_joined")
                await ws.send_text(send("join_room", room_id=second))
                assert (await receive_type(ws, "room_joined"))["data"]["room"]["id"] == second
                gone = await receive_type(admin_ws, "user_disconnected_websocket")
                assert gone["data"]["user"]["id"] == member.id and gone["data"]["websocket_connections"] == 1
                assert env.realtime.registry.room_size(room) == 1 and env.realtime.registry.room_size(second) == 1
        finally:
            await context.__aexit__(None, None, None)


async def test_leave_room_keeps_the_membership(settings: Settings) -> None:
    async with running_app(settings) as env:
        trio = await make_trio(env)
        admin, member, room = trio["admin"], trio["member"], trio["room"]
        context, admin_ws = await joined(env, admin, room)
        try:
            member_context, ws = await joined(env, member, room)
            await receive_type(admin_ws, "user_connected_websocket")
            await ws.send_text(send("leave_room"))
            left = await receive(ws)
            assert left["type"] == "room_left" and left["data"]["room_id"] == room
            gone = await receive_type(admin_ws, "user_disconnected_websocket")
            assert gone["data"]["user"]["id"] == member.id and gone["data"]["websocket_connections"] == 1
            await ws.send_text(send("leave_room"))  # again: still fine
            assert (await receive(ws))["data"]["room_id"] is None
            # the leaver no longer gets the room's events; the membership is untouched (docs/decisions.md#d3)
            await env.client.put(f"/api/rooms/{room}", json={"name": "Renamed"}, headers=admin.headers)
            await receive_type(admin_ws, "room_updated")
            await ws.send_text(send("ping"))
            assert (await receive(ws))["type"] == "pong"
            participants = await env.client.get(f"/api/rooms/{room}/participants", headers=admin.headers)
            assert member.id in {p["id"] for p in participants.json()["data"]}
            await member_context.__aexit__(None, None, None)
        finally:
            await context.__aexit__(None, None, None)


async def test_closing_a_socket_announces_it_and_keeps_the_membership(settings: Settings) -> None:
    async with running_app(settings) as env:
        trio = await make_trio(env)
        admin, member, room = trio["admin"], trio["member"], trio["room"]
        context, admin_ws = await joined(env, admin, room)
        try:
            member_context, _ = await joined(env, member, room)
            await receive_type(admin_ws, "user_connected_websocket")
            await member_context.__aexit__(None, None, None)
            gone = await receive_type(admin_ws, "user_disconnected_websocket")
            assert gone["data"]["user"]["id"] == member.id
            assert gone["data"]["user_online"] is False and gone["data"]["online_user_count"] == 1
            assert "online_users" not in gone["data"]  # the size of an announcement does not grow with the room
            await wait_for(lambda: len(env.realtime.registry) == 1, what="closed socket forgotten")
            participants = await env.client.get(f"/api/rooms/{room}/participants", headers=admin.headers)
            assert member.id in {p["id"] for p in participants.json()["data"]}
        finally:
            await context.__aexit__(None, None, None)


async def test_get_room_state(settings: Settings) -> None:
    async with running_app(settings) as env:
        trio = await make_trio(env)
        admin, room = trio["admin"], trio["room"]
        async with env.ws(admin.token) as ws:
            hello = await receive(ws)
            await ws.send_text(send("get_room_state"))
            answer = await receive(ws)
            assert answer["type"] == "error" and answer["data"]["error_code"] == "not_in_room"
            await ws.send_text(send("join_room", room_id=room))
            await receive_type(ws, "user_connected_websocket")
            await ws.send_text(send("get_room_state"))
            state = await receive_type(ws, "room_state")
            assert state["data"]["room"]["id"] == room and state["data"]["websocket_connected"] is True
            assert state["data"]["connection_id"] == hello["data"]["connection_id"]
            assert state["data"]["online_users"] == [admin.id]


async def test_vote_track_and_get_track_queue_use_rest_rules(settings: Settings) -> None:
    async with running_app(settings) as env:
        trio = await make_trio(env)
        admin, member, room = trio["admin"], trio["member"], trio["room"]
        track_id = await add_track(env.state, room, admin.id, "Blue in green.mp3")
        context, admin_ws = await joined(env, admin, room)
        try:
            async with env.ws(member.token) as ws:
                await receive(ws)
                await ws.send_text(send("vote_track", track_id=track_id))
                assert (await receive(ws))["data"]["error_code"] == "not_in_room"
                await ws.send_text(send("join_room", room_id=room))
                await receive_type(ws, "user_connected_websocket")

                await ws.send_text(send("get_track_queue"))
                queue = await receive_type(ws, "track_queue")
                assert queue["data"]["room_id"] == room and queue["data"]["total_count"] == 1
                assert queue["data"]["tracks"][0]["id"] == track_id
                assert queue["data"]["tracks"][0]["user_has_voted"] is False

                await ws.send_text(send("vote_track", vote_type="sideways"))
                invalid = await receive(ws)
                assert invalid["data"]["error_code"] == "validation_failed"
                assert set(invalid["data"]["errors"]) == {"track_id", "vote_type"}
                await ws.send_text(send("vote_track", track_id=str(uuid.uuid4())))
                assert (await receive(ws))["data"]["error_code"] == "not_found"

                await ws.send_text(send("vote_track", track_id=track_id, vote_type="up"))
                both = await receive_types(ws, "vote_success", "track_voted")
                voted = both["vote_success"]
                assert voted["data"] == {
                    "track_id": track_id,
                    "vote_type": "up",
                    "vote_score": 1,
                    "user_has_voted": True,
                    "message": voted["data"]["message"],
                }
                # the broadcast reaches everyone, the voter included
                for event in (await receive_type(admin_ws, "track_voted"), both["track_voted"]):
                    assert event["data"]["track"]["id"] == track_id and event["data"]["vote_added"] is True
                    assert event["data"]["voter"]["id"] == member.id

                await ws.send_text(send("vote_track", track_id=track_id, vote_type="remove"))
                removed = await receive_type(ws, "vote_success")
                assert removed["data"]["vote_score"] == 0 and removed["data"]["user_has_voted"] is False
                unvoted = await receive_type(admin_ws, "track_voted")
                assert unvoted["data"]["vote_added"] is False
                await receive_type(admin_ws, "track_unvoted")
                listed = await env.client.get(f"/api/rooms/{room}/tracks", headers=member.headers)
                assert listed.json()["tracks"][0]["vote_score"] == 0
        finally:
            await context.__aexit__(None, None, None)


async def test_playback_control_uses_the_rest_rules_and_broadcasts(settings: Settings) -> None:
    async with running_app(settings) as env:
        trio = await make_trio(env)
        admin, member, room = trio["admin"], trio["member"], trio["room"]
        first = await add_track(env.state, room, admin.id, "First.mp3")
        second = await add_track(env.state, room, admin.id, "Second.mp3")
        async with env.ws(admin.token) as ws:
            await receive(ws)
            await ws.send_text(send("playback_control", action="pause"))
            assert (await receive(ws))["data"]["error_code"] == "not_in_room"
        member_context, member_ws = await joined(env, member, room)
        try:
            await member_ws.send_text(send("playback_control", action="play", track_id=first))
            refused = await receive_type(member_ws, "error")
            assert refused["data"]["error_code"] == "forbidden" and refused["data"]["status"] == 403
            assert refused["data"]["message"] == "Only room administrator can control playback"

            async with env.ws(admin.token) as ws:
                await receive(ws)
                await ws.send_text(send("join_room", room_id=room))
                await receive_type(ws, "user_connected_websocket")
                for bad, field in (({"action": "dance"}, "action"), ({"action": "play"}, "track_id")):
                    await ws.send_text(send("playback_control", **bad))
                    answer = await receive_type(ws, "error")
                    assert answer["data"]["error_code"] == "validation_failed" and field in answer["data"]["errors"]
                await ws.send_text(send("playback_control", action="pause"))
                assert (await receive_type(ws, "error"))["data"]["status"] == 400  # nothing is playing

                async def control(expected: str, **data: Any) -> dict[str, Any]:
                    await ws.send_text(send("playback_control", **data))
                    found = await receive_types(ws, "playback_control_success", expected)
                    event = await receive_type(member_ws, expected)  # the room hears it too
                    assert event["data"]["room_id"] == room
                    assert found["playback_control_success"]["data"]["action"] == data["action"]
                    return found

                started = await control("playback_started", action="play", track_id=first)
                assert started["playback_started"]["data"]["track"]["id"] == first
                assert started["playback_control_success"]["data"]["result"]["track_id"] == first
                await control("playback_paused", action="pause")
                await control("playback_resumed", action="resume")
                sought = await control("playback_seeked", action="seek", position=12.5)
                assert sought["playback_seeked"]["data"]["position"] == 12.5
                await ws.send_text(send("playback_control", action="seek", position="far"))
                assert (await receive_type(ws, "error"))["data"]["error_code"] == "validation_failed"
                skipped = await control("track_skipped", action="skip")
                assert skipped["track_skipped"]["data"]["next_track"]["id"] == second
                assert (await receive_type(member_ws, "playback_started"))["data"]["track"]["id"] == second
                await control("playback_stopped", action="stop")
                status = await env.client.get(f"/api/rooms/{room}/playback/status", headers=admin.headers)
                assert status.json()["data"]["is_playing"] is False
        finally:
            await member_context.__aexit__(None, None, None)


# --- domain events become room broadcasts ------------------------------------------------------------------------


async def test_domain_events_reach_every_socket_of_the_room_and_only_them(settings: Settings) -> None:
    async with running_app(settings) as env:
        trio = await make_trio(env)
        admin, member, stranger, room = trio["admin"], trio["member"], trio["stranger"], trio["room"]
        other_room = await create_room(env.client, stranger, "Elsewhere")
        admin_context, admin_ws = await joined(env, admin, room)
        member_context, member_ws = await joined(env, member, room)
        stranger_context, stranger_ws = await joined(env, stranger, other_room)
        try:
            response = await env.client.put(f"/api/rooms/{room}", json={"name": "Renamed"}, headers=admin.headers)
            assert response.status_code == 200
            for socket in (admin_ws, member_ws):
                event = await receive_type(socket, "room_updated")
                assert set(event) == {"type", "data", "timestamp"}
                assert event["data"]["room_id"] == room and event["data"]["room"]["name"] == "Renamed"
                assert_iso(event["data"]["timestamp"])
                assert_iso(event["data"]["server_time"])
                assert_iso(event["timestamp"])
            await stranger_ws.send_text(send("ping"))
            assert (await receive(stranger_ws))["type"] == "pong"  # nothing from the other room came first
        finally:
            for context in (stranger_context, member_context, admin_context):  # LIFO: anyio scopes
                await context.__aexit__(None, None, None)


async def test_rest_join_and_leave_are_broadcast_and_a_leaver_is_detached(settings: Settings) -> None:
    async with running_app(settings) as env:
        trio = await make_trio(env)
        admin, member, stranger, room = trio["admin"], trio["member"], trio["stranger"], trio["room"]
        admin_context, admin_ws = await joined(env, admin, room)
        member_context, member_ws = await joined(env, member, room)
        try:
            await join(env.client, room, stranger)
            joined_event = await receive_type(admin_ws, "user_joined")
            assert joined_event["data"]["user"]["id"] == stranger.id and joined_event["data"]["participant_count"] == 3
            left = await env.client.post(f"/api/rooms/{room}/leave", headers=member.headers)
            assert left.status_code == 200
            for socket in (admin_ws, member_ws):
                assert (await receive_type(socket, "user_left"))["data"]["user"]["id"] == member.id
            gone = await receive_type(admin_ws, "user_disconnected_websocket")
            assert gone["data"]["user"]["id"] == member.id
            assert env.realtime.registry.room_size(room) == 1  # no membership, no more events
            await member_ws.send_text(send("get_room_state"))
            assert (await receive_type(member_ws, "error"))["data"]["error_code"] == "not_in_room"
        finally:
            for context in (member_context, admin_context):  # LIFO: anyio scopes
                await context.__aexit__(None, None, None)


async def test_room_deletion_is_broadcast_then_the_room_is_emptied(settings: Settings) -> None:
    async with running_app(settings) as env:
        trio = await make_trio(env)
        admin, member, room = trio["admin"], trio["member"], trio["room"]
        admin_context, admin_ws = await joined(env, admin, room)
        member_context, member_ws = await joined(env, member, room)
        try:
            assert (await env.client.delete(f"/api/rooms/{room}", headers=admin.headers)).status_code == 200
            for socket in (admin_ws, member_ws):
                deleted = await receive_type(socket, "room_deleted")
                assert deleted["data"]["room_id"] == room
            assert env.realtime.registry.room_size(room) == 0
        finally:
            for context in (member_context, admin_context):  # LIFO: anyio scopes
                await context.__aexit__(None, None, None)


async def test_events_without_a_room_are_not_broadcast(settings: Settings) -> None:
    async with running_app(settings) as env:
        trio = await make_trio(env)
        from spotik.events import DomainEvent

        context, ws = await joined(env, trio["admin"], trio["room"])
        try:
            before = env.realtime.events_broadcast
            await env.state.events.publish(DomainEvent("genre_created", None, {"genre": {"id": 1}}))
            await env.state.events.publish(DomainEvent("room_updated", uuid.UUID(trio["room"]), {"room": {"x": 1}}))
            event = await receive(ws)
            assert event["type"] == "room_updated" and event["data"]["room"] == {"x": 1}
            assert env.realtime.events_broadcast == before + 1
        finally:
            await context.__aexit__(None, None, None)


# --- queues ------------------------------------------------------------------------------------------------------


async def test_a_full_queue_drops_the_oldest_and_critical_messages_go_first(settings: Settings) -> None:
    """Enqueue 150 ordinary messages and 3 critical ones without yielding: the writer cannot run meanwhile."""
    async with running_app(settings) as env:
        trio = await make_trio(env)
        context, ws = await joined(env, trio["admin"], trio["room"])
        try:
            (connection,) = list(env.realtime.registry)
            for index in range(150):
                connection.enqueue(protocol.encode("track_voted", {"n": index}))
            for index in range(3):
                connection.enqueue(protocol.encode("playback_paused", {"n": index}))
            assert connection.normal_depth == 100 and connection.priority_depth == 3
            assert connection.dropped == 50 and connection.max_depth == 100
            received = [await receive(ws) for _ in range(103)]
            assert [m["type"] for m in received[:3]] == ["playback_paused"] * 3
            assert [m["data"]["n"] for m in received[3:]] == list(range(50, 150))  # the newest 100, in order
            await wait_for(lambda: connection.queue_depth == 0, what="queue drained")
            assert connection.messages_out >= 103
        finally:
            await context.__aexit__(None, None, None)


async def test_a_client_that_lets_critical_messages_pile_up_is_cut_off(settings: Settings) -> None:
    async with running_app(settings, ws_queue_size=5) as env:
        (alice,) = await people(env.client, "alice")
        async with env.ws(alice.token) as ws:
            await receive(ws)
            (connection,) = list(env.realtime.registry)
            for index in range(6):  # the writer is idle, so the 6th critical message overflows the priority lane
                connection.enqueue(protocol.encode("playback_started", {"n": index}))
            code, reason, _ = await closed_with(ws)
        assert code == CloseCode.TRY_AGAIN_LATER == 1013 and reason == "slow consumer"
        assert len(env.realtime.registry) == 0


# --- stale cleanup -----------------------------------------------------------------------------------------------


async def test_sweep_closes_inactive_sockets_and_keeps_active_ones(settings: Settings) -> None:
    async with running_app(settings, ws_activity_timeout=0.2) as env:
        alice, bob = await people(env.client, "alice", "bob")
        async with env.ws(alice.token) as idle, env.ws(bob.token) as active:
            await receive(idle)
            await receive(active)
            registry = env.realtime.registry
            idle_conn, active_conn = sorted(registry, key=lambda c: c.username)
            loop = asyncio.get_running_loop()
            await wait_for(lambda: loop.time() - idle_conn.last_activity() > 0.2, what="idle past the timeout")
            await active.send_text(send("ping"))
            await receive(active)
            result = await env.realtime.janitor.sweep()
            assert result.checked == 2 and result.closed == 1 and result.remaining == 0
            code, reason, _ = await closed_with(idle)
            assert code == CloseCode.INACTIVE == 4408 and reason == "inactivity timeout"
            assert registry.get(idle_conn.id) is None and registry.get(active_conn.id) is active_conn
            await active.send_text(send("ping"))
            assert (await receive(active))["type"] == "pong"


async def test_the_periodic_sweep_runs_by_itself(settings: Settings) -> None:
    async with running_app(settings, ws_activity_timeout=0.2, ws_sweep_interval=0.1) as env:
        (alice,) = await people(env.client, "alice")
        async with env.ws(alice.token) as ws:
            await receive(ws)
            code, _, _ = await closed_with(ws, within=10)
        assert code == 4408
        assert env.realtime.janitor.closed_total == 1 and env.realtime.janitor.sweeps >= 1


async def test_a_sweep_is_bounded_and_resumes_where_it_stopped(settings: Settings) -> None:
    async with running_app(settings) as env:
        (alice,) = await people(env.client, "alice")
        client = AsyncWebSocketClient(env.client)
        async with client.connect(f"/ws?token={alice.token}") as a, client.connect(f"/ws?token={alice.token}") as b:
            await receive(a)
            await receive(b)
            async with client.connect(f"/ws?token={alice.token}") as c:
                await receive(c)
                janitor = Janitor(
                    env.realtime.registry, activity_timeout=600, interval=300, budget_seconds=0, slice_size=1
                )
                first = await janitor.sweep()
                assert (first.checked, first.remaining) == (1, 2)
                second = await janitor.sweep()
                assert (second.checked, second.remaining) == (1, 1)
                third = await janitor.sweep()
                assert (third.checked, third.remaining, third.closed) == (1, 0, 0)
                assert (await janitor.sweep()).remaining == 2  # a new round


# --- shutdown ----------------------------------------------------------------------------------------------------


async def test_stop_flushes_queues_then_closes_every_socket_with_1001(settings: Settings) -> None:
    async with running_app(settings) as env:
        admin, member = await people(env.client, "admin", "member")
        room = await create_room(env.client, admin)
        await join(env.client, room, member)
        contexts = [await joined(env, account, room) for account in (admin, member)]
        await receive_type(contexts[0][1], "user_connected_websocket")
        try:
            for connection in env.realtime.registry:
                for index in range(20):
                    connection.enqueue(protocol.encode("track_voted", {"n": index}))
            await env.realtime.stop()
            for _, ws in contexts:
                code, reason, seen = await closed_with(ws)
                assert code == CloseCode.GOING_AWAY == 1001 and reason == "server shutting down"
                assert [m["data"]["n"] for m in seen if m["type"] == "track_voted"] == list(range(20))
            async with env.ws(admin.token) as late:
                code, _, seen = await closed_with(late)
            assert code == 1001 and seen[0]["data"]["error_code"] == "server_shutting_down"
        finally:
            for context, _ in reversed(contexts):  # LIFO: anyio scopes
                await context.__aexit__(None, None, None)


async def test_two_sockets_of_one_user_count_as_two_connections_one_user(settings: Settings) -> None:
    async with running_app(settings) as env:
        trio = await make_trio(env)
        admin, room = trio["admin"], trio["room"]
        first_context, first = await joined(env, admin, room)
        try:
            second_context, _second = await joined(env, admin, room)
            announced = await receive_type(first, "user_connected_websocket")
            assert announced["data"]["websocket_connections"] == 2 and announced["data"]["online_user_count"] == 1
            await second_context.__aexit__(None, None, None)
            gone = await receive_type(first, "user_disconnected_websocket")
            assert gone["data"]["websocket_connections"] == 1 and gone["data"]["online_user_count"] == 1
            assert gone["data"]["user_online"] is True  # the admin's first socket is still there
        finally:
            await first_context.__aexit__(None, None, None)


async def test_status_reports_the_registry_and_connection_metadata(settings: Settings) -> None:
    async with running_app(settings) as env:
        trio = await make_trio(env)
        context, ws = await joined(env, trio["admin"], trio["room"])
        try:
            await ws.send_text(send("ping"))
            await receive(ws)
            status = env.realtime.status()
            assert status["connections"]["connections"] == 1 and status["connections"]["rooms"] == {trio["room"]: 1}
            assert status["broker"]["kind"] == "local" and status["memory"]["level"] in ("ok", "warning", "critical")
            (described,) = env.realtime.connections()
            assert described["user_id"] == trio["admin"].id and described["room_id"] == trio["room"]
            assert described["messages_in"] == 2 and described["bytes_in"] > 0
            assert described["messages_out"] >= 4 and described["bytes_out"] > described["bytes_in"]
            assert described["dropped"] == 0 and described["queue_depth"] == 0
            assert_iso(described["connected_at"])
        finally:
            await context.__aexit__(None, None, None)


async def test_an_exhausted_database_pool_refuses_with_1013_and_the_server_keeps_going(settings: Settings) -> None:
    from sqlalchemy import text

    busy_settings = settings.model_copy(update={"db_pool_max": 1, "db_pool_timeout": 0.2})
    async with running_app(busy_settings) as env:
        (alice,) = await people(env.client, "alice")
        async with env.state.sessionmaker() as hog:
            await hog.execute(text("SELECT 1"))  # holds the only pooled connection
            async with env.ws(alice.token) as ws:
                code, reason, seen = await closed_with(ws)
            assert code == CloseCode.TRY_AGAIN_LATER == 1013 and "try again later" in reason
            assert seen[0]["data"]["error_code"] == "server_busy"
        async with env.ws(alice.token) as ws:  # the connection is back in the pool: fine again
            assert (await receive(ws))["type"] == "connection_established"


async def test_a_message_that_finds_the_database_pool_exhausted_is_answered_busy_and_the_socket_stays(
    settings: Settings,
) -> None:
    from sqlalchemy import text

    busy_settings = settings.model_copy(update={"db_pool_max": 1, "db_pool_timeout": 0.2})
    async with running_app(busy_settings) as env:
        trio = await make_trio(env)
        async with env.ws(trio["member"].token) as ws:
            await receive_type(ws, "connection_established")
            async with env.state.sessionmaker() as hog:
                await hog.execute(text("SELECT 1"))  # holds the only pooled connection
                await ws.send_text(send("join_room", room_id=trio["room"]))
                error = await receive_type(ws, "error")
            assert error["data"]["error_code"] == "server_busy" and error["data"]["request_type"] == "join_room"
            assert "try again later" in error["data"]["message"]
            await ws.send_text(send("join_room", room_id=trio["room"]))  # the same socket, the pool free again
            assert (await receive_type(ws, "room_joined"))["data"]["room"]["id"] == trio["room"]


async def test_an_open_socket_keeps_no_http_layer_alive(settings: Settings) -> None:
    """``/ws`` is dispatched ahead of the HTTP middleware stack: the coroutines an idle socket keeps suspended are
    the gateway's (and the rate limiter's), not FastAPI's, Starlette's or the HTTP middleware's."""
    async with running_app(settings) as env:
        trio = await make_trio(env)
        context, _ws = await joined(env, trio["admin"], trio["room"])
        try:
            (connection,) = list(env.realtime.registry)
            assert connection.reader_task is not None
            modules: list[str] = []
            awaited: Any = connection.reader_task.get_coro()
            while hasattr(awaited, "cr_frame") and awaited.cr_frame is not None:
                modules.append(awaited.cr_frame.f_globals["__name__"])
                awaited = awaited.cr_await
            assert "spotik.realtime.gateway" in modules and "spotik.state" in modules  # SpotikApp's dispatch
            assert modules.count("spotik.realtime.gateway") == 1  # ``Realtime.asgi`` hands over ``serve``'s coroutine
            http_layers = [m for m in modules if m.startswith(("fastapi", "starlette.middleware", "starlette.routing"))]
            assert http_layers == [] and not any(
                m.startswith(("spotik.http", "spotik.performance.middleware.timing")) for m in modules
            )
        finally:
            await context.__aexit__(None, None, None)


async def test_prometheus_counts_what_the_sockets_did(settings: Settings) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    async def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        response = await env.client.get("/metrics")
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
            if sample.name.startswith("spotik_ws_")
        }

    async with running_app(settings) as env:
        trio = await make_trio(env)
        async with env.ws("not-a-token") as refused:
            await closed_with(refused)
        context, ws = await joined(env, trio["admin"], trio["room"])
        try:
            for frame in (send("ping"), send("dance"), "{not json"):
                await ws.send_text(frame)
            assert (await receive_type(ws, "pong"))["type"] == "pong"
            await receive_type(ws, "error")
            await receive_type(ws, "error")
            figures = await scrape()
        finally:
            await context.__aexit__(None, None, None)
    assert figures[("spotik_ws_connections", ())] == 1
    assert figures[("spotik_ws_connections_opened_total", ())] == 1
    assert figures[("spotik_ws_connections_rejected_total", (("reason", "authentication_failed"),))] == 1
    for kind in ("join_room", "ping", "unknown", "invalid"):
        assert figures[("spotik_ws_messages_received_total", (("type", kind),))] == 1, kind
    for kind, count in (("connection_established", 1), ("room_joined", 1), ("pong", 1), ("error", 2)):
        assert figures[("spotik_ws_messages_sent_total", (("type", kind),))] == count, kind
    assert figures[("spotik_ws_send_queue_depth", ())] == 0
