"""Genres as docs/api.md#genres describes them (envelope A), on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx2
import pytest
from sqlalchemy import delete, func, select

from spotik.auth.models import User
from spotik.genres.models import Genre
from spotik.rooms.models import Room
from spotik.state import AppState
from spotik.tracks.models import Track
from tests.conftest import SEEDED_GENRES
from tests.helpers import Account, assert_envelope_a_error, bearer, register
from tests.querycount import count_queries

ISO_MICROS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
GENRE_KEYS = {"id", "name", "description", "color", "tracks_count", "created_at", "updated_at"}
SEEDED_BY_NAME = [
    "Alternative",
    "Classical",
    "Country",
    "Electronic",
    "Hip Hop",
    "Jazz",
    "Pop",
    "R&B",
    "Reggae",
    "Rock",
]


async def genre_ids(state: AppState) -> dict[str, int]:
    async with state.sessionmaker() as session:
        return {name: genre_id for genre_id, name in (await session.execute(select(Genre.id, Genre.name)))}


async def add_tracks(state: AppState, uploader: Account, counts: dict[int | None, int]) -> None:
    """``counts[genre_id]`` tracks of that genre, in one room of ``uploader`` (no audio files are needed)."""
    async with state.sessionmaker() as session:
        room = Room(name="genre room", administrator_id=uuid.UUID(uploader.id))
        session.add(room)
        await session.flush()
        for genre_id, count in counts.items():
            for _ in range(count):
                track_id = uuid.uuid4()
                session.add(
                    Track(
                        id=track_id,
                        room_id=room.id,
                        uploader_id=uuid.UUID(uploader.id),
                        filename=f"{track_id}.mp3",
                        original_name="song.mp3",
                        file_path=f"tracks/{track_id}.mp3",
                        duration_seconds=180,
                        file_size_bytes=1000,
                        mime_type="audio/mpeg",
                        genre_id=genre_id,
                    )
                )
        await session.commit()


async def test_seeded_genres_are_listed_publicly_by_name(client: httpx2.AsyncClient) -> None:
    response = await client.get("/api/genres")
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and body["message"] == "Genres retrieved successfully"
    assert [genre["name"] for genre in body["data"]] == SEEDED_BY_NAME
    seeded = {name: (description, color) for name, description, color in SEEDED_GENRES}
    for genre in body["data"]:
        assert set(genre) == GENRE_KEYS
        assert isinstance(genre["id"], int)
        assert (genre["description"], genre["color"]) == seeded[genre["name"]]
        assert genre["tracks_count"] == 0
        assert ISO_MICROS_Z.match(genre["created_at"]) and ISO_MICROS_Z.match(genre["updated_at"])


async def test_tracks_are_counted_per_genre(client: httpx2.AsyncClient, state: AppState) -> None:
    alice = await register(client, "alice")
    ids = await genre_ids(state)
    await add_tracks(state, alice, {ids["Rock"]: 3, ids["Jazz"]: 1, None: 2})
    counts = {genre["name"]: genre["tracks_count"] for genre in (await client.get("/api/genres")).json()["data"]}
    assert counts == {name: {"Rock": 3, "Jazz": 1}.get(name, 0) for name in SEEDED_BY_NAME}
    shown = await client.get(f"/api/genres/{ids['Rock']}", headers=alice.headers)
    assert shown.status_code == 200 and shown.json()["data"]["tracks_count"] == 3


async def test_popular_genres_order_by_track_count_then_name(client: httpx2.AsyncClient, state: AppState) -> None:
    alice = await register(client, "alice")
    ids = await genre_ids(state)
    await add_tracks(state, alice, {ids["Rock"]: 3, ids["Pop"]: 2, ids["Jazz"]: 2, ids["Country"]: 1})
    response = await client.get("/api/genres/popular", params={"limit": 3})
    assert response.status_code == 200
    body = response.json()
    assert body["message"] == "Popular genres retrieved successfully"
    assert [(g["name"], g["tracks_count"]) for g in body["data"]] == [("Rock", 3), ("Jazz", 2), ("Pop", 2)]
    everything = (await client.get("/api/genres/popular")).json()["data"]
    assert [g["name"] for g in everything] == ["Rock", "Jazz", "Pop", "Country"] + [
        name for name in SEEDED_BY_NAME if name not in ("Rock", "Jazz", "Pop", "Country")
    ]


@pytest.mark.parametrize(("limit", "expected"), [("0", 1), ("-5", 1), ("1", 1), ("4", 4), ("1000", 11), ("", 10)])
async def test_popular_limit_defaults_to_10_and_is_clamped(
    client: httpx2.AsyncClient, state: AppState, limit: str, expected: int
) -> None:
    async with state.sessionmaker() as session:
        session.add(Genre(name="Zydeco"))
        await session.commit()
    response = await client.get("/api/genres/popular", params={"limit": limit})
    assert response.status_code == 200
    assert len(response.json()["data"]) == expected


@pytest.mark.parametrize("limit", ["abc", "1.5", "ten"])
async def test_popular_limit_that_is_not_an_integer_is_a_422(client: httpx2.AsyncClient, limit: str) -> None:
    response = await client.get("/api/genres/popular", params={"limit": limit})
    assert response.status_code == 422
    assert response.json()["errors"] == {"limit": ["The limit field must be an integer."]}


async def test_listing_genres_costs_one_query_however_many_there_are(
    client: httpx2.AsyncClient, state: AppState
) -> None:
    alice = await register(client, "alice")
    async with state.sessionmaker() as session:
        await session.execute(delete(Genre))
        session.add(Genre(name="Genre 00"))
        await session.commit()

    async def statements(path: str) -> int:
        with count_queries(state.engine) as seen:
            response = await client.get(path)
        assert response.status_code == 200
        return len(seen)

    ids = await genre_ids(state)
    await add_tracks(state, alice, {ids["Genre 00"]: 2})
    one = (await statements("/api/genres"), await statements("/api/genres/popular?limit=100"))
    async with state.sessionmaker() as session:
        session.add_all(Genre(name=f"Genre {index:02d}") for index in range(1, 30))
        await session.commit()
    ids = await genre_ids(state)
    await add_tracks(state, alice, {genre_id: 1 for genre_id in ids.values()})
    thirty = (await statements("/api/genres"), await statements("/api/genres/popular?limit=100"))
    data = (await client.get("/api/genres")).json()["data"]
    assert len(data) == 30 and data[0]["tracks_count"] == 3
    assert one == thirty == (1, 1)


async def test_creating_a_genre_needs_a_token(client: httpx2.AsyncClient) -> None:
    response = await client.post("/api/genres", json={"name": "Ska"})
    assert response.status_code == 401
    assert_envelope_a_error(response.json(), "Token not provided")


async def test_create_genre(client: httpx2.AsyncClient) -> None:
    alice = await register(client, "alice")
    response = await client.post(
        "/api/genres", json={"name": "  Ska ", "description": "Offbeat", "color": "#A1b2C3"}, headers=alice.headers
    )
    assert response.status_code == 201
    body = response.json()
    assert body["success"] is True and body["message"] == "Genre created successfully"
    genre = body["data"]
    assert set(genre) == GENRE_KEYS
    assert (genre["name"], genre["description"], genre["color"], genre["tracks_count"]) == (
        "Ska",
        "Offbeat",
        "#A1b2C3",
        0,
    )
    shown = await client.get(f"/api/genres/{genre['id']}", headers=alice.headers)
    assert shown.status_code == 200 and shown.json()["data"] == genre
    default = await client.post("/api/genres", json={"name": "Polka", "color": None}, headers=alice.headers)
    assert default.status_code == 201
    assert default.json()["data"]["color"] == "#6366f1" and default.json()["data"]["description"] is None


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({}, {"name": ["The name field is required."]}),
        ({"name": "   "}, {"name": ["The name field is required."]}),
        ({"name": 12}, {"name": ["The name field must be a string."]}),
        ({"name": "x" * 101}, {"name": ["The name field must not be greater than 100 characters."]}),
        (
            {"name": "Ska", "description": "d" * 501},
            {"description": ["The description field must not be greater than 500 characters."]},
        ),
        ({"name": "Ska", "color": "red"}, {"color": ["The color field format is invalid."]}),
        ({"name": "Ska", "color": "#12345G"}, {"color": ["The color field format is invalid."]}),
        ({"name": "Ska", "color": "#1234567"}, {"color": ["The color field format is invalid."]}),
        ({"name": "Rock"}, {"name": ["The name has already been taken."]}),
        (
            {"name": "Rock", "color": "blue"},
            {"name": ["The name has already been taken."], "color": ["The color field format is invalid."]},
        ),
    ],
)
async def test_create_genre_validation(
    client: httpx2.AsyncClient, state: AppState, payload: dict[str, Any], expected: dict[str, list[str]]
) -> None:
    alice = await register(client, "alice")
    response = await client.post("/api/genres", json=payload, headers=alice.headers)
    assert response.status_code == 422
    body = response.json()
    assert body["success"] is False and body["message"] == "Validation failed"
    assert body["errors"] == expected
    async with state.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Genre)) == len(SEEDED_GENRES)


@pytest.mark.parametrize("genre", ["999999", "abc", "1.5", "-1", "0", "99999999999999999999999", "%20", "1e3"])
async def test_unknown_or_malformed_genre_ids_are_404(client: httpx2.AsyncClient, genre: str) -> None:
    alice = await register(client, "alice")
    for method in ("GET", "PUT", "DELETE"):
        response = await client.request(method, f"/api/genres/{genre}", json={"name": "X"}, headers=alice.headers)
        assert response.status_code == 404, (method, response.text)
        assert response.json() == {"success": False, "message": "Genre not found", "error": "Genre not found"}


async def test_genre_detail_update_and_delete_need_a_token(client: httpx2.AsyncClient, state: AppState) -> None:
    rock = (await genre_ids(state))["Rock"]
    for method in ("GET", "PUT", "DELETE"):
        for genre in (str(rock), "999999"):
            response = await client.request(method, f"/api/genres/{genre}", json={"name": "X"})
            assert response.status_code == 401, (method, genre)
    assert (await genre_ids(state))["Rock"] == rock


async def test_update_genre(client: httpx2.AsyncClient, state: AppState) -> None:
    alice = await register(client, "alice")
    ids = await genre_ids(state)
    await add_tracks(state, alice, {ids["Rock"]: 2})
    url = f"/api/genres/{ids['Rock']}"
    same_name = await client.put(url, json={"name": "Rock", "color": "#000000"}, headers=alice.headers)
    assert same_name.status_code == 200
    assert same_name.json()["message"] == "Genre updated successfully"
    data = same_name.json()["data"]
    assert (data["name"], data["color"], data["tracks_count"]) == ("Rock", "#000000", 2)
    assert data["description"] == dict((n, d) for n, d, _ in SEEDED_GENRES)["Rock"]

    renamed = await client.put(url, json={"name": "Hard Rock", "description": None}, headers=alice.headers)
    assert renamed.status_code == 200
    data = renamed.json()["data"]
    assert (data["name"], data["description"], data["color"]) == ("Hard Rock", None, "#000000")
    # Fields not sent are left alone; an empty color cannot clear a NOT NULL column.
    untouched = await client.put(url, json={"color": ""}, headers=alice.headers)
    assert untouched.status_code == 200 and untouched.json()["data"]["name"] == "Hard Rock"
    assert untouched.json()["data"]["color"] == "#000000"
    assert (await client.get(url, headers=alice.headers)).json()["data"]["name"] == "Hard Rock"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"name": "Jazz"}, {"name": ["The name has already been taken."]}),
        ({"name": ""}, {"name": ["The name field is required."]}),
        ({"name": "x" * 101}, {"name": ["The name field must not be greater than 100 characters."]}),
        ({"color": "#12"}, {"color": ["The color field format is invalid."]}),
    ],
)
async def test_update_genre_validation(
    client: httpx2.AsyncClient, state: AppState, payload: dict[str, Any], expected: dict[str, list[str]]
) -> None:
    alice = await register(client, "alice")
    rock = (await genre_ids(state))["Rock"]
    response = await client.put(f"/api/genres/{rock}", json=payload, headers=alice.headers)
    assert response.status_code == 422
    assert response.json()["errors"] == expected
    shown = (await client.get(f"/api/genres/{rock}", headers=alice.headers)).json()["data"]
    assert (shown["name"], shown["color"]) == ("Rock", "#4ecdc4")


async def test_a_genre_with_tracks_cannot_be_deleted(client: httpx2.AsyncClient, state: AppState) -> None:
    alice = await register(client, "alice")
    rock = (await genre_ids(state))["Rock"]
    await add_tracks(state, alice, {rock: 1})
    response = await client.delete(f"/api/genres/{rock}", headers=alice.headers)
    assert response.status_code == 409
    assert response.json() == {
        "success": False,
        "message": "Cannot delete genre with existing tracks",
        "error": "Genre has associated tracks",
    }
    assert (await client.get(f"/api/genres/{rock}", headers=alice.headers)).status_code == 200


async def test_delete_unused_genre(client: httpx2.AsyncClient, state: AppState) -> None:
    alice = await register(client, "alice")
    jazz = (await genre_ids(state))["Jazz"]
    response = await client.delete(f"/api/genres/{jazz}", headers=bearer(alice.token))
    assert response.status_code == 200
    assert response.json() == {"success": True, "message": "Genre deleted successfully"}
    assert (await client.get(f"/api/genres/{jazz}", headers=alice.headers)).status_code == 404
    assert "Jazz" not in await genre_ids(state)
    again = await client.delete(f"/api/genres/{jazz}", headers=alice.headers)
    assert again.status_code == 404


async def test_any_authenticated_user_may_manage_genres(client: httpx2.AsyncClient, state: AppState) -> None:
    """The original's rule, kept (no roles exist; see spotik.genres.service)."""
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    created = await client.post("/api/genres", json={"name": "Ska"}, headers=alice.headers)
    genre_id = created.json()["data"]["id"]
    assert (
        await client.put(f"/api/genres/{genre_id}", json={"name": "Ska Punk"}, headers=bob.headers)
    ).status_code == 200
    assert (await client.delete(f"/api/genres/{genre_id}", headers=bob.headers)).status_code == 200
    async with state.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(User)) == 2
