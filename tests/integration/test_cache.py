"""The cache wired into the app (docs/cache.md), on SQLite and PostgreSQL.

The main property: whatever the interleaving of writes (votes, uploads, deletions, joins, leaves, playback, room
updates) with reads — sequential or concurrent — every read the cached app answers afterwards is byte for byte
what a second app on the same database, with the cache off, answers. Clock-dependent parts are checked against the
moments of the read instead: the status's server time and position are left out, and each participant's
``duration_in_room`` must be right at some moment of its read (a minute may turn between the two apps' reads once a
run lasts more than a minute).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from spotik.rooms.schemas import duration_in_room
from spotik.settings import Settings
from spotik.state import SpotikApp
from tests.conftest import make_settings, pg_url, reset_postgres
from tests.e2e.server import free_port
from tests.helpers import Account, register
from tests.integration.test_cache_redis import prefix  # noqa: F401 - the fixture: a key prefix of the test's own
from tests.integration.test_rate_limit import redis_url  # noqa: F401 - the fixture: 127.0.0.1:6379
from tests.integration.tracks_helpers import create_room, join_room, long_wav, upload
from tests.perfapp import RunningApp, running_app
from tests.querycount import count_queries

WRITES = ("vote", "unvote", "upload", "delete", "join", "leave", "play", "skip", "pause", "resume", "rename", "create")
CLOCK_KEYS = ("server_time", "position")
PEOPLE = ("admin", "ana", "bob", "cid")  # cid starts outside the room


@pytest.fixture
async def uncached(settings: Settings) -> AsyncIterator[RunningApp]:
    """A second app on the same database and storage with the cache off; it advances no room (its scheduler is
    stopped): every write goes through the cached app, as with one instance."""
    async with running_app(settings.model_copy(update={"cache_enabled": False})) as other:
        await other.state.playback_scheduler.stop()
        yield other


@dataclass
class World:
    cached: httpx2.AsyncClient
    uncached: httpx2.AsyncClient
    people: dict[str, Account]
    wav: bytes
    room: str = ""
    renames: int = 0

    async def queue_ids(self) -> list[str]:
        response = await self.uncached.get(f"/api/rooms/{self.room}", headers=self.people["admin"].headers)
        return [track["id"] for track in response.json()["data"]["track_queue"]]

    async def track(self, index: int) -> str:
        ids = await self.queue_ids()
        return ids[index % len(ids)] if ids else str(uuid.uuid4())

    async def write(self, kind: str, who: str, index: int) -> None:
        """One write through the cached app; refusals (a 4xx) are part of the game."""
        client, room, headers = self.cached, self.room, self.people[who].headers
        admin = self.people["admin"].headers
        if kind in ("vote", "unvote"):
            track = await self.track(index)
            method = client.post if kind == "vote" else client.delete
            await method(f"/api/rooms/{room}/tracks/{track}/vote", headers=headers)
        elif kind == "upload":
            await upload(client, self.people[who], room, self.wav, f"song{index}.wav")
        elif kind == "delete":
            await client.delete(f"/api/rooms/{room}/tracks/{await self.track(index)}", headers=headers)
        elif kind == "join":
            await client.post(f"/api/rooms/{room}/join", headers=headers)
        elif kind == "leave":
            await client.post(f"/api/rooms/{room}/leave", headers=headers)
        elif kind == "play":
            body = {"track_id": await self.track(index)}
            await client.post(f"/api/rooms/{room}/tracks/{body['track_id']}/play", headers=admin, json=body)
        elif kind in ("skip", "pause", "resume"):
            await client.post(f"/api/rooms/{room}/playback/{kind}", headers=admin)
        elif kind == "create":
            await client.post("/api/rooms", headers=headers, json={"name": f"new room {index}"})
        elif kind == "rename":
            self.renames += 1
            await client.put(f"/api/rooms/{room}", headers=admin, json={"name": f"renamed {self.renames}"})

    async def read(self, client: httpx2.AsyncClient, who: str) -> tuple[bytes, ...]:
        headers = self.people[who].headers
        started = datetime.now(UTC)
        queue = await client.get(f"/api/rooms/{self.room}/tracks", headers=headers)
        room = await client.get(f"/api/rooms/{self.room}", headers=headers)
        rooms = await client.get("/api/rooms", headers=headers)
        status = await client.get(f"/api/rooms/{self.room}/playback/status", headers=headers)
        ended = datetime.now(UTC)
        # the status as of the stored columns: its clock (server_time, and position while playing) moves on
        playback = {key: value for key, value in status.json().get("data", {}).items() if key not in CLOCK_KEYS}
        return (
            queue.content,
            durations_checked(room.content, started, ended),
            durations_checked(rooms.content, started, ended),
            str(status.status_code).encode(),
            repr(playback).encode(),
        )

    async def check(self) -> None:
        for who in PEOPLE:
            cached = await self.read(self.cached, who)
            assert cached == await self.read(self.uncached, who), f"{who} read a stale answer"


def durations_checked(body: bytes, started: datetime, ended: datetime) -> bytes:
    """``body`` with each participant's ``duration_in_room`` that was right at some moment of the read (between
    ``started`` and ``ended``) replaced by a mark: a minute may turn between the cached and the uncached read, and
    the test compares the two. A duration that was wrong all along stays, and the comparison shows it."""

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            if "duration_in_room" in node and node.get("joined_at"):
                joined = datetime.fromisoformat(node["joined_at"])
                if node["duration_in_room"] in (duration_in_room(joined, started), duration_in_room(joined, ended)):
                    node["duration_in_room"] = "(right during the read)"
            for value in node.values():
                walk(value)

    try:
        parsed = json.loads(body)
    except ValueError:
        return body
    walk(parsed)
    return json.dumps(parsed).encode()


write_steps = st.tuples(st.sampled_from(WRITES), st.sampled_from(PEOPLE), st.integers(0, 7))
steps = st.one_of(
    write_steps.map(lambda step: ("sequential", step)),
    st.tuples(write_steps, st.sampled_from(PEOPLE)).map(lambda pair: ("concurrent", pair)),
)


@hypothesis_settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(script=st.lists(steps, min_size=1, max_size=8))
async def test_every_cached_read_equals_the_uncached_one_whatever_the_interleaving(
    app: SpotikApp, client: httpx2.AsyncClient, uncached: RunningApp, wav_file: Path, script: list[tuple[str, Any]]
) -> None:
    # Every write is the script's: no room advances by itself once its 60 s track ends (a run can outlast it), or
    # the scheduler's write could land between the cached and the uncached read of a check.
    await app.services.playback_scheduler.stop()
    wav = wav_file.read_bytes()
    tag = uuid.uuid4().hex[:8]  # the apps live for the whole test; every example has its own people and room
    people = {name: await register(client, f"{name}{tag}") for name in PEOPLE}
    world = World(client, uncached.client, people, wav)
    world.room = await create_room(client, people["admin"])
    await join_room(client, world.room, people["ana"], people["bob"])
    await upload(client, people["ana"], world.room, wav, "first.wav")
    await world.check()  # warm: every later read is a hit unless a write invalidated it
    for mode, step in script:
        if mode == "sequential":
            await world.write(*step)
        else:  # a write and a cached read at the same time; the reads after both must be fresh
            (kind, who, index), reader = step
            await asyncio.gather(world.write(kind, who, index), world.read(client, reader))
        await world.check()


@pytest.fixture
def wav_file(tmp_path: Path) -> Path:
    return long_wav(tmp_path)


# --- what the cache saves, and the cache switched off ----------------------------------------------------------


async def test_warm_reads_ask_the_database_nothing(app: SpotikApp, client: httpx2.AsyncClient, tmp_path: Path) -> None:
    room, (_admin, member) = await _room(client, "admin", "member")
    await upload(client, member, room, long_wav(tmp_path).read_bytes(), "a.wav")
    paths = ("/api/rooms", f"/api/rooms/{room}", f"/api/rooms/{room}/tracks", f"/api/rooms/{room}/playback/status")
    for path in paths:
        assert (await client.get(path, headers=member.headers)).status_code == 200  # fills the cache
    engine = app.services.engine
    for path in paths:  # the token's user and revocation, the room binding, the room, its queue, the member's votes
        with count_queries(engine) as statements:
            assert (await client.get(path, headers=member.headers)).status_code == 200
        assert statements == [], (path, statements)
    # a logout drops the token's cached revocation at once: the next request with it is refused
    assert (await client.post("/api/auth/logout", headers=member.headers)).status_code == 200
    assert (await client.get(paths[0], headers=member.headers)).status_code == 401


@pytest.mark.cache_off
async def test_the_main_routes_work_with_the_cache_off(
    app: SpotikApp, client: httpx2.AsyncClient, tmp_path: Path
) -> None:
    room, (admin, member) = await _room(client, "admin", "member")
    track = (await upload(client, member, room, long_wav(tmp_path).read_bytes(), "a.wav")).json()["track"]
    assert (await client.post(f"/api/rooms/{room}/tracks/{track['id']}/vote", headers=admin.headers)).status_code == 200
    queue = (await client.get(f"/api/rooms/{room}/tracks", headers=admin.headers)).json()
    assert queue["tracks"][0]["user_has_voted"] is True and queue["tracks"][0]["vote_score"] == 1
    detail = (await client.get(f"/api/rooms/{room}", headers=member.headers)).json()["data"]
    assert detail["track_queue"][0]["has_voted"] is False and detail["current_track"]["id"] == track["id"]
    assert (await client.post(f"/api/rooms/{room}/playback/pause", headers=admin.headers)).status_code == 200
    assert (await client.get(f"/api/rooms/{room}", headers=member.headers)).json()["data"]["is_playing"] is False
    assert (await client.post(f"/api/rooms/{room}/leave", headers=member.headers)).status_code == 200
    assert (await client.get(f"/api/rooms/{room}/tracks", headers=member.headers)).status_code == 403
    health = (await client.get("/api/health")).json()
    assert health["checks"]["cache"]["status"] == "disabled" and health["checks"]["cache"]["enabled"] is False
    stats = app.services.cache.stats()
    assert (stats["entries"], stats["lookups"]) == (0, 0)


async def _room(client: httpx2.AsyncClient, *names: str) -> tuple[str, list[Account]]:
    accounts = [await register(client, name) for name in names]
    room = await create_room(client, accounts[0])
    await join_room(client, room, *accounts[1:])
    return room, accounts


# --- two instances through the real Redis, and Redis down ------------------------------------------------------


@pytest.fixture
def shared_settings(postgres_database: str, tmp_path: Path, redis_url: str, prefix: str) -> Settings:  # noqa: F811
    """PostgreSQL and Redis shared by two instances, under this test's own key prefix."""
    asyncio.run(reset_postgres(postgres_database))
    return make_settings(
        pg_url(postgres_database),
        tmp_path / "storage",
        redis_url=redis_url,
        cache_redis_prefix=prefix,
        ws_redis_prefix=f"{prefix}ws",
    )


