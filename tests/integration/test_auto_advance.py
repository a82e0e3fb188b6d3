"""Server-driven playback (docs/decisions.md#d5): the scheduler advances rooms whose track has ended.

Every wait is for an outcome — an event seen on a bus subscriber, or a number of completed scheduler passes —
bounded by ``asyncio.wait_for``; nothing sleeps to let time pass. Tracks that must end "already" get a virtual
start in the past.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from pathlib import Path

import httpx2
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from structlog.testing import capture_logs

from spotik.app import create_app
from spotik.auth.models import User
from spotik.db.base import utcnow
from spotik.db.engine import create_engine, create_sessionmaker
from spotik.events import DomainEvent
from spotik.playback.repository import earliest_track_ends
from spotik.playback.scheduler import MAX_POLL_SECONDS, PlaybackScheduler
from spotik.rooms.models import Room
from spotik.settings import Settings
from spotik.state import AppState
from spotik.tracks.repository import queue_tracks
from tests.conftest import make_settings, pg_url, reset_postgres
from tests.events import capture_events
from tests.helpers import register
from tests.integration.test_playback import room_row, seed_room, seed_track, set_playback, track_row
from tests.openapi_contract import contract_hooks

WAIT = 10.0  # upper bound for anything that should take milliseconds


def scheduler_of(state: AppState) -> PlaybackScheduler:
    assert state.playback_scheduler is not None
    return state.playback_scheduler


@contextmanager
def watch(state: AppState, predicate: Callable[[DomainEvent], bool]) -> Iterator[asyncio.Event]:
    """An asyncio.Event set by a bus subscriber the first time ``predicate`` matches a published event."""
    seen = asyncio.Event()

    async def handler(event: DomainEvent) -> None:
        if predicate(event):
            seen.set()

    unsubscribe = state.events.subscribe(handler)
    try:
        yield seen
    finally:
        unsubscribe()


def started(track_id: uuid.UUID) -> Callable[[DomainEvent], bool]:
    return lambda event: event.type == "playback_started" and event.data["track"]["id"] == str(track_id)


async def seed_user(sessionmaker: async_sessionmaker[AsyncSession], name: str) -> uuid.UUID:
    async with sessionmaker() as session:
        user = User(username=name, email=f"{name}@example.com", password_hash="$2y$04$" + "x" * 53)
        session.add(user)
        await session.commit()
        return user.id


async def ended_room(
    sessionmaker: async_sessionmaker[AsyncSession], admin_id: uuid.UUID, *, ended_ago: float = 1.0
) -> tuple[uuid.UUID, uuid.UUID]:
    """A room playing a 30 s track whose end was ``ended_ago`` seconds ago; returns (room, that track)."""
    room_id = await seed_room(sessionmaker, admin_id)
    base = utcnow() - timedelta(hours=1)
    current = await seed_track(sessionmaker, room_id, admin_id, duration=30, created_at=base, name="current")
    await set_playback(sessionmaker, room_id, track_id=current, started_at=utcnow() - timedelta(seconds=30 + ended_ago))
    return room_id, current


@pytest.fixture
async def admin_id(client: httpx2.AsyncClient) -> uuid.UUID:
    return uuid.UUID((await register(client, "admin")).id)


async def test_an_ended_track_is_followed_by_the_best_next_track(state: AppState, admin_id: uuid.UUID) -> None:
    sessionmaker = state.sessionmaker
    room_id, current = await ended_room(sessionmaker, admin_id)
    base = utcnow() - timedelta(minutes=30)
    oldest = await seed_track(sessionmaker, room_id, admin_id, created_at=base, name="oldest, no votes")
    voted_new = await seed_track(sessionmaker, room_id, admin_id, score=1, created_at=base + timedelta(seconds=2))
    voted_old = await seed_track(sessionmaker, room_id, admin_id, score=1, created_at=base + timedelta(seconds=1))
    already_played = await seed_track(sessionmaker, room_id, admin_id, score=9, played_at=base)
    with capture_events(state) as events, watch(state, started(voted_old)) as advanced:
        scheduler_of(state).wake()
        await asyncio.wait_for(advanced.wait(), WAIT)
    [event] = [event for event in events if event.room_id == room_id]
    assert event.type == "playback_started"
    assert event.data["reason"] == "track_finished" and event.data["previous_track"]["id"] == str(current)
    assert event.data["position"] == 0 and event.data["is_playing"] is True
    room = await room_row(sessionmaker, room_id)
    assert room.current_track_id == voted_old and room.is_playing is True and room.playback_paused_at is None
    assert room.playback_started_at is not None and event.data["started_at"].startswith(
        room.playback_started_at.strftime("%Y-%m-%dT%H:%M:%S.%f")
    )
    finished = await track_row(sessionmaker, current)
    assert finished.played_at is not None and finished.played_at >= room.playback_started_at
    for track_id in (oldest, voted_new):
        assert (await track_row(sessionmaker, track_id)).played_at is None
    async with sessionmaker() as session:
        queue = [track.id for track in await queue_tracks(session, room_id)]
    assert queue == [voted_old, voted_new, oldest]  # the finished track left the queue; the played one too
    assert already_played not in queue


async def test_an_empty_queue_stops_the_room(state: AppState, admin_id: uuid.UUID) -> None:
    room_id, current = await ended_room(state.sessionmaker, admin_id)
    await seed_track(state.sessionmaker, room_id, admin_id, played_at=utcnow())  # played: not a candidate
    stopped = lambda event: event.type == "playback_stopped" and event.room_id == room_id  # noqa: E731
    with capture_events(state) as events, watch(state, stopped) as done:
        scheduler_of(state).wake()
        await asyncio.wait_for(done.wait(), WAIT)
    [event] = [event for event in events if event.room_id == room_id]
    assert event.data["reason"] == "no_more_tracks" and event.data["previous_track"]["id"] == str(current)
    assert event.data["is_playing"] is False and event.data["current_track"] is None
    room = await room_row(state.sessionmaker, room_id)
    assert (room.current_track_id, room.playback_started_at, room.playback_paused_at, room.is_playing) == (
        None,
        None,
        None,
        False,
    )
    assert (await track_row(state.sessionmaker, current)).played_at is not None


async def test_seeking_to_the_end_wakes_the_scheduler(
    client: httpx2.AsyncClient, state: AppState, admin_id: uuid.UUID
) -> None:
    """Through the API: play, seek to the last second. The seek event wakes the scheduler, so the advance comes
    long before the poll interval (the wait below is shorter than it)."""
    admin = await register(client, "dj")
    room_id = await seed_room(state.sessionmaker, uuid.UUID(admin.id))
    first = await seed_track(state.sessionmaker, room_id, admin_id, duration=30)
    second = await seed_track(state.sessionmaker, room_id, admin_id, duration=600)
    url = f"/api/rooms/{room_id}"
    assert (await client.post(f"{url}/tracks/{first}/play", headers=admin.headers)).status_code == 200
    with watch(state, started(second)) as advanced:
        response = await client.post(f"{url}/playback/seek", json={"position": 30}, headers=admin.headers)
        assert response.status_code == 200
        await asyncio.wait_for(advanced.wait(), MAX_POLL_SECONDS - 1)
    status = (await client.get(f"{url}/playback/status", headers=admin.headers)).json()["data"]
    assert status["current_track"]["id"] == str(second) and status["is_playing"] is True
    assert (await track_row(state.sessionmaker, first)).played_at is not None


async def test_the_scheduler_sleeps_until_the_next_track_ends(state: AppState, admin_id: uuid.UUID) -> None:
    """A 1 s track that starts when the previous one is advanced is advanced in turn about a second later —
    well inside the poll interval, so the scheduler woke for its end rather than polling."""
    room_id, _ = await ended_room(state.sessionmaker, admin_id)
    base = utcnow() - timedelta(minutes=5)
    short = await seed_track(state.sessionmaker, room_id, admin_id, duration=1, score=2, created_at=base)
    last = await seed_track(state.sessionmaker, room_id, admin_id, duration=600, score=1, created_at=base)
    with watch(state, started(short)) as first, watch(state, started(last)) as second:
        scheduler_of(state).wake()
        await asyncio.wait_for(first.wait(), WAIT)
        await asyncio.wait_for(second.wait(), MAX_POLL_SECONDS - 1)
    assert (await track_row(state.sessionmaker, short)).played_at is not None
    assert (await room_row(state.sessionmaker, room_id)).current_track_id == last


async def test_paused_and_running_tracks_are_left_alone(state: AppState, admin_id: uuid.UUID) -> None:
    sessionmaker = state.sessionmaker
    paused_room = await seed_room(sessionmaker, admin_id)
    paused_track = await seed_track(sessionmaker, paused_room, admin_id, duration=30)
    long_ago = utcnow() - timedelta(hours=2)
    await set_playback(
        sessionmaker, paused_room, track_id=paused_track, started_at=long_ago,
        paused_at=long_ago + timedelta(seconds=10), is_playing=False,
    )  # fmt: skip
    running_room = await seed_room(sessionmaker, admin_id)
    running_track = await seed_track(sessionmaker, running_room, admin_id, duration=600)
    await set_playback(sessionmaker, running_room, track_id=running_track, started_at=utcnow())
    await seed_track(sessionmaker, paused_room, admin_id)
    await seed_track(sessionmaker, running_room, admin_id)
    with capture_events(state) as events:
        await asyncio.wait_for(scheduler_of(state).wait_passes(2), WAIT)
    assert events == []
    assert (await room_row(sessionmaker, paused_room)).playback_paused_at == long_ago + timedelta(seconds=10)
    assert (await room_row(sessionmaker, running_room)).current_track_id == running_track
    assert (await track_row(sessionmaker, paused_track)).played_at is None


async def test_the_database_computes_track_ends(state: AppState, admin_id: uuid.UUID) -> None:
    """The one scheduling query: rooms ordered by S + duration, in Unix seconds, to the millisecond."""
    sessionmaker = state.sessionmaker
    expected = {}
    for duration, offset in [(200, 3.25), (100, 7.5), (300, 0.125)]:
        room_id = await seed_room(sessionmaker, admin_id)
        track_id = await seed_track(sessionmaker, room_id, admin_id, duration=duration)
        start = utcnow() + timedelta(seconds=offset)
        await set_playback(sessionmaker, room_id, track_id=track_id, started_at=start)
        expected[room_id] = start.timestamp() + duration
    async with sessionmaker() as session:
        rows = await earliest_track_ends(session, limit=10)
    assert [room_id for room_id, _ in rows] == sorted(expected, key=expected.__getitem__)
    for room_id, ends_at in rows:
        assert ends_at == pytest.approx(expected[room_id], abs=1e-3)
    async with sessionmaker() as session:
        assert len(await earliest_track_ends(session, limit=1)) == 1


async def test_one_failing_room_does_not_stop_the_others(
    state: AppState, admin_id: uuid.UUID, settings: Settings
) -> None:
    """A database trigger makes every update of one room fail; the other room is still advanced, and the
    failing one is advanced once the fault is gone — the scheduler survived."""
    sessionmaker = state.sessionmaker
    broken_room, _ = await ended_room(sessionmaker, admin_id)
    healthy_room, _ = await ended_room(sessionmaker, admin_id)
    broken_next = await seed_track(sessionmaker, broken_room, admin_id)
    healthy_next = await seed_track(sessionmaker, healthy_room, admin_id)
    async with sessionmaker() as session:
        await session.execute(update(Room).where(Room.id == broken_room).values(name="broken"))
        if _pg(state):
            await session.execute(
                text(
                    "CREATE FUNCTION refuse_update() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'injected failure'; END $$"
                )
            )
            await session.execute(
                text(
                    "CREATE TRIGGER refuse_broken BEFORE UPDATE ON rooms FOR EACH ROW "
                    "WHEN (OLD.name = 'broken') EXECUTE FUNCTION refuse_update()"
                )
            )
        else:
            await session.execute(
                text(
                    "CREATE TRIGGER refuse_broken BEFORE UPDATE ON rooms FOR EACH ROW "
                    "WHEN OLD.name = 'broken' BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
                )
            )
        await session.commit()
    try:
        with watch(state, started(healthy_next)) as healthy:
            scheduler_of(state).wake()
            await asyncio.wait_for(healthy.wait(), WAIT)
        await asyncio.wait_for(scheduler_of(state).wait_passes(2), WAIT)
        assert (await room_row(sessionmaker, broken_room)).is_playing is True
        assert (await room_row(sessionmaker, broken_room)).current_track_id != broken_next
        assert scheduler_of(state).running
    finally:
        async with sessionmaker() as session:
            await session.execute(text("DROP TRIGGER refuse_broken" + (" ON rooms" if _pg(state) else "")))
            if _pg(state):
                await session.execute(text("DROP FUNCTION refuse_update()"))
            await session.commit()
    with watch(state, started(broken_next)) as recovered:
        scheduler_of(state).wake()
        await asyncio.wait_for(recovered.wait(), WAIT)
    assert (await room_row(sessionmaker, broken_room)).current_track_id == broken_next


def _pg(state: AppState) -> bool:
    return state.engine.dialect.name == "postgresql"


async def test_a_restart_advances_rooms_whose_track_ended_while_down(settings: Settings) -> None:
    """Play a track, shut the server down, let the track "end" while it is down (its virtual start moves into
    the past), start a fresh app: its first pass advances the room once."""
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        state: AppState = app.services
        transport = httpx2.ASGITransport(app=manager.app)
        hooks = contract_hooks(app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://testserver", event_hooks=hooks) as client:
            admin = await register(client, "admin")
            admin_id = uuid.UUID(admin.id)
            room_id = await seed_room(state.sessionmaker, admin_id)
            base = utcnow() - timedelta(hours=1)
            first = await seed_track(state.sessionmaker, room_id, admin_id, duration=60, created_at=base)
            second = await seed_track(state.sessionmaker, room_id, admin_id, score=1, duration=60, created_at=base)
            third = await seed_track(state.sessionmaker, room_id, admin_id, duration=60, created_at=base)
            response = await client.post(f"/api/rooms/{room_id}/tracks/{first}/play", headers=admin.headers)
            assert response.status_code == 200
    # While no server runs, the track ends (long ago: two whole track lengths ago).
    down_since = utcnow() - timedelta(minutes=10)
    async with down_database(settings) as sessionmaker:
        await set_playback(sessionmaker, room_id, track_id=first, started_at=down_since)

    restarted_at = utcnow()
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        state = app.services
        await asyncio.wait_for(scheduler_of(state).wait_passes(2), WAIT)
        room = await room_row(state.sessionmaker, room_id)
        # Advanced exactly once, to the next track, starting now (not replaying the downtime).
        assert room.current_track_id == second and room.is_playing is True
        assert room.playback_started_at is not None and room.playback_started_at >= restarted_at
        assert (await track_row(state.sessionmaker, first)).played_at is not None
        assert (await track_row(state.sessionmaker, second)).played_at is None
        assert (await track_row(state.sessionmaker, third)).played_at is None


async def test_shutdown_stops_the_scheduler(settings: Settings) -> None:
    app = create_app(settings)
    async with LifespanManager(app):
        scheduler = scheduler_of(app.services)
        assert scheduler.running
        await asyncio.wait_for(scheduler.wait_passes(1), WAIT)
    assert not scheduler.running


async def test_shutdown_during_the_first_pass_is_clean(settings: Settings, admin_id: uuid.UUID) -> None:
    """Apps stopped right after start-up, their scheduler's first pass still running: the pass is let finish
    instead of being cancelled in the middle of a query (which strands an aiosqlite worker thread that later
    calls into a closed event loop)."""
    async with down_database(settings) as sessionmaker:
        for _ in range(20):
            await ended_room(sessionmaker, admin_id)  # give the first passes real work
    with capture_logs() as logs:
        for _ in range(5):
            app = create_app(settings)
            async with LifespanManager(app):
                scheduler = scheduler_of(app.services)
            assert not scheduler.running
    assert not [entry for entry in logs if "cancelling" in entry["event"]]


@asynccontextmanager
async def down_database(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """The database alone, as an operator would touch it while no server runs."""
    engine = create_engine(settings)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_two_instances_advance_each_track_end_exactly_once(postgres_database: str, tmp_path: Path) -> None:
    """Two apps (two engines, two schedulers, two event buses) on one PostgreSQL database race for the same
    track ends: every room is advanced once, by one of them, and nothing is advanced twice."""
    await reset_postgres(postgres_database)
    url = pg_url(postgres_database)
    apps = [create_app(make_settings(url, tmp_path / f"instance-{n}")) for n in (1, 2)]
    async with LifespanManager(apps[0]), LifespanManager(apps[1]):
        states: list[AppState] = [apps[0].services, apps[1].services]
        sessionmaker = states[0].sessionmaker
        admin_id = await seed_user(sessionmaker, "admin")
        rooms: dict[uuid.UUID, tuple[uuid.UUID, uuid.UUID, uuid.UUID]] = {}
        for _ in range(6):
            room_id, current = await ended_room(sessionmaker, admin_id)
            base = utcnow() - timedelta(minutes=5)
            following = await seed_track(sessionmaker, room_id, admin_id, score=1, created_at=base, duration=600)
            after = await seed_track(sessionmaker, room_id, admin_id, created_at=base, duration=600)
            rooms[room_id] = (current, following, after)

        started_events: list[tuple[int, DomainEvent]] = []
        all_started = asyncio.Event()
        unsubscribes = []
        for index, state in enumerate(states):

            async def record(event: DomainEvent, index: int = index) -> None:
                if event.type == "playback_started":
                    started_events.append((index, event))
                    if len(started_events) >= len(rooms):
                        all_started.set()

            unsubscribes.append(state.events.subscribe(record))
        try:
            for state in states:
                scheduler_of(state).wake()  # both race for the same rooms now
            await asyncio.wait_for(all_started.wait(), WAIT)
            # Two full passes of each scheduler after that: a double advance would have been published by now.
            await asyncio.wait_for(asyncio.gather(*(scheduler_of(state).wait_passes(2) for state in states)), WAIT)
        finally:
            for unsubscribe in unsubscribes:
                unsubscribe()

        assert len(started_events) == len(rooms)
        by_room = {event.room_id: event for _, event in started_events}
        assert set(by_room) == set(rooms)
        for room_id, (current, following, after) in rooms.items():
            assert by_room[room_id].data["track"]["id"] == str(following)
            assert by_room[room_id].data["previous_track"]["id"] == str(current)
            room = await room_row(sessionmaker, room_id)
            assert room.current_track_id == following and room.is_playing is True
            assert (await track_row(sessionmaker, current)).played_at is not None
            assert (await track_row(sessionmaker, following)).played_at is None
            assert (await track_row(sessionmaker, after)).played_at is None  # no double advance
