"""Playback endpoints (docs/api.md#playback, docs/api.md#playback-clock, docs/decisions.md#d2, docs/decisions.md#d4):
authorization, preconditions, clock arithmetic, events.

Rooms, memberships and tracks are inserted as rows (playback needs no audio files); users come from the API.
Positions are checked against the timestamps the server stored, never against sleeps.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from spotik.db.base import utcnow
from spotik.events import DomainEvent
from spotik.playback import service
from spotik.reads import Invalidating, room_tag
from spotik.rooms.models import Room, RoomParticipant
from spotik.state import AppState
from spotik.timefmt import iso
from spotik.tracks.models import Track
from spotik.tracks.repository import queue_tracks
from tests.events import capture_events
from tests.helpers import Account, register

ISO_MICROS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
LONG = 600  # seconds: a track that cannot end during a test
BASE_EVENT_FIELDS = {
    "room_id",
    "server_time",
    "timestamp",
    "is_playing",
    "current_track",
    "playback_started_at",
    "playback_paused_at",
}
FORBIDDEN_CONTROL = {
    "success": False,
    "message": "Only room administrator can control playback",
    "error": "Insufficient permissions",
}


# --- row helpers (shared with test_auto_advance) -----------------------------------------------------------


def parse_iso(value: str) -> datetime:
    assert ISO_MICROS_Z.match(value), value
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


async def seed_room(
    sessionmaker: async_sessionmaker[AsyncSession],
    admin_id: uuid.UUID,
    members: Sequence[uuid.UUID] = (),
    *,
    name: str = "Listening room",
) -> uuid.UUID:
    async with sessionmaker() as session:
        room = Room(name=name, administrator_id=admin_id)
        session.add(room)
        await session.flush()
        for user_id in (admin_id, *members):
            session.add(RoomParticipant(room_id=room.id, user_id=user_id))
        await session.commit()
        return room.id


async def seed_track(
    sessionmaker: async_sessionmaker[AsyncSession],
    room_id: uuid.UUID,
    uploader_id: uuid.UUID,
    *,
    duration: int = LONG,
    score: int = 0,
    created_at: datetime | None = None,
    played_at: datetime | None = None,
    name: str = "song.mp3",
) -> uuid.UUID:
    filename = f"{uuid.uuid4()}.mp3"
    async with sessionmaker() as session:
        track = Track(
            room_id=room_id,
            uploader_id=uploader_id,
            filename=filename,
            original_name=name,
            file_path=f"tracks/{filename}",
            duration_seconds=duration,
            file_size_bytes=1234,
            mime_type="audio/mpeg",
            vote_score=score,
            played_at=played_at,
            created_at=(created_at or utcnow()).replace(microsecond=0),
        )
        session.add(track)
        await session.commit()
        return track.id


async def set_playback(
    sessionmaker: async_sessionmaker[AsyncSession],
    room_id: uuid.UUID,
    *,
    track_id: uuid.UUID | None,
    started_at: datetime | None,
    paused_at: datetime | None = None,
    is_playing: bool = True,
    cache: Invalidating | None = None,
) -> None:
    """Set the room's playback columns behind the services' back; with ``cache``, drop what the cache holds of the
    room, as a service's event would (docs/cache.md#invalidation-domain-events--tags)."""
    async with sessionmaker() as session:
        await session.execute(
            update(Room)
            .where(Room.id == room_id)
            .values(
                current_track_id=track_id,
                playback_started_at=started_at,
                playback_paused_at=paused_at,
                is_playing=is_playing,
            )
        )
        await session.commit()
    if cache is not None:
        await cache.invalidate_tags(room_tag(room_id))


async def room_row(sessionmaker: async_sessionmaker[AsyncSession], room_id: uuid.UUID) -> Room:
    async with sessionmaker() as session:
        room = await session.scalar(select(Room).where(Room.id == room_id))
        assert room is not None
        return room


async def track_row(sessionmaker: async_sessionmaker[AsyncSession], track_id: uuid.UUID) -> Track:
    async with sessionmaker() as session:
        track = await session.scalar(select(Track).where(Track.id == track_id))
        assert track is not None
        return track


def only(events: Sequence[DomainEvent], event_type: str) -> list[DomainEvent]:
    return [event for event in events if event.type == event_type]