async def until_equal(read: Callable[[], Awaitable[Any]], expected: Any, within: float = 10.0) -> None:
    """Poll ``read()`` (the outcome, never a fixed sleep) until it gives ``expected``."""
    deadline = time.monotonic() + within
    while (value := await read()) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"still {value!r}, not {expected!r}, after {within}s")
        await asyncio.sleep(0.01)


@pytest.mark.postgres
@pytest.mark.redis
async def test_a_vote_on_one_instance_reaches_the_other_instances_cached_queue(
    shared_settings: Settings, tmp_path: Path
) -> None:
    async with running_app(shared_settings) as one, running_app(shared_settings) as two:
        assert one.state.cache.redis_status == two.state.cache.redis_status == "ok"
        room, (admin, member) = await _room(one.client, "admin", "member")
        track = (await upload(one.client, member, room, long_wav(tmp_path).read_bytes(), "a.wav")).json()["track"]

        async def queue_on_two() -> tuple[int, bool]:
            response = await two.client.get(f"/api/rooms/{room}/tracks", headers=admin.headers)
            first = response.json()["tracks"][0]
            return first["vote_score"], first["user_has_voted"]

        assert await queue_on_two() == (0, False)
        assert two.state.cache.store.namespace("track_queue").peek(room) is not None  # cached on the second
        vote = await one.client.post(f"/api/rooms/{room}/tracks/{track['id']}/vote", headers=admin.headers)
        assert vote.status_code == 200
        await until_equal(queue_on_two, (1, True))


