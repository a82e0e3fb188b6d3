"""Playlists as docs/api.md#playlists and docs/api.md#resource-shapes describe them (envelope A), on SQLite and
PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

import httpx2
import pytest
from sqlalchemy import func, select

from spotik.genres.models import Genre
from spotik.playlists.models import Playlist, PlaylistTrack
from spotik.rooms.models import Room
from spotik.state import AppState
from spotik.tracks.models import Track, TrackVote
from tests.helpers import Account, assert_envelope_a_error, register
from tests.querycount import count_queries

PLAYLIST_KEYS = {
    "id",
    "name",
    "description",
    "is_public",
    "is_owner",
    "user",
    "creator",
    "tracks_count",
    "total_duration",
    "tracks",
    "created_at",
    "updated_at",
}


async def seed_tracks(state: AppState, uploader: Account, count: int, *, genre: str | None = "Rock") -> list[str]:
    """``count`` tracks in a new room administered by ``uploader`` (rows only; playlists need no audio file)."""
    async with state.sessionmaker() as session:
        genre_id = await session.scalar(select(Genre.id).where(Genre.name == genre)) if genre else None
        room = Room(name=f"room of {uploader.username}", administrator_id=uuid.UUID(uploader.id))
        session.add(room)
        await session.flush()
        ids = []
        for index in range(count):
            track_id = uuid.uuid4()
            session.add(
                Track(
                    id=track_id,
                    room_id=room.id,
                    uploader_id=uuid.UUID(uploader.id),
                    filename=f"{track_id}.mp3",
                    original_name=f"song {index}.mp3",
                    file_path=f"tracks/{track_id}.mp3",
                    duration_seconds=100 + index,
                    file_size_bytes=1000,
                    mime_type="audio/mpeg",
                    genre_id=genre_id,
                )
            )
            ids.append(str(track_id))
        await session.commit()
    return ids


async def create_playlist(client: httpx2.AsyncClient, owner: Account, **fields: Any) -> dict[str, Any]:
    response = await client.post("/api/playlists", json={"name": "Mix", **fields}, headers=owner.headers)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def add(client: httpx2.AsyncClient, owner: Account, playlist_id: int, track_id: str, **extra: Any) -> Any:
    return await client.post(
        f"/api/playlists/{playlist_id}/tracks", json={"track_id": track_id, **extra}, headers=owner.headers
    )


async def track_order(client: httpx2.AsyncClient, owner: Account, playlist_id: int) -> list[tuple[str, int]]:
    response = await client.get(f"/api/playlists/{playlist_id}", headers=owner.headers)
    assert response.status_code == 200
    return [(track["id"], track["position"]) for track in response.json()["data"]["tracks"]]


async def test_playlists_need_a_token(client: httpx2.AsyncClient) -> None:
    for method, path in [
        ("GET", "/api/playlists"),
        ("POST", "/api/playlists"),
        ("GET", "/api/playlists/1"),
        ("PUT", "/api/playlists/1"),
        ("DELETE", "/api/playlists/1"),
        ("POST", "/api/playlists/1/tracks"),
        ("DELETE", f"/api/playlists/1/tracks/{uuid.uuid4()}"),
    ]:
        response = await client.request(method, path, json={"name": "x"})
        assert response.status_code == 401, (method, path)
        assert_envelope_a_error(response.json(), "Token not provided")


async def test_create_playlist(client: httpx2.AsyncClient) -> None:
    alice = await register(client, "alice")
    response = await client.post("/api/playlists", json={"name": " Road trip "}, headers=alice.headers)
    assert response.status_code == 201
    body = response.json()
    assert body["success"] is True and body["message"] == "Playlist created successfully"
    data = body["data"]
    assert set(data) == PLAYLIST_KEYS
    assert isinstance(data["id"], int)
    assert (data["name"], data["description"], data["is_public"], data["is_owner"]) == ("Road trip", None, False, True)
    assert data["user"]["id"] == alice.id and data["user"]["username"] == "alice"
    assert data["creator"] == data["user"]
    assert (data["tracks"], data["tracks_count"], data["total_duration"]) == ([], 0, 0)
    shown = await client.get(f"/api/playlists/{data['id']}", headers=alice.headers)
    assert shown.json()["data"] == data
    public = await create_playlist(client, alice, description="Songs", is_public=True)
    assert (public["description"], public["is_public"]) == ("Songs", True)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({}, {"name": ["The name field is required."]}),
        ({"name": "x" * 101}, {"name": ["The name field must not be greater than 100 characters."]}),
        (
            {"name": "Mix", "description": "d" * 1001},
            {"description": ["The description field must not be greater than 1000 characters."]},
        ),
        ({"name": "Mix", "is_public": "maybe"}, {"is_public": ["The is public field must be true or false."]}),
        ({"name": ["a"]}, {"name": ["The name field must be a string."]}),
    ],
)
async def test_create_playlist_validation(
    client: httpx2.AsyncClient, state: AppState, payload: dict[str, Any], expected: dict[str, list[str]]
) -> None:
    alice = await register(client, "alice")
    response = await client.post("/api/playlists", json=payload, headers=alice.headers)
    assert response.status_code == 422
    body = response.json()
    assert body["success"] is False and body["message"] == "Validation failed"
    assert body["errors"] == expected
    async with state.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Playlist)) == 0


async def test_list_shows_own_and_public_playlists_newest_first(client: httpx2.AsyncClient) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    alice_private = await create_playlist(client, alice, name="alice private")
    alice_public = await create_playlist(client, alice, name="alice public", is_public=True)
    bob_private = await create_playlist(client, bob, name="bob private")
    bob_public = await create_playlist(client, bob, name="bob public", is_public=True)

    response = await client.get("/api/playlists", headers=bob.headers)
    assert response.status_code == 200
    assert response.json()["message"] == "Playlists retrieved successfully"
    seen = response.json()["data"]
    assert [p["id"] for p in seen] == [bob_public["id"], bob_private["id"], alice_public["id"]]
    assert [p["is_owner"] for p in seen] == [True, True, False]
    assert seen[2]["user"]["id"] == alice.id == seen[2]["creator"]["id"]

    for_alice = (await client.get("/api/playlists", headers=alice.headers)).json()["data"]
    assert [p["id"] for p in for_alice] == [bob_public["id"], alice_public["id"], alice_private["id"]]


async def test_show_playlist_visibility(client: httpx2.AsyncClient) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    private = await create_playlist(client, alice, name="secret")
    public = await create_playlist(client, alice, name="open", is_public=True)

    assert (await client.get(f"/api/playlists/{private['id']}", headers=alice.headers)).status_code == 200
    denied = await client.get(f"/api/playlists/{private['id']}", headers=bob.headers)
    assert denied.status_code == 403
    assert denied.json() == {
        "success": False,
        "message": "Unauthorized to view this playlist",
        "error": "Access denied",
    }
    shown = await client.get(f"/api/playlists/{public['id']}", headers=bob.headers)
    assert shown.status_code == 200
    assert shown.json()["message"] == "Playlist retrieved successfully"
    assert shown.json()["data"]["name"] == "open" and shown.json()["data"]["is_owner"] is False


@pytest.mark.parametrize("playlist", ["999999", "abc", "0", "-1", "1.0", "99999999999999999999999"])
async def test_unknown_or_malformed_playlist_ids_are_404(client: httpx2.AsyncClient, playlist: str) -> None:
    alice = await register(client, "alice")
    for method, path in [
        ("GET", f"/api/playlists/{playlist}"),
        ("PUT", f"/api/playlists/{playlist}"),
        ("DELETE", f"/api/playlists/{playlist}"),
        ("POST", f"/api/playlists/{playlist}/tracks"),
        ("DELETE", f"/api/playlists/{playlist}/tracks/{uuid.uuid4()}"),
    ]:
        response = await client.request(method, path, json={"name": "x"}, headers=alice.headers)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json() == {"success": False, "message": "Playlist not found", "error": "Playlist not found"}


async def test_update_playlist_by_its_owner_only(client: httpx2.AsyncClient) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    playlist = await create_playlist(client, alice, description="old")
    url = f"/api/playlists/{playlist['id']}"

    denied = await client.put(url, json={"name": "Bob's now"}, headers=bob.headers)
    assert denied.status_code == 403
    assert denied.json() == {
        "success": False,
        "message": "Unauthorized to update this playlist",
        "error": "Access denied",
    }
    updated = await client.put(url, json={"is_public": True, "description": None}, headers=alice.headers)
    assert updated.status_code == 200
    assert updated.json()["message"] == "Playlist updated successfully"
    data = updated.json()["data"]
    assert (data["name"], data["description"], data["is_public"]) == ("Mix", None, True)
    renamed = await client.put(url, json={"name": "Renamed", "is_public": "0"}, headers=alice.headers)
    assert (renamed.json()["data"]["name"], renamed.json()["data"]["is_public"]) == ("Renamed", False)
    assert (await client.get(url, headers=alice.headers)).json()["data"] == renamed.json()["data"]
    assert (await client.get(url, headers=bob.headers)).status_code == 403


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"name": ""}, {"name": ["The name field is required."]}),
        ({"name": "x" * 101}, {"name": ["The name field must not be greater than 100 characters."]}),
        ({"is_public": "yes please"}, {"is_public": ["The is public field must be true or false."]}),
        ({"is_public": None}, {"is_public": ["The is public field is required."]}),
    ],
)
async def test_update_playlist_validation(
    client: httpx2.AsyncClient, payload: dict[str, Any], expected: dict[str, list[str]]
) -> None:
    alice = await register(client, "alice")
    playlist = await create_playlist(client, alice)
    response = await client.put(f"/api/playlists/{playlist['id']}", json=payload, headers=alice.headers)
    assert response.status_code == 422
    assert response.json()["errors"] == expected


async def test_delete_playlist_by_its_owner_only(client: httpx2.AsyncClient, state: AppState) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    playlist = await create_playlist(client, alice, is_public=True)
    track_ids = await seed_tracks(state, alice, 2)
    for track_id in track_ids:
        assert (await add(client, alice, playlist["id"], track_id)).status_code == 200
    url = f"/api/playlists/{playlist['id']}"

    denied = await client.delete(url, headers=bob.headers)
    assert denied.status_code == 403
    assert denied.json() == {
        "success": False,
        "message": "Unauthorized to delete this playlist",
        "error": "Access denied",
    }
    deleted = await client.delete(url, headers=alice.headers)
    assert deleted.status_code == 200
    assert deleted.json() == {"success": True, "message": "Playlist deleted successfully"}
    assert (await client.get(url, headers=alice.headers)).status_code == 404
    async with state.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(PlaylistTrack)) == 0
        assert await session.scalar(select(func.count()).select_from(Track)) == 2


async def test_add_tracks_in_order_with_resources(client: httpx2.AsyncClient, state: AppState) -> None:
    alice = await register(client, "alice")
    playlist = await create_playlist(client, alice)
    first, second = await seed_tracks(state, alice, 2)
    response = await add(client, alice, playlist["id"], first)
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and body["message"] == "Track added to playlist successfully"
    assert body["data"] == {"playlist_id": playlist["id"], "track_id": first, "position": 0}
    assert (await add(client, alice, playlist["id"], second)).json()["data"]["position"] == 1

    data = (await client.get(f"/api/playlists/{playlist['id']}", headers=alice.headers)).json()["data"]
    assert (data["tracks_count"], data["total_duration"]) == (2, 100 + 101)
    assert [track["id"] for track in data["tracks"]] == [first, second]
    track = data["tracks"][0]
    assert track["original_name"] == "song 0.mp3" and track["duration_seconds"] == 100
    assert track["uploader"]["id"] == alice.id and track["uploader"]["username"] == "alice"
    assert track["genre"]["name"] == "Rock" and track["genre"]["color"] == "#4ecdc4"
    assert track["has_voted"] is False and track["file_url"] == f"/api/tracks/{first}/stream"


async def test_has_voted_reflects_the_viewers_vote(client: httpx2.AsyncClient, state: AppState) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    playlist = await create_playlist(client, alice, is_public=True)
    liked, other = await seed_tracks(state, alice, 2, genre=None)
    for track_id in (liked, other):
        await add(client, alice, playlist["id"], track_id)
    async with state.sessionmaker() as session:
        session.add(TrackVote(track_id=uuid.UUID(liked), user_id=uuid.UUID(bob.id)))
        await session.commit()

    def voted(response: httpx2.Response) -> dict[str, bool]:
        data = response.json()["data"]
        tracks = data["tracks"] if isinstance(data, dict) else data[0]["tracks"]
        return {track["id"]: track["has_voted"] for track in tracks}

    assert voted(await client.get(f"/api/playlists/{playlist['id']}", headers=bob.headers)) == {
        liked: True,
        other: False,
    }
    assert voted(await client.get("/api/playlists", headers=bob.headers)) == {liked: True, other: False}
    assert voted(await client.get(f"/api/playlists/{playlist['id']}", headers=alice.headers)) == {
        liked: False,
        other: False,
    }
    shown = (await client.get(f"/api/playlists/{playlist['id']}", headers=bob.headers)).json()["data"]
    assert shown["tracks"][0]["genre"] is None


async def test_positions_insert_clamp_and_close_gaps(client: httpx2.AsyncClient, state: AppState) -> None:
    alice = await register(client, "alice")
    playlist = await create_playlist(client, alice)
    a, b, c, d = await seed_tracks(state, alice, 4)
    pid = playlist["id"]
    await add(client, alice, pid, a)
    await add(client, alice, pid, b)
    inserted = await add(client, alice, pid, c, position=0)
    assert inserted.json()["data"]["position"] == 0
    assert await track_order(client, alice, pid) == [(c, 0), (a, 1), (b, 2)]
    clamped = await add(client, alice, pid, d, position="99")
    assert clamped.json()["data"]["position"] == 3
    assert await track_order(client, alice, pid) == [(c, 0), (a, 1), (b, 2), (d, 3)]

    removed = await client.delete(f"/api/playlists/{pid}/tracks/{a}", headers=alice.headers)
    assert removed.status_code == 200
    assert removed.json() == {"success": True, "message": "Track removed from playlist successfully"}
    assert await track_order(client, alice, pid) == [(c, 0), (b, 1), (d, 2)]
    assert (await add(client, alice, pid, a, position=1)).json()["data"]["position"] == 1
    assert await track_order(client, alice, pid) == [(c, 0), (a, 1), (b, 2), (d, 3)]
    assert (await add(client, alice, pid, a, position=None)).status_code == 409


async def test_a_track_is_in_a_playlist_once(client: httpx2.AsyncClient, state: AppState) -> None:
    alice = await register(client, "alice")
    playlist = await create_playlist(client, alice)
    (track_id,) = await seed_tracks(state, alice, 1)
    assert (await add(client, alice, playlist["id"], track_id)).status_code == 200
    duplicate = await add(client, alice, playlist["id"], track_id, position=0)
    assert duplicate.status_code == 409
    assert duplicate.json() == {"success": False, "message": "Track is already in playlist", "error": "Duplicate track"}
    assert await track_order(client, alice, playlist["id"]) == [(track_id, 0)]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({}, {"track_id": ["The track id field is required."]}),
        ({"track_id": "not-a-uuid"}, {"track_id": ["The track id field must be a valid UUID."]}),
        ({"track_id": 42}, {"track_id": ["The track id field must be a valid UUID."]}),
        ({"track_id": "00000000-0000-4000-8000-000000000000"}, {"track_id": ["The selected track id is invalid."]}),
        ({"track_id": "TRACK", "position": -1}, {"position": ["The position field must be at least 0."]}),
        ({"track_id": "TRACK", "position": "first"}, {"position": ["The position field must be an integer."]}),
        ({"track_id": "TRACK", "position": 1.5}, {"position": ["The position field must be an integer."]}),
        (
            {"track_id": "nope", "position": -3},
            {
                "track_id": ["The track id field must be a valid UUID."],
                "position": ["The position field must be at least 0."],
            },
        ),
    ],
)
async def test_add_track_validation(
    client: httpx2.AsyncClient, state: AppState, payload: dict[str, Any], expected: dict[str, list[str]]
) -> None:
    alice = await register(client, "alice")
    playlist = await create_playlist(client, alice)
    (track_id,) = await seed_tracks(state, alice, 1)
    if payload.get("track_id") == "TRACK":
        payload = {**payload, "track_id": track_id}
    response = await client.post(f"/api/playlists/{playlist['id']}/tracks", json=payload, headers=alice.headers)
    assert response.status_code == 422
    assert response.json()["message"] == "Validation failed"
    assert response.json()["errors"] == expected
    assert await track_order(client, alice, playlist["id"]) == []


async def test_only_the_owner_changes_a_playlists_tracks(client: httpx2.AsyncClient, state: AppState) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    playlist = await create_playlist(client, alice, is_public=True)
    (track_id,) = await seed_tracks(state, bob, 1)
    forbidden = {"success": False, "message": "Unauthorized to modify this playlist", "error": "Access denied"}

    added = await add(client, bob, playlist["id"], track_id)
    assert added.status_code == 403 and added.json() == forbidden
    # A track of a room alice is not a member of may be added (the original's rule, kept).
    assert (await add(client, alice, playlist["id"], track_id)).status_code == 200
    removed = await client.delete(f"/api/playlists/{playlist['id']}/tracks/{track_id}", headers=bob.headers)
    assert removed.status_code == 403 and removed.json() == forbidden
    assert await track_order(client, alice, playlist["id"]) == [(track_id, 0)]


@pytest.mark.parametrize("track", ["not-in-it", "abc", "00000000-0000-4000-8000-000000000000"])
async def test_removing_a_track_that_is_not_in_the_playlist_is_404(
    client: httpx2.AsyncClient, state: AppState, track: str
) -> None:
    alice = await register(client, "alice")
    playlist = await create_playlist(client, alice)
    in_it, not_in_it = await seed_tracks(state, alice, 2)
    await add(client, alice, playlist["id"], in_it)
    target = not_in_it if track == "not-in-it" else track
    response = await client.delete(f"/api/playlists/{playlist['id']}/tracks/{target}", headers=alice.headers)
    assert response.status_code == 404
    assert response.json() == {
        "success": False,
        "message": "Track not found in playlist",
        "error": "Track not in playlist",
    }
    assert await track_order(client, alice, playlist["id"]) == [(in_it, 0)]


async def test_listing_playlists_costs_the_same_queries_for_1_or_30(
    client: httpx2.AsyncClient, state: AppState
) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")

    async def statements() -> tuple[int, list[dict[str, Any]]]:
        with count_queries(state.engine) as seen:
            response = await client.get("/api/playlists", headers=alice.headers)
        assert response.status_code == 200
        return len(seen), response.json()["data"]

    first = await create_playlist(client, alice)
    (track_id,) = await seed_tracks(state, alice, 1)
    await add(client, alice, first["id"], track_id)
    one, data = await statements()
    assert len(data) == 1 and data[0]["tracks_count"] == 1

    for index in range(29):
        owner = alice if index % 2 else bob
        playlist = await create_playlist(client, owner, name=f"list {index}", is_public=True)
        for track_id in await seed_tracks(state, owner, 3, genre=("Jazz", "Pop", None)[index % 3]):
            await add(client, owner, playlist["id"], track_id)
    thirty, data = await statements()
    assert len(data) == 30 and sum(p["tracks_count"] for p in data) == 1 + 29 * 3
    assert {p["user"]["username"] for p in data} == {"alice", "bob"}
    assert one == thirty