# --- fixtures ---------------------------------------------------------------------------------------------------


@dataclass
class World:
    admin: Account
    member: Account
    outsider: Account
    room_id: uuid.UUID
    state: AppState

    @property
    def sessionmaker(self) -> async_sessionmaker[AsyncSession]:
        return self.state.sessionmaker

    @property
    def admin_id(self) -> uuid.UUID:
        return uuid.UUID(self.admin.id)

    def url(self, path: str) -> str:
        return f"/api/rooms/{self.room_id}{path}"

    async def track(self, **kwargs: Any) -> uuid.UUID:
        return await seed_track(self.sessionmaker, self.room_id, self.admin_id, **kwargs)

    async def playing(self, track_id: uuid.UUID, *, started: datetime | None = None) -> None:
        await self.set_playback(track_id=track_id, started_at=started or utcnow())

    async def set_playback(self, **columns: Any) -> None:
        await set_playback(self.sessionmaker, self.room_id, cache=self.state.cache, **columns)

    async def room(self) -> Room:
        return await room_row(self.sessionmaker, self.room_id)


@pytest.fixture
async def world(client: httpx2.AsyncClient, state: AppState) -> World:
    admin = await register(client, "admin")
    member = await register(client, "member")
    outsider = await register(client, "outsider")
    room_id = await seed_room(state.sessionmaker, uuid.UUID(admin.id), [uuid.UUID(member.id)])
    return World(admin, member, outsider, room_id, state)


# --- authorization ----------------------------------------------------------------------------------------------

CONTROLS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/tracks/{track}/play", None),
    ("POST", "/playback/pause", None),
    ("POST", "/playback/resume", None),
    ("POST", "/playback/skip", None),
    ("POST", "/playback/stop", None),
    ("POST", "/playback/seek", {"position": 1}),
]
ALL_ENDPOINTS = [*CONTROLS, ("GET", "/playback/status", None)]


@pytest.mark.parametrize(("method", "path", "body"), ALL_ENDPOINTS)
async def test_every_endpoint_needs_a_token(
    client: httpx2.AsyncClient, world: World, method: str, path: str, body: dict[str, Any] | None
) -> None:
    track_id = await world.track()
    response = await client.request(method, world.url(path.format(track=track_id)), json=body)
    assert response.status_code == 401
    assert response.json() == {"success": False, "message": "Token not provided", "error": "Token absent"}


@pytest.mark.parametrize(("method", "path", "body"), CONTROLS)
@pytest.mark.parametrize("who", ["member", "outsider"])
async def test_only_the_administrator_controls_playback(
    client: httpx2.AsyncClient, world: World, who: str, method: str, path: str, body: dict[str, Any] | None
) -> None:
    track_id = await world.track()
    started = utcnow() - timedelta(seconds=5)
    await world.playing(track_id, started=started)
    account = world.member if who == "member" else world.outsider
    with capture_events(world.state) as events:
        response = await client.request(
            method, world.url(path.format(track=track_id)), json=body, headers=account.headers
        )
    assert response.status_code == 403
    assert response.json() == FORBIDDEN_CONTROL
    room = await world.room()
    assert (room.current_track_id, room.playback_started_at, room.is_playing) == (track_id, started, True)
    assert events == []


async def test_status_is_for_participants_only(client: httpx2.AsyncClient, world: World) -> None:
    response = await client.get(world.url("/playback/status"), headers=world.outsider.headers)
    assert response.status_code == 403
    assert response.json() == {
        "success": False,
        "message": "You must be a participant of this room to view playback status",
        "error": "Not a participant",
    }
    for account in (world.member, world.admin):
        response = await client.get(world.url("/playback/status"), headers=account.headers)
        assert response.status_code == 200, response.text


@pytest.mark.parametrize(("method", "path", "body"), ALL_ENDPOINTS)
@pytest.mark.parametrize("room", ["00000000-0000-4000-8000-000000000000", "not-a-room"])
async def test_unknown_room_is_404(
    client: httpx2.AsyncClient, world: World, room: str, method: str, path: str, body: dict[str, Any] | None
) -> None:
    track_id = await world.track()
    url = f"/api/rooms/{room}{path.format(track=track_id)}"
    response = await client.request(method, url, json=body, headers=world.admin.headers)
    assert response.status_code == 404
    assert response.json()["success"] is False