async def test_with_redis_unreachable_requests_succeed_and_health_says_degraded(
    settings: Settings, tmp_path: Path
) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    async with running_app(settings.model_copy(update={"redis_url": closed})) as running:
        client = running.client
        room, (admin, member) = await _room(client, "admin", "member")
        track = (await upload(client, member, room, long_wav(tmp_path).read_bytes(), "a.wav")).json()["track"]
        for _ in range(2):  # a miss, then a hit from the in-process tier
            assert (await client.get(f"/api/rooms/{room}/tracks", headers=admin.headers)).status_code == 200
        assert (await client.post(f"/api/rooms/{room}/tracks/{track['id']}/vote", headers=admin.headers)).is_success
        queue = (await client.get(f"/api/rooms/{room}/tracks", headers=admin.headers)).json()
        assert queue["tracks"][0]["vote_score"] == 1 and queue["tracks"][0]["user_has_voted"] is True
        answer = await client.get("/api/health")
        health = answer.json()
        # Degraded (Redis-backed features limited to this instance), still a 200: never unhealthy for the cache
        assert answer.status_code == 200 and health["status"] == "degraded"
        assert health["checks"]["cache"]["status"] == "degraded" and health["checks"]["cache"]["redis"] == "degraded"
        component = (await client.get("/api/performance/health")).json()["health"]["components"]["cache"]
        assert component["status"] == "degraded" and component["redis"] == "degraded"
        # the second read was answered from this process: the kept answer of the fast path (docs/cache.md#answers)
        assert running.state.cache.stats()["namespaces"]["api_response"]["hits"] >= 1


