"""Votes (docs/api.md#votes, docs/decisions.md#d4, docs/decisions.md#d7): one vote per (track, user),
vote_score == count(track_votes) always."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import httpx2
import pytest

from spotik.events import DomainEvent
from spotik.state import AppState
from tests.events import capture_events
from tests.helpers import Account, register
from tests.integration.tracks_helpers import (
    create_room,
    join_room,
    long_wav,
    make_accounts,
    room_with_members,
    upload_ok,
    vote_counts,
)

ISO_MICROS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audio")


def vote_url(room_id: str, track_id: str) -> str:
    return f"/api/rooms/{room_id}/tracks/{track_id}/vote"


async def test_vote_and_unvote_are_idempotent(client: httpx2.AsyncClient, state: AppState, audio_dir: Path) -> None:
    room_id, (ana, ben) = await room_with_members(client, "ana", "ben")
    track = await upload_ok(client, ana, room_id, long_wav(audio_dir))
    url = vote_url(room_id, track["id"])

    steps = [
        (ana, "POST", {"message": "Vote added successfully", "vote_score": 1, "user_has_voted": True}),
        (ana, "POST", {"message": "Vote already exists", "vote_score": 1, "user_has_voted": True}),
        (ben, "POST", {"message": "Vote added successfully", "vote_score": 2, "user_has_voted": True}),
        (ana, "DELETE", {"message": "Vote removed successfully", "vote_score": 1, "user_has_voted": False}),
        (ana, "DELETE", {"message": "No vote to remove", "vote_score": 1, "user_has_voted": False}),
        (ana, "POST", {"message": "Vote added successfully", "vote_score": 2, "user_has_voted": True}),
        (ben, "DELETE", {"message": "Vote removed successfully", "vote_score": 1, "user_has_voted": False}),
        (ben, "DELETE", {"message": "No vote to remove", "vote_score": 1, "user_has_voted": False}),
    ]
    for account, method, expected in steps:
        response = await client.request(method, url, headers=account.headers)
        assert response.status_code == 200, response.text
        assert response.json() == expected
        assert await vote_counts(state, track["id"]) == (expected["vote_score"], expected["vote_score"])


async def test_uploader_may_vote_for_their_own_track(
    client: httpx2.AsyncClient, state: AppState, audio_dir: Path
) -> None:
    room_id, (ana,) = await room_with_members(client, "ana")
    track = await upload_ok(client, ana, room_id, long_wav(audio_dir))
    response = await client.post(vote_url(room_id, track["id"]), headers=ana.headers)
    assert response.json()["vote_score"] == 1
    listed = await client.get(f"/api/rooms/{room_id}/tracks", headers=ana.headers)
    assert listed.json()["tracks"][0]["user_has_voted"] is True


async def test_vote_authorization(client: httpx2.AsyncClient, state: AppState, audio_dir: Path) -> None:
    room_id, (ana,) = await room_with_members(client, "ana")
    eve = await register(client, "eve")
    track = await upload_ok(client, ana, room_id, long_wav(audio_dir))
    url = vote_url(room_id, track["id"])

    for method in ("POST", "DELETE"):
        response = await client.request(method, url)
        assert response.status_code == 401
        assert response.json() == {"success": False, "message": "Token not provided", "error": "Token absent"}
    response = await client.post(url, headers=eve.headers)
    assert response.status_code == 403
    assert response.json() == {"error": "You must be a participant of this room to vote"}
    response = await client.delete(url, headers=eve.headers)
    assert response.status_code == 403
    assert response.json() == {"error": "You must be a participant of this room to remove votes"}

    other_room = await create_room(client, ana, "other")
    for method in ("POST", "DELETE"):
        response = await client.request(method, vote_url(other_room, track["id"]), headers=ana.headers)
        assert response.status_code == 404
        assert response.json() == {"error": "Track does not belong to this room"}
        for bad in (str(uuid.uuid4()), "not-a-uuid"):
            response = await client.request(method, vote_url(room_id, bad), headers=ana.headers)
            assert response.status_code == 404
            assert response.json() == {"error": "Track not found"}
    assert await vote_counts(state, track["id"]) == (0, 0)

    await join_room(client, room_id, eve)
    assert (await client.post(url, headers=eve.headers)).json()["vote_score"] == 1


def by_type(events: list[DomainEvent]) -> list[str]:
    return [event.type for event in events]


async def test_vote_events_only_on_real_changes(client: httpx2.AsyncClient, state: AppState, audio_dir: Path) -> None:
    room_id, (ana, ben) = await room_with_members(client, "ana", "ben")
    track = await upload_ok(client, ana, room_id, long_wav(audio_dir), "only.wav")
    url = vote_url(room_id, track["id"])

    with capture_events(state) as events:
        await client.post(url, headers=ben.headers)
    assert by_type(events) == ["track_voted"]  # a single track: its place cannot change
    voted = events[0]
    assert voted.room_id == uuid.UUID(room_id)
    data = voted.data
    assert data["room_id"] == room_id
    assert data["vote_added"] is True and data["new_vote_score"] == 1
    assert data["track"]["id"] == track["id"] and data["track"]["vote_score"] == 1
    assert data["track"]["original_name"] == "only.wav" and data["track"]["filename"] == track["filename"]
    assert data["user"] == data["voter"] == {"id": ben.id, "username": "ben"}
    assert ISO_MICROS_Z.match(data["timestamp"])

    with capture_events(state) as events:
        await client.post(url, headers=ben.headers)  # already voted
        await client.delete(url, headers=ana.headers)  # never voted
    assert events == []

    with capture_events(state) as events:
        await client.delete(url, headers=ben.headers)
    assert by_type(events) == ["track_voted", "track_unvoted"]
    for event in events:
        assert event.data["vote_added"] is False and event.data["new_vote_score"] == 0
        assert event.data["track"]["vote_score"] == 0 and event.data["voter"]["id"] == ben.id


async def test_queue_reordered_when_a_vote_moves_a_track(
    client: httpx2.AsyncClient, state: AppState, audio_dir: Path
) -> None:
    room_id, (ana, ben, cat) = await room_with_members(client, "ana", "ben", "cat")
    wav = long_wav(audio_dir)
    first = await upload_ok(client, ana, room_id, wav, "first.wav")
    second = await upload_ok(client, ana, room_id, wav, "second.wav")
    third = await upload_ok(client, ana, room_id, wav, "third.wav")

    # first is already ahead: a vote for it changes nothing in the order.
    with capture_events(state) as events:
        await client.post(vote_url(room_id, first["id"]), headers=ben.headers)
    assert by_type(events) == ["track_voted"]

    # third (0 votes, newest) passes second (0 votes), which it shared a score with.
    with capture_events(state) as events:
        await client.post(vote_url(room_id, third["id"]), headers=ben.headers)
    assert by_type(events) == ["track_voted", "queue_reordered"]
    reordered = events[1].data
    assert reordered["reason"] == "vote_added"
    assert reordered["affected_track"]["id"] == third["id"]
    assert [t["id"] for t in reordered["updated_queue"]] == [first["id"], third["id"], second["id"]]
    assert [t["vote_score"] for t in reordered["updated_queue"]] == [1, 1, 0]

    # third (1 vote) now passes first (1 vote, older)? No: equal scores keep upload order, first stays ahead.
    # A second vote for third does move it to the top.
    with capture_events(state) as events:
        await client.post(vote_url(room_id, third["id"]), headers=cat.headers)
    assert by_type(events) == ["track_voted", "queue_reordered"]
    assert [t["id"] for t in events[1].data["updated_queue"]] == [third["id"], first["id"], second["id"]]

    # Removing one of third's votes drops it behind first again (equal scores, first is older).
    with capture_events(state) as events:
        await client.delete(vote_url(room_id, third["id"]), headers=cat.headers)
    assert by_type(events) == ["track_voted", "track_unvoted", "queue_reordered"]
    assert events[2].data["reason"] == "vote_removed"
    assert [t["id"] for t in events[2].data["updated_queue"]] == [first["id"], third["id"], second["id"]]

    # Removing the last vote of second changes nothing: it has none. Removing first's puts it behind third.
    with capture_events(state) as events:
        await client.delete(vote_url(room_id, first["id"]), headers=ben.headers)
    assert by_type(events) == ["track_voted", "track_unvoted", "queue_reordered"]
    assert [t["id"] for t in events[2].data["updated_queue"]] == [third["id"], first["id"], second["id"]]

    listed = await client.get(f"/api/rooms/{room_id}/tracks", headers=ana.headers)
    assert [t["id"] for t in listed.json()["tracks"]] == [third["id"], first["id"], second["id"]]


async def test_concurrent_votes_keep_the_score_equal_to_the_votes(
    client: httpx2.AsyncClient, state: AppState, audio_dir: Path
) -> None:
    """50 users vote, re-vote, unvote and vote again on one track, all at once, each with its own client.

    Each request gets its own connection from the app's pool, so on PostgreSQL the INSERT … ON CONFLICT and
    ``vote_score = vote_score ± 1`` really run concurrently (SQLite serialises writers, which must not fail either).
    """
    room_id, (admin,) = await room_with_members(client, "admin")
    track = await upload_ok(client, admin, room_id, long_wav(audio_dir))
    voters = await make_accounts(state, 50, "voter")
    await join_room(client, room_id, *voters)
    url = vote_url(room_id, track["id"])
    transport = client._transport

    async def session_of(account: Account, methods: list[str]) -> list[int]:
        async with httpx2.AsyncClient(
            transport=transport, base_url="http://testserver", event_hooks=client.event_hooks
        ) as own:
            statuses = []
            for method in methods:
                response = await own.request(method, url, headers=account.headers)
                statuses.append(response.status_code)
            return statuses

    # Round 1: everybody votes twice, unvotes twice and votes again (net: one vote each).
    results = await asyncio.gather(*(session_of(v, ["POST", "POST", "DELETE", "DELETE", "POST"]) for v in voters))
    assert all(statuses == [200] * 5 for statuses in results)
    assert await vote_counts(state, track["id"]) == (50, 50)

    # Round 2: the even-numbered half unvote while the others vote again (no-ops), all at once.
    results = await asyncio.gather(
        *(session_of(v, ["DELETE"] if i % 2 == 0 else ["POST"]) for i, v in enumerate(voters))
    )
    assert all(statuses == [200] for statuses in results)
    assert await vote_counts(state, track["id"]) == (25, 25)

    # Round 3: the same user hammering vote and unvote in parallel still leaves score == count.
    hammer = voters[1]
    await asyncio.gather(*(session_of(hammer, ["DELETE" if i % 2 else "POST"]) for i in range(20)))
    score, count = await vote_counts(state, track["id"])
    assert score == count and count in (24, 25)

    listed = await client.get(f"/api/rooms/{room_id}/tracks", headers=admin.headers)
    assert listed.json()["tracks"][0]["vote_score"] == score