async def test_play_refuses_tracks_outside_the_room(client: httpx2.AsyncClient, world: World) -> None:
    other_room = await seed_room(world.sessionmaker, world.admin_id, name="Other room")
    foreign = await seed_track(world.sessionmaker, other_room, world.admin_id)
    for track in (str(foreign), str(uuid.uuid4()), "not-a-track", "1"):
        response = await client.post(world.url(f"/tracks/{track}/play"), headers=world.admin.headers)
        assert response.status_code == 404, track
        assert response.json() == {
            "success": False,
            "message": "Track does not belong to this room",
            "error": "Invalid track",
        }
    room = await world.room()
    assert room.current_track_id is None and room.is_playing is False


# --- preconditions ------------------------------------------------------------------------------------------------


async def post(client: httpx2.AsyncClient, world: World, path: str, body: dict[str, Any] | None = None) -> Any:
    return await client.post(world.url(path), json=body, headers=world.admin.headers)


async def test_idle_room_preconditions(client: httpx2.AsyncClient, world: World) -> None:
    with capture_events(world.state) as events:
        expectations = [
            ("/playback/pause", None, "No track is currently playing", "No active playback"),
            ("/playback/resume", None, "No track is currently paused", "No paused playback"),
            ("/playback/skip", None, "No track is currently playing", "No active track"),
            ("/playback/seek", {"position": 1}, "No track is currently playing", "No active track"),
        ]
        for path, body, message, error in expectations:
            response = await post(client, world, path, body)
            assert response.status_code == 400, path
            assert response.json() == {"success": False, "message": message, "error": error}
        stop = await post(client, world, "/playback/stop")
    assert stop.status_code == 200
    assert stop.json()["message"] == "Playback stopped successfully"
    assert set(stop.json()["data"]) == {"server_time"}
    assert events == []  # nothing changed, nothing announced


async def test_pause_twice_and_resume_while_playing_are_400(client: httpx2.AsyncClient, world: World) -> None:
    await world.playing(await world.track())
    resume = await post(client, world, "/playback/resume")
    assert resume.status_code == 400 and resume.json()["error"] == "No paused playback"
    assert (await post(client, world, "/playback/pause")).status_code == 200
    again = await post(client, world, "/playback/pause")
    assert again.status_code == 400 and again.json()["error"] == "No active playback"


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        (None, {"position": ["The position field is required."]}),
        ({}, {"position": ["The position field is required."]}),
        ({"position": "abc"}, {"position": ["The position field must be a number."]}),
        ({"position": True}, {"position": ["The position field must be a number."]}),
        ({"position": [1]}, {"position": ["The position field must be a number."]}),
        ({"position": "nan"}, {"position": ["The position field must be a number."]}),
    ],
)
async def test_seek_validates_position(
    client: httpx2.AsyncClient, world: World, body: dict[str, Any] | None, errors: dict[str, list[str]]
) -> None:
    await world.playing(await world.track())
    response = await post(client, world, "/playback/seek", body)
    assert response.status_code == 422
    assert response.json() == {"success": False, "message": "Validation failed", "errors": errors}


async def test_seek_refuses_positions_outside_the_track(client: httpx2.AsyncClient, world: World) -> None:
    started = utcnow() - timedelta(seconds=3)
    track_id = await world.track(duration=180)
    await world.playing(track_id, started=started)
    for position, message in [
        (-0.001, "Position cannot be negative"),
        ("-5", "Position cannot be negative"),
        (180.001, "Position exceeds track duration"),
        ("1e999", "Position exceeds track duration"),
    ]:
        response = await post(client, world, "/playback/seek", {"position": position})
        assert response.status_code == 400, position
        assert response.json() == {"success": False, "message": message, "error": "Invalid position"}
    assert (await world.room()).playback_started_at == started


# --- transitions and arithmetic -----------------------------------------------------------------------------------


