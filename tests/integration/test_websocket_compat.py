"""Follow-up messages for the original web client (spotik.realtime.compat), which ignores ``playback_stopped``,
``playback_seeked`` and ``room_updated``: each is followed by a message its handlers do read
(docs/api.md#follow-ups-for-the-original-web-client)."""

from __future__ import annotations

from typing import Any

from spotik.settings import Settings
from tests.integration.test_websocket import add_track, joined, make_trio
from tests.integration.test_websocket_support import receive, receive_type, running_app, send


async def until_pong(ws: Any) -> list[dict[str, Any]]:
    """Every message before the answer to a ping sent now: what the server had queued for this socket by then."""
    await ws.send_text(send("ping"))
    seen: list[dict[str, Any]] = []
    while (message := await receive(ws))["type"] != "pong":
        seen.append(message)
    return seen


async def test_stop_seek_and_rename_are_followed_by_messages_the_original_client_handles(settings: Settings) -> None:
    async with running_app(settings) as env:
        trio = await make_trio(env)
        admin, member, room = trio["admin"], trio["member"], trio["room"]
        track = await add_track(env.state, room, admin.id, "Song.mp3")
        context, ws = await joined(env, member, room)
        playback = f"/api/rooms/{room}/tracks/{track}"
        try:
            assert (await env.client.post(f"{playback}/play", headers=admin.headers)).status_code == 200
            await receive_type(ws, "playback_started")

            # seek while playing → playback_started whose start puts the client at the new position
            seek = await env.client.post(
                f"/api/rooms/{room}/playback/seek", json={"position": 30}, headers=admin.headers
            )
            assert seek.status_code == 200, seek.text
            seeked = await receive(ws)
            follow = await receive(ws)
            assert seeked["type"] == "playback_seeked" and follow["type"] == "playback_started"
            assert follow["data"]["follows"] == "playback_seeked"
            assert follow["data"]["track"]["id"] == track and follow["data"]["position"] == 0
            assert follow["data"]["playback_started_at"] == seeked["data"]["playback_started_at"]

            # seek while paused → playback_paused at the new position
            assert (
                await env.client.post(f"/api/rooms/{room}/playback/pause", headers=admin.headers)
            ).status_code == 200
            await receive_type(ws, "playback_paused")
            seek = await env.client.post(
                f"/api/rooms/{room}/playback/seek", json={"position": 12}, headers=admin.headers
            )
            assert seek.status_code == 200, seek.text
            seeked, follow = await receive(ws), await receive(ws)
            assert seeked["type"] == "playback_seeked" and follow["type"] == "playback_paused"
            assert follow["data"]["follows"] == "playback_seeked" and follow["data"]["current_position"] == 12
            assert follow["data"]["playback_paused_at"] == seeked["data"]["playback_paused_at"]

            # stop → track_skipped with no next track: the client clears the current track and stops the audio
            assert (await env.client.post(f"/api/rooms/{room}/playback/stop", headers=admin.headers)).status_code == 200
            stopped, follow = await receive(ws), await receive(ws)
            assert stopped["type"] == "playback_stopped" and follow["type"] == "track_skipped"
            assert follow["data"]["next_track"] is None and follow["data"]["follows"] == "playback_stopped"
            assert follow["data"]["skipped_track"]["id"] == track and follow["data"]["is_playing"] is False

            # rename → room_state_updated {room}: the client merges it into the room it shows
            renamed = await env.client.put(f"/api/rooms/{room}", json={"name": "Renamed"}, headers=admin.headers)
            assert renamed.status_code == 200
            updated, follow = await receive(ws), await receive(ws)
            assert updated["type"] == "room_updated" and follow["type"] == "room_state_updated"
            assert follow["data"]["room"]["id"] == room and follow["data"]["room"]["name"] == "Renamed"
            assert follow["data"]["room_id"] == room
        finally:
            await context.__aexit__(None, None, None)


async def test_follow_ups_can_be_switched_off(settings: Settings) -> None:
    async with running_app(settings, ws_client_compat_events=False) as env:
        trio = await make_trio(env)
        admin, room = trio["admin"], trio["room"]
        context, ws = await joined(env, trio["member"], room)
        try:
            renamed = await env.client.put(f"/api/rooms/{room}", json={"name": "Renamed"}, headers=admin.headers)
            assert renamed.status_code == 200
            assert [m["type"] for m in await until_pong(ws)] == ["room_updated"]
        finally:
            await context.__aexit__(None, None, None)
