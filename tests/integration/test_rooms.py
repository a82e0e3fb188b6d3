"""Rooms and membership (docs/api.md#rooms, docs/decisions.md#d4, docs/decisions.md#d11), on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx2
import pytest

from spotik.db.base import utcnow
from spotik.reads import room_tag
from spotik.rooms.models import Room, RoomParticipant
from spotik.state import AppState
from spotik.tracks.models import Track, TrackVote
from tests.events import capture_events
from tests.helpers import Account, bearer, register
from tests.querycount import count_queries


async def create_room(client: httpx2.AsyncClient, owner: Account, name: str = "Late night jazz") -> dict[str, Any]:
    response = await client.post("/api/rooms", json={"name": name}, headers=owner.headers)
    assert response.status_code == 201, response.text
    room: dict[str, Any] = response.json()["data"]
    return room


async def join(client: httpx2.AsyncClient, room_id: str, account: Account) -> httpx2.Response:
    return await client.post(f"/api/rooms/{room_id}/join", headers=account.headers)


@pytest.fixture
async def people(client: httpx2.AsyncClient) -> dict[str, Account]:
    return {name: await register(client, name) for name in ("admin", "member", "stranger")}


@pytest.fixture
async def room(client: httpx2.AsyncClient, people: dict[str, Account]) -> dict[str, Any]:
    created = await create_room(client, people["admin"])
    assert (await join(client, created["id"], people["member"])).status_code == 200
    return created


async def test_create_room_makes_the_creator_administrator_and_participant(
    client: httpx2.AsyncClient, people: dict[str, Account]
) -> None:
    admin = people["admin"]
    response = await client.post(
        "/api/rooms", json={"name": "  Friday  ", "description": "ignored"}, headers=admin.headers
    )
    assert response.status_code == 201
    body = response.json()
    assert body["success"] is True and body["message"] == "Room created successfully"
    room = body["data"]
    assert room["name"] == "Friday"
    assert room["administrator_id"] == admin.id and room["administrator"]["id"] == admin.id
    assert room["is_administrator"] is True and room["is_participant"] is True
    assert room["participant_count"] == 1 and room["track_count"] == 0
    assert [p["id"] for p in room["participants"]] == [admin.id]
    assert room["participants"][0]["user"]["username"] == "admin"
    assert room["participants"][0]["is_administrator"] is True
    assert room["is_playing"] is False and room["current_track"] is None and room["cover_url"] is None
    assert room["current_playback_position"] == 0
    assert "track_queue" not in room
    assert room["user"]["id"] == admin.id  # the client compares voters with currentRoom.user.id (docs/decisions.md#b6)


@pytest.mark.parametrize(
    ("payload", "errors"),
    [
        ({}, {"name": ["The name field is required."]}),
        ({"name": ""}, {"name": ["The name field is required."]}),
        ({"name": "x" * 101}, {"name": ["The name field must not be greater than 100 characters."]}),
        ({"name": 5}, {"name": ["The name field must be a string."]}),
    ],
)
async def test_create_room_validation(
    client: httpx2.AsyncClient, people: dict[str, Account], payload: dict[str, Any], errors: dict[str, list[str]]
) -> None:
    response = await client.post("/api/rooms", json=payload, headers=people["admin"].headers)
    assert response.status_code == 422
    assert response.json() == {"success": False, "message": "Validation failed", "errors": errors}


async def test_list_rooms_newest_first_with_counts_and_flags(
    client: httpx2.AsyncClient, people: dict[str, Account], room: dict[str, Any]
) -> None:
    newer = await create_room(client, people["stranger"], "Newer")
    response = await client.get("/api/rooms", headers=people["member"].headers)
    assert response.status_code == 200
    body = response.json()
    assert body["message"] == "Rooms retrieved successfully"
    rooms = body["data"]
    assert [r["id"] for r in rooms] == [newer["id"], room["id"]]
    listed = rooms[1]
    assert listed["participant_count"] == 2 and listed["is_participant"] is True
    assert listed["is_administrator"] is False and listed["administrator_id"] == people["admin"].id
    assert {p["id"] for p in listed["participants"]} == {people["admin"].id, people["member"].id}
    assert rooms[0]["is_participant"] is False
    assert "track_queue" not in listed


async def test_show_room_has_queue_user_and_track_count(
    client: httpx2.AsyncClient, people: dict[str, Account], room: dict[str, Any], state: AppState
) -> None:
    track_ids = await add_tracks(state, uuid.UUID(room["id"]), uuid.UUID(people["member"].id), 3)
    async with state.sessionmaker() as session:
        session.add(TrackVote(track_id=track_ids[2], user_id=uuid.UUID(people["stranger"].id)))
        track = await session.get(Track, track_ids[2])
        assert track is not None
        track.vote_score = 1
        await session.commit()
    response = await client.get(f"/api/rooms/{room['id']}", headers=people["stranger"].headers)
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["user"]["id"] == people["stranger"].id
    assert data["track_count"] == 3 and data["administrator_id"] == people["admin"].id
    assert [t["id"] for t in data["track_queue"]] == [str(track_ids[2]), str(track_ids[0]), str(track_ids[1])]
    assert [t["has_voted"] for t in data["track_queue"]] == [True, False, False]
    assert data["track_queue"][0]["uploader"]["id"] == people["member"].id


async def test_a_paused_room_carries_its_paused_position(
    client: httpx2.AsyncClient, people: dict[str, Account], room: dict[str, Any], state: AppState
) -> None:
    room_id = uuid.UUID(room["id"])
    track_id = (await add_tracks(state, room_id, uuid.UUID(people["admin"].id), 1))[0]
    started = utcnow() - timedelta(seconds=100)
    async with state.sessionmaker() as session:
        row = await session.get(Room, room_id)
        assert row is not None
        row.current_track_id, row.playback_started_at = track_id, started
        row.playback_paused_at, row.is_playing = started + timedelta(seconds=42, milliseconds=250), False
        await session.commit()
    paused = (await client.get(f"/api/rooms/{room_id}", headers=people["member"].headers)).json()["data"]
    assert paused["current_playback_position"] == 42.25 and paused["is_playing"] is False
    async with state.sessionmaker() as session:
        row = await session.get(Room, room_id)
        assert row is not None
        row.playback_paused_at, row.is_playing = None, True
        await session.commit()
    await state.cache.invalidate_tags(room_tag(room_id))  # written behind the services' back: no event
    playing = (await client.get(f"/api/rooms/{room_id}", headers=people["member"].headers)).json()["data"]
    assert playing["current_playback_position"] == 0 and playing["is_playing"] is True


async def test_unknown_and_malformed_room_ids_are_404(client: httpx2.AsyncClient, people: dict[str, Account]) -> None:
    for room_id in (str(uuid.uuid4()), "not-a-uuid", "1"):
        response = await client.get(f"/api/rooms/{room_id}", headers=people["admin"].headers)
        assert response.status_code == 404
        assert response.json() == {"success": False, "message": "Room not found", "error": "Room not found"}
        assert (await join(client, room_id, people["admin"])).status_code == 404


async def test_update_room_is_for_the_administrator(
    client: httpx2.AsyncClient, people: dict[str, Account], room: dict[str, Any], state: AppState
) -> None:
    url = f"/api/rooms/{room['id']}"
    for account in (people["member"], people["stranger"]):
        response = await client.put(url, json={"name": "Hijacked"}, headers=account.headers)
        assert response.status_code == 403
        assert response.json() == {
            "success": False,
            "message": "Unauthorized. Only room administrator can update room settings.",
            "error": "Insufficient permissions",
        }
    invalid = await client.put(url, json={"name": ""}, headers=people["admin"].headers)
    assert invalid.status_code == 422 and invalid.json()["errors"] == {"name": ["The name field is required."]}
    with capture_events(state) as events:
        response = await client.put(url, json={"name": "Renamed"}, headers=people["admin"].headers)
    assert response.status_code == 200 and response.json()["message"] == "Room updated successfully"
    assert response.json()["data"]["name"] == "Renamed"
    assert [e.type for e in events] == ["room_updated"]
    assert events[0].data["room"]["name"] == "Renamed" and events[0].room_id == uuid.UUID(room["id"])
    # A broadcast is merged into every client's room: nothing in it may depend on who made the change.
    assert not {"user", "is_administrator", "is_participant"} & set(events[0].data["room"])
    shown = await client.get(url, headers=people["member"].headers)
    assert shown.json()["data"]["name"] == "Renamed"


async def test_delete_room_cascades_and_removes_files(
    client: httpx2.AsyncClient, people: dict[str, Account], room: dict[str, Any], state: AppState
) -> None:
    room_id = uuid.UUID(room["id"])
    track_ids = await add_tracks(state, room_id, uuid.UUID(people["member"].id), 2)
    async with state.sessionmaker() as session:
        stored = [await session.get(Track, track_id) for track_id in track_ids]
    audio_files = [state.settings.audio_root / track.file_path for track in stored if track is not None]
    assert len(audio_files) == 2
    for path in audio_files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"audio")
    cover = state.settings.public_root / "room_covers" / f"{room_id}.png"
    cover.parent.mkdir(parents=True, exist_ok=True)
    cover.write_bytes(b"png")
    url = f"/api/rooms/{room_id}"
    forbidden = await client.delete(url, headers=people["member"].headers)
    assert forbidden.status_code == 403
    assert forbidden.json()["message"] == "Unauthorized. Only room administrator can delete the room."
    assert all(path.exists() for path in audio_files)
    with capture_events(state) as events:
        response = await client.delete(url, headers=people["admin"].headers)
    assert response.status_code == 200
    assert response.json() == {"success": True, "message": "Room deleted successfully"}
    assert not any(path.exists() for path in audio_files) and not cover.exists()
    assert [e.type for e in events] == ["room_deleted"] and events[0].data["room_name"] == room["name"]
    assert (await client.get(url, headers=people["admin"].headers)).status_code == 404
    async with state.sessionmaker() as session:
        assert await session.get(Track, track_ids[0]) is None


async def test_join_is_idempotent_and_announced_once(
    client: httpx2.AsyncClient, people: dict[str, Account], state: AppState
) -> None:
    room = await create_room(client, people["admin"])
    stranger = people["stranger"]
    with capture_events(state) as events:
        first = await join(client, room["id"], stranger)
        second = await join(client, room["id"], stranger)
    assert first.status_code == second.status_code == 200
    assert first.json()["message"] == "Successfully joined the room"
    assert second.json()["message"] == "You are already in this room"
    assert first.json()["data"]["participant"]["id"] == second.json()["data"]["participant"]["id"]
    assert first.json()["data"]["participant"]["user_id"] == stranger.id
    assert second.json()["data"]["room"]["participant_count"] == 2
    assert second.json()["data"]["room"]["is_participant"] is True
    assert first.json()["data"]["room"]["user"]["id"] == stranger.id
    assert [e.type for e in events] == ["user_joined"]
    assert events[0].data["user"]["id"] == stranger.id and events[0].data["participant_count"] == 2
    # Shaped like a REST participant entry, since the client puts it in the same list.
    assert events[0].data["user"]["username"] == "stranger" and events[0].data["user"]["user_id"] == stranger.id
    assert events[0].data["user"]["joined_at"] is not None and events[0].data["user"]["is_administrator"] is False


async def test_leave_rules(
    client: httpx2.AsyncClient, people: dict[str, Account], room: dict[str, Any], state: AppState
) -> None:
    url = f"/api/rooms/{room['id']}/leave"
    not_member = await client.post(url, headers=people["stranger"].headers)
    assert not_member.status_code == 404
    assert not_member.json() == {
        "success": False,
        "message": "You are not a participant in this room",
        "error": "Not a participant",
    }
    admin = await client.post(url, headers=people["admin"].headers)
    assert admin.status_code == 403
    assert admin.json()["error"] == "Administrator cannot leave"
    with capture_events(state) as events:
        left = await client.post(url, headers=people["member"].headers)
    assert left.status_code == 200 and left.json() == {"success": True, "message": "Successfully left the room"}
    assert [e.type for e in events] == ["user_left"] and events[0].data["user"]["id"] == people["member"].id
    assert events[0].data["participant_count"] == 1
    again = await client.post(url, headers=people["member"].headers)
    assert again.status_code == 404


async def test_participants_carry_the_user_id(
    client: httpx2.AsyncClient, people: dict[str, Account], room: dict[str, Any]
) -> None:
    response = await client.get(f"/api/rooms/{room['id']}/participants", headers=people["stranger"].headers)
    assert response.status_code == 200
    entries = response.json()["data"]
    assert [e["id"] for e in entries] == [people["admin"].id, people["member"].id]
    assert all(e["user_id"] == e["id"] == e["user"]["id"] for e in entries)
    assert entries[0]["is_administrator"] is True and entries[1]["is_administrator"] is False
    assert entries[1]["duration_in_room"] == "Just joined"
    assert entries[0]["participant_id"] != entries[0]["id"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/rooms"),
        ("POST", "/api/rooms"),
        ("GET", "/api/rooms/{id}"),
        ("PUT", "/api/rooms/{id}"),
        ("DELETE", "/api/rooms/{id}"),
        ("POST", "/api/rooms/{id}/join"),
        ("POST", "/api/rooms/{id}/leave"),
        ("GET", "/api/rooms/{id}/participants"),
    ],
)
async def test_every_room_endpoint_needs_a_token(
    client: httpx2.AsyncClient, room: dict[str, Any], method: str, path: str
) -> None:
    response = await client.request(method, path.format(id=room["id"]), json={"name": "x"})
    assert response.status_code == 401
    assert response.json()["message"] == "Token not provided"
    response = await client.request(method, path.format(id=room["id"]), headers=bearer("garbage"))
    assert response.status_code == 401


async def add_tracks(state: AppState, room_id: uuid.UUID, uploader_id: uuid.UUID, count: int) -> list[uuid.UUID]:
    async with state.sessionmaker() as session:
        tracks = [
            Track(
                room_id=room_id,
                uploader_id=uploader_id,
                filename=f"{uuid.uuid4()}.mp3",
                original_name=f"t{i}.mp3",
                file_path="",
                duration_seconds=180,
                file_size_bytes=1000,
                mime_type="audio/mpeg",
            )
            for i in range(count)
        ]
        for track in tracks:
            track.file_path = f"tracks/{track.filename}"
        session.add_all(tracks)
        await session.commit()
        return [track.id for track in tracks]


async def populate(state: AppState, client: httpx2.AsyncClient, rooms: int, tracks: int, voters: list[Account]) -> None:
    owner = voters[0]
    for index in range(rooms):
        room = await create_room(client, owner, f"room {index}")
        room_id = uuid.UUID(room["id"])
        track_ids = await add_tracks(state, room_id, uuid.UUID(owner.id), tracks)
        async with state.sessionmaker() as session:
            for voter in voters[1:]:
                session.add(RoomParticipant(room_id=room_id, user_id=uuid.UUID(voter.id), joined_at=utcnow()))
                session.add_all(TrackVote(track_id=t, user_id=uuid.UUID(voter.id)) for t in track_ids[:5])
            if track_ids:
                room_row = await session.get(Room, room_id)
                assert room_row is not None
                room_row.current_track_id = track_ids[0]
                room_row.is_playing = True
                room_row.playback_started_at = utcnow()
            await session.commit()


@pytest.mark.cache_off  # the statements behind the cache (its computations run in tasks of their own)
async def test_room_endpoints_run_a_constant_number_of_queries(client: httpx2.AsyncClient, state: AppState) -> None:
    """1 room vs 50 rooms of 20 tracks with votes and several members: the same, small number of statements."""
    voters = [await register(client, f"q{i}") for i in range(4)]
    await populate(state, client, 1, 20, voters)
    counts: dict[str, list[int]] = {"list": [], "show": [], "participants": []}

    async def measure() -> None:
        first_room = (await client.get("/api/rooms", headers=voters[1].headers)).json()["data"][-1]["id"]
        for name, path in (
            ("list", "/api/rooms"),
            ("show", f"/api/rooms/{first_room}"),
            ("participants", f"/api/rooms/{first_room}/participants"),
        ):
            with count_queries(state.engine) as statements:
                response = await client.get(path, headers=voters[1].headers)
            assert response.status_code == 200
            counts[name].append(len(statements))

    await measure()
    await populate(state, client, 49, 20, voters)
    assert len((await client.get("/api/rooms", headers=voters[1].headers)).json()["data"]) == 50
    await measure()
    # list: token+user, rooms (admin, current track joined), participants+users, track counts.
    # show: token+user, room binding, room graph (2), queue, the viewer's votes. participants: 3.
    assert counts == {"list": [4, 4], "show": [6, 6], "participants": [3, 3]}, counts