async def test_play_starts_the_track_now(client: httpx2.AsyncClient, world: World, state: AppState) -> None:
    track_id = await world.track(name="first.mp3")
    before = utcnow()
    with capture_events(state) as events:
        response = await client.post(world.url(f"/tracks/{track_id}/play"), headers=world.admin.headers)
    after = utcnow()
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and body["message"] == "Playback started successfully"
    data = body["data"]
    assert set(data) == {"track_id", "started_at", "server_time"}
    assert data["track_id"] == str(track_id)
    started_at = parse_iso(data["started_at"])
    assert before <= started_at <= parse_iso(data["server_time"]) <= after
    room = await world.room()
    assert room.current_track_id == track_id and room.is_playing is True and room.playback_paused_at is None
    assert room.playback_started_at == started_at  # stored to the microsecond (docs/decisions.md#d2)
    [event] = events
    assert event.type == "playback_started" and event.room_id == world.room_id
    assert BASE_EVENT_FIELDS <= set(event.data)
    assert event.data["track"]["id"] == str(track_id) and event.data["track"]["file_path"].startswith("tracks/")
    assert event.data["started_at"] == event.data["playback_started_at"] == data["started_at"]
    assert event.data["position"] == 0 and event.data["current_position"] == 0
    assert event.data["is_playing"] is True and event.data["reason"] == "administrator_play"
    assert event.data["previous_track"] is None


async def test_play_interrupts_without_marking_played(client: httpx2.AsyncClient, world: World) -> None:
    first = await world.track(name="first.mp3")
    second = await world.track(name="second.mp3")
    await world.playing(first, started=utcnow() - timedelta(seconds=30))
    with capture_events(world.state) as events:
        response = await client.post(world.url(f"/tracks/{second}/play"), headers=world.admin.headers)
    assert response.status_code == 200
    assert (await world.room()).current_track_id == second
    assert (await track_row(world.sessionmaker, first)).played_at is None
    async with world.sessionmaker() as session:
        queue = [track.id for track in await queue_tracks(session, world.room_id)]
    assert set(queue) == {first, second}  # the interrupted track stays in the queue
    [event] = events
    assert event.data["previous_track"]["id"] == str(first) and event.data["track"]["id"] == str(second)


async def test_a_played_track_can_be_replayed(client: httpx2.AsyncClient, world: World) -> None:
    track_id = await world.track(played_at=utcnow() - timedelta(minutes=5))
    response = await client.post(world.url(f"/tracks/{track_id}/play"), headers=world.admin.headers)
    assert response.status_code == 200
    assert (await track_row(world.sessionmaker, track_id)).played_at is None
    assert (await world.room()).current_track_id == track_id


async def test_pause_position_comes_from_the_virtual_start(
    client: httpx2.AsyncClient, world: World, state: AppState
) -> None:
    track_id = await world.track()
    virtual_start = utcnow() - timedelta(seconds=75.5)
    await world.playing(track_id, started=virtual_start)
    before = utcnow()
    with capture_events(state) as events:
        response = await post(client, world, "/playback/pause")
    after = utcnow()
    assert response.status_code == 200
    assert response.json()["message"] == "Playback paused successfully"
    data = response.json()["data"]
    assert set(data) == {"track_id", "paused_at", "position", "server_time"}
    room = await world.room()
    assert room.is_playing is False and room.playback_started_at == virtual_start
    assert room.playback_paused_at is not None and iso(room.playback_paused_at) == data["paused_at"]
    stored = (room.playback_paused_at - virtual_start).total_seconds()
    assert data["position"] == pytest.approx(stored, abs=1e-3)
    assert (before - virtual_start).total_seconds() <= data["position"] <= (after - virtual_start).total_seconds()
    [event] = events
    assert event.type == "playback_paused" and BASE_EVENT_FIELDS <= set(event.data)
    assert event.data["paused_at"] == event.data["playback_paused_at"] == data["paused_at"]
    assert event.data["position"] == event.data["current_position"] == data["position"]
    assert event.data["playback_started_at"] == iso(virtual_start) and event.data["is_playing"] is False
    assert event.data["track"]["id"] == str(track_id)