# --- warm-up, statistics and clearing ------------------------------------------------------------------------


async def test_start_up_warms_the_active_rooms_and_a_slow_warm_up_never_blocks(
    settings: Settings, client: httpx2.AsyncClient, tmp_path: Path
) -> None:
    playing, (admin,) = await _room(client, "admin")
    await upload(client, admin, playing, long_wav(tmp_path).read_bytes(), "a.wav")  # starts playing
    async with running_app(settings) as fresh:
        warmer = fresh.state.warmer
        assert warmer.task is not None
        await asyncio.wait_for(warmer.task, 10)
        assert warmer.warmed == [uuid.UUID(playing)]
        for ns in ("room_state", "track_queue"):
            assert fresh.state.cache.store.namespace(ns).peek(playing) is not None
    with capture_logs() as logs:
        async with running_app(settings.model_copy(update={"cache_warmup_seconds": 1e-9})) as cut:
            assert cut.state.warmer.task is not None
            await asyncio.wait_for(cut.state.warmer.task, 10)
            assert (await cut.client.get("/api/ping")).status_code == 200
    assert any(entry["event"] == "cache warm-up cut short" for entry in logs)


async def test_the_dashboard_shows_each_namespace_and_cache_clear_empties_one_or_all(
    settings: Settings, tmp_path: Path
) -> None:
    async with running_app(settings.model_copy(update={"performance_admins": ["ops"]})) as running:
        client = running.client
        room, (operator, member) = await _room(client, "ops", "member")
        await upload(client, member, room, long_wav(tmp_path).read_bytes(), "a.wav")
        for _ in range(3):
            for path in (f"/api/rooms/{room}/tracks", f"/api/rooms/{room}"):
                assert (await client.get(path, headers=member.headers)).status_code == 200
        dashboard = (await client.get("/api/performance/dashboard", headers=operator.headers)).json()["data"]
        queue = dashboard["cache"]["namespaces"]["track_queue"]
        # each route's first read works its answer out: the shared queue (a miss) and the member's standing (a miss
        # for the queue, then a hit for the room); the second and third reads of each are kept answers
        assert (queue["hits"], queue["misses"], queue["entries"]) == (1, 2, 2)
        assert queue["hit_rate"] == pytest.approx(1 / 3) and queue["bytes"] > 0
        answers = dashboard["cache"]["namespaces"]["api_response"]
        assert (answers["hits"], answers["misses"], answers["entries"]) == (4, 2, 2)
        assert set(queue["evictions"]) >= {"ttl", "capacity"} and dashboard["cache"]["health"]["status"] == "healthy"
        metrics = (await client.get("/api/performance/metrics")).json()["metrics"]
        assert metrics["cache"]["total_entries"] == running.state.cache.stats()["entries"] > 0

        async def clear(cache_type: str) -> int:
            response = await client.post(
                "/api/performance/cache/clear", json={"cache_type": cache_type}, headers=operator.headers
            )
            assert response.status_code == 200, response.text
            return int(response.json()["cleared"])

        assert await clear("track_queue") == 2
        assert running.state.cache.store.namespace("track_queue").peek(room) is None
        assert running.state.cache.store.namespace("room_state").peek(room) is not None
        assert await clear("database_query") == 0  # the documented name of the db_query namespace
        assert await clear("all") >= 2  # room state and the user rows
        assert running.state.cache.stats()["entries"] == 0