async def test_resume_shifts_the_virtual_start_by_the_pause(
    client: httpx2.AsyncClient, world: World, state: AppState
) -> None:
    track_id = await world.track()
    now = utcnow()
    virtual_start, paused_at = now - timedelta(seconds=100), now - timedelta(seconds=40)  # paused at 60 s
    await world.set_playback(track_id=track_id, started_at=virtual_start, paused_at=paused_at, is_playing=False)
    with capture_events(state) as events:
        response = await post(client, world, "/playback/resume")
    assert response.status_code == 200
    assert response.json()["message"] == "Playback resumed successfully"
    data = response.json()["data"]
    assert set(data) == {"track_id", "resumed_at", "position", "server_time"}
    assert data["track_id"] == str(track_id) and data["position"] == 60.0
    resumed_at = parse_iso(data["resumed_at"])
    room = await world.room()
    assert room.is_playing is True and room.playback_paused_at is None
    # S := S + (R − P): the intended semantics, not Laravel's sign bug (docs/decisions.md#b13).
    assert room.playback_started_at == virtual_start + (resumed_at - paused_at)
    status = (await client.get(world.url("/playback/status"), headers=world.member.headers)).json()["data"]
    assert 60.0 <= status["position"] < 60.0 + (parse_iso(status["server_time"]) - resumed_at).total_seconds() + 1e-3
    [event] = events
    assert event.type == "playback_resumed" and BASE_EVENT_FIELDS <= set(event.data)
    # The client adds `position` to now − playback_started_at: it must get the resume instant
    # (docs/api.md#position-arithmetic).
    assert event.data["resumed_at"] == event.data["playback_started_at"] == data["resumed_at"]
    assert event.data["position"] == 60.0 and event.data["is_playing"] is True
    assert event.data["playback_paused_at"] is None


async def test_seek_while_playing_and_while_paused(client: httpx2.AsyncClient, world: World, state: AppState) -> None:
    track_id = await world.track(duration=180)
    await world.playing(track_id, started=utcnow() - timedelta(seconds=10))
    with capture_events(state) as events:
        response = await post(client, world, "/playback/seek", {"position": 42.25})
    assert response.status_code == 200
    assert response.json()["message"] == "Playback seeked successfully"
    data = response.json()["data"]
    assert set(data) == {"track_id", "position", "seeked_at", "server_time", "is_playing"}
    assert data["position"] == 42.25 and data["is_playing"] is True and data["track_id"] == str(track_id)
    room = await world.room()
    assert room.playback_started_at == parse_iso(data["seeked_at"]) - timedelta(seconds=42.25)
    [event] = events
    assert event.type == "playback_seeked" and BASE_EVENT_FIELDS <= set(event.data)
    assert event.data["position"] == 42.25 and event.data["seeked_at"] == data["seeked_at"]

    assert (await post(client, world, "/playback/pause")).status_code == 200
    response = await post(client, world, "/playback/seek", {"position": "10"})
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["is_playing"] is False and data["position"] == 10.0
    room = await world.room()
    assert room.is_playing is False and room.playback_paused_at == parse_iso(data["seeked_at"])
    assert room.playback_paused_at - room.playback_started_at == timedelta(seconds=10)
    # Seeking to the very end is allowed (the scheduler then moves on); resuming would play from 10 s.
    assert (await post(client, world, "/playback/seek", {"position": 180})).status_code == 200


async def test_status_reports_every_state(client: httpx2.AsyncClient, world: World) -> None:
    url = world.url("/playback/status")
    idle = await client.get(url, headers=world.member.headers)
    assert idle.status_code == 200
    assert idle.json()["message"] == "Playback status retrieved successfully"
    data = idle.json()["data"]
    assert set(data) == {"is_playing", "current_track", "position", "started_at", "paused_at", "server_time"}
    assert data["is_playing"] is False and data["current_track"] is None and data["position"] is None
    assert data["started_at"] is None and data["paused_at"] is None and ISO_MICROS_Z.match(data["server_time"])

    track_id = await world.track(duration=200, name="Status.mp3")
    virtual_start = utcnow() - timedelta(seconds=12.5)
    await world.playing(track_id, started=virtual_start)
    data = (await client.get(url, headers=world.member.headers)).json()["data"]
    assert data["is_playing"] is True and data["started_at"] == iso(virtual_start) and data["paused_at"] is None
    assert set(data["current_track"]) == {"id", "filename", "original_name", "duration_seconds", "file_path"}
    assert data["current_track"]["id"] == str(track_id) and data["current_track"]["duration_seconds"] == 200
    expected = (parse_iso(data["server_time"]) - virtual_start).total_seconds()
    assert data["position"] == pytest.approx(expected, abs=0.05)

    paused_at = virtual_start + timedelta(seconds=33.333333)
    await world.set_playback(track_id=track_id, started_at=virtual_start, paused_at=paused_at, is_playing=False)
    data = (await client.get(url, headers=world.member.headers)).json()["data"]
    assert data["is_playing"] is False and data["position"] == 33.333333 and data["paused_at"] == iso(paused_at)


async def test_skip_marks_played_and_follows_score_then_age(
    client: httpx2.AsyncClient, world: World, state: AppState
) -> None:
    base = utcnow() - timedelta(hours=1)
    current = await world.track(created_at=base, name="current")
    low_old = await world.track(created_at=base + timedelta(seconds=1), name="low-old")
    top_new = await world.track(created_at=base + timedelta(seconds=3), score=2, name="top-new")
    top_old = await world.track(created_at=base + timedelta(seconds=2), score=2, name="top-old")
    await world.playing(current)

    with capture_events(state) as events:
        order = []
        for _ in range(3):
            response = await post(client, world, "/playback/skip")
            assert response.status_code == 200
            assert response.json()["message"] == "Track skipped successfully"
            data = response.json()["data"]
            assert set(data) == {"skipped_track_id", "next_track_id", "server_time"}
            order.append((data["skipped_track_id"], data["next_track_id"]))
        last = (await post(client, world, "/playback/skip")).json()["data"]
    assert order == [
        (str(current), str(top_old)),
        (str(top_old), str(top_new)),
        (str(top_new), str(low_old)),
    ]
    assert last["skipped_track_id"] == str(low_old) and last["next_track_id"] is None
    for track_id in (current, top_old, top_new, low_old):
        assert (await track_row(world.sessionmaker, track_id)).played_at is not None
    room = await world.room()
    assert (room.current_track_id, room.playback_started_at, room.playback_paused_at, room.is_playing) == (
        None,
        None,
        None,
        False,
    )
    assert [event.type for event in events] == ["track_skipped", "playback_started"] * 3 + [
        "track_skipped",
        "playback_stopped",
    ]
    skipped, started = events[0].data, events[1].data
    assert BASE_EVENT_FIELDS <= set(skipped)
    assert skipped["skipped_track"]["id"] == skipped["previous_track"]["id"] == str(current)
    assert skipped["next_track"]["id"] == skipped["new_track"]["id"] == str(top_old)
    assert skipped["started_at"] == started["started_at"] and started["reason"] == "track_skipped"
    assert started["previous_track"]["id"] == str(current)
    assert events[-2].data["next_track"] is None and events[-2].data["is_playing"] is False
    assert events[-1].data["reason"] == "no_more_tracks" and events[-1].data["previous_track"]["id"] == str(low_old)
    async with world.sessionmaker() as session:
        assert list(await queue_tracks(session, world.room_id)) == []  # played tracks left the queue


async def test_skip_from_paused_plays_the_next_track(client: httpx2.AsyncClient, world: World) -> None:
    first, second = await world.track(), await world.track()
    now = utcnow()
    await world.set_playback(track_id=first, started_at=now - timedelta(seconds=9), paused_at=now, is_playing=False)
    data = (await post(client, world, "/playback/skip")).json()["data"]
    assert data["next_track_id"] == str(second)
    room = await world.room()
    assert room.current_track_id == second and room.is_playing is True and room.playback_paused_at is None


async def test_stop_resets_the_room_and_keeps_the_track_queued(
    client: httpx2.AsyncClient, world: World, state: AppState
) -> None:
    track_id = await world.track()
    await world.playing(track_id, started=utcnow() - timedelta(seconds=20))
    with capture_events(state) as events:
        response = await post(client, world, "/playback/stop")
    assert response.status_code == 200 and set(response.json()["data"]) == {"server_time"}
    room = await world.room()
    assert (room.current_track_id, room.playback_started_at, room.playback_paused_at, room.is_playing) == (
        None,
        None,
        None,
        False,
    )
    assert (await track_row(world.sessionmaker, track_id)).played_at is None
    [event] = events
    assert event.type == "playback_stopped" and BASE_EVENT_FIELDS <= set(event.data)
    assert event.data["reason"] == "administrator_stop" and event.data["is_playing"] is False
    assert event.data["previous_track"]["id"] == str(track_id) and event.data["current_track"] is None
    assert ISO_MICROS_Z.match(event.data["stopped_at"])


async def test_a_session_publishes_one_event_per_transition_in_order(
    client: httpx2.AsyncClient, world: World, state: AppState
) -> None:
    first, second = await world.track(), await world.track()
    with capture_events(state) as events:
        assert (await client.post(world.url(f"/tracks/{first}/play"), headers=world.admin.headers)).status_code == 200
        for path, body in [
            ("/playback/pause", None),
            ("/playback/resume", None),
            ("/playback/seek", {"position": 5}),
            ("/playback/skip", None),
            ("/playback/stop", None),
        ]:
            assert (await post(client, world, path, body)).status_code == 200, path
    assert [event.type for event in events] == [
        "playback_started",
        "playback_paused",
        "playback_resumed",
        "playback_seeked",
        "track_skipped",
        "playback_started",
        "playback_stopped",
    ]
    assert events[5].data["track"]["id"] == str(second)
    for event in events:
        assert event.room_id == world.room_id and event.data["room_id"] == str(world.room_id)
        assert BASE_EVENT_FIELDS <= set(event.data)
        assert ISO_MICROS_Z.match(event.data["server_time"]) and ISO_MICROS_Z.match(event.data["timestamp"])


async def test_concurrent_pauses_apply_once(client: httpx2.AsyncClient, world: World, state: AppState) -> None:
    await world.playing(await world.track(), started=utcnow() - timedelta(seconds=30))
    with capture_events(state) as events:
        responses = await asyncio.gather(*(post(client, world, "/playback/pause") for _ in range(6)))
    assert sorted(response.status_code for response in responses) == [200] + [400] * 5
    assert [event.type for event in events] == ["playback_paused"]


async def test_concurrent_skips_never_advance_twice_per_track(
    client: httpx2.AsyncClient, world: World, state: AppState
) -> None:
    base = utcnow() - timedelta(hours=1)
    tracks = [await world.track(created_at=base + timedelta(seconds=index)) for index in range(8)]
    await world.playing(tracks[0])
    with capture_events(state) as events:
        responses = await asyncio.gather(*(post(client, world, "/playback/skip") for _ in range(4)))
    assert all(response.status_code == 200 for response in responses)
    skipped = [event.data["skipped_track"]["id"] for event in only(events, "track_skipped")]
    started = [event.data["track"]["id"] for event in only(events, "playback_started")]
    played = [track for track in tracks if (await track_row(world.sessionmaker, track)).played_at is not None]
    # Every advance is announced once, follows queue order, and leaves exactly one current track.
    assert 1 <= len(skipped) <= 4 and len(set(skipped)) == len(skipped)
    assert [str(track) for track in played] == skipped == [str(track) for track in tracks[: len(skipped)]]
    assert started == [str(track) for track in tracks[1 : len(skipped) + 1]]
    assert (await world.room()).current_track_id == tracks[len(skipped)]


async def test_upload_into_an_idle_room_starts_playback(world: World, state: AppState) -> None:
    track_id = await world.track()
    async with state.sessionmaker() as session:
        track = await session.get(Track, track_id)
        assert track is not None
        with capture_events(state) as events:
            assert await service.start_if_idle(session, state.events, room_id=world.room_id, track=track) is True
            assert await service.start_if_idle(session, state.events, room_id=world.room_id, track=track) is False
    room = await world.room()
    assert room.current_track_id == track_id and room.is_playing is True
    [event] = events
    assert event.type == "playback_started" and event.data["auto_started"] is True
    assert event.data["reason"] == "track_uploaded" and event.data["started_at"] == iso(room.playback_started_at)


async def test_removing_the_current_track_stops_playback(world: World, state: AppState) -> None:
    current, other = await world.track(), await world.track()
    await world.playing(current)
    async with state.sessionmaker() as session:
        track = await session.get(Track, current)
        not_current = await session.get(Track, other)
        assert track is not None and not_current is not None
        assert await service.stop_for_removed_track(session, room_id=world.room_id, track=not_current) is None
        event = await service.stop_for_removed_track(session, room_id=world.room_id, track=track)
        await session.commit()
    assert event is not None and event.type == "playback_stopped"
    assert event.data["reason"] == "track_removed" and event.data["previous_track"]["id"] == str(current)
    room = await world.room()
    assert room.current_track_id is None and room.is_playing is False
