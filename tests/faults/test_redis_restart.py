"""Scenario 2: Redis killed and restarted under two instances (docs/reliability.md#2).

Two server processes share a database (the dedicated PostgreSQL cluster) and a dedicated redis-server; a socket is
joined to the same room on each. Redis is killed (SIGKILL), the instances are used, and Redis is started again.

Proves: while Redis is down each instance keeps serving its own sockets (a vote reaches the socket on the same
instance, presence answers), rate limits fall back to per-instance counters (a client gets the limit on each
instance, no more), no request gets a 5xx, and ``/api/health`` says ``degraded`` with Redis's part; after the restart
everything reconnects by itself: a vote on instance A reaches the socket on instance B again (and B to A), presence
spans both instances again, and rate limits are shared again.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.faults.conftest import ServerFactory
from tests.faults.consistency import check_consistency
from tests.faults.load import Api, Listener, frame, wait_until
from tests.faults.scenario import close_all, room_with_members, short_wav
from tests.faults.services import LoopbackRedis

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.redis]
LOGIN_LIMIT = 6  # per minute and client IP


async def logins(api: Api, ip: str, count: int) -> list[int]:
    """Failed logins from ``ip`` (through X-Forwarded-For, the servers trust loopback): their statuses."""
    statuses = []
    for _ in range(count):
        answer = await api.request(
            "login",
            "POST",
            "/api/auth/login",
            json={"email": "nobody@example.com", "password": "wrong-password"},
            headers={"X-Forwarded-For": ip},
        )
        assert answer is not None
        statuses.append(answer.status_code)
    return statuses


async def redis_health(api: Api) -> dict[str, Any]:
    body = await api.health()
    redis: dict[str, Any] = body["checks"]["redis"]
    return {"overall": body["status"], **redis}


async def vote_reaches(api: Api, room: str, track: str, voter: Any, listener: Listener) -> float:
    """Vote through ``api``; seconds until ``listener`` receives that vote's ``track_voted``."""
    sent = time.monotonic()
    answer = await api.vote(room, track, voter)
    assert answer is not None and answer.status_code == 200
    await listener.wait_for(
        lambda m: m["type"] == "track_voted" and m["data"]["user"]["id"] == voter.id, 10, f"{voter.username}'s vote"
    )
    return time.monotonic() - sent


async def test_redis_killed_and_restarted_under_two_instances(
    servers: ServerFactory, pg_url: str, private_redis: LoopbackRedis, tmp_path: Path
) -> None:
    began = time.monotonic()
    env = {
        "DATABASE_URL": pg_url,
        "REDIS_URL": private_redis.url,
        "WS_REDIS_PREFIX": f"faults:{uuid.uuid4().hex[:8]}",
        "WS_REDIS_RECONNECT_MAX": "0.5",
        "RATE_LIMITING_ENABLED": "true",
        "RATE_LIMIT_KEY_PREFIX": f"faults-rl:{uuid.uuid4().hex[:8]}",
        "RATE_LIMIT_LOGIN": f"{LOGIN_LIMIT}/minute",
        "RATE_LIMIT_BURST": "100000/10 seconds",
        "RATE_LIMIT_REGISTER": "100000/hour",
        "MAX_REQUESTS_PER_HOUR": "1000000",
        "TRUSTED_PROXIES": "127.0.0.1",
    }
    one = servers(**env)
    two = servers(**env)
    a, b = Api(one.base_url), Api(two.base_url)
    b.acknowledged = a.acknowledged
    listeners: list[Listener] = []
    try:
        for api in (a, b):
            await wait_until(lambda api=api: _is(redis_health(api), "healthy"), 15, "Redis healthy at start")
        room = await room_with_members(a, 6)
        upload = await a.upload(room.id, room.admin, short_wav(tmp_path / "media", 60.0))
        assert upload is not None and upload.status_code == 201
        track = upload.json()["track"]["id"]
        on_a = await Listener.open(one.ws_url, room.admin, room.id)
        on_b = await Listener.open(two.ws_url, room.members[0], room.id)
        listeners = [on_a, on_b]
        before = await vote_reaches(a, room.id, track, room.members[1], on_b)  # A -> Redis -> B
        assert await logins(a, "10.0.0.1", 4) + await logins(b, "10.0.0.1", 3) == [401] * 6 + [429]  # shared

        private_redis.kill()
        killed = time.monotonic()
        for api in (a, b):
            await wait_until(lambda api=api: _is(redis_health(api), "degraded"), 15, "Redis degraded")
        detected = time.monotonic() - killed
        health = await redis_health(a)
        assert health["overall"] == "degraded" and health["broker"]["connected"] is False
        assert health["rate_limiter"]["limits"] == "per-instance"
        assert (await a.client.get("/api/health")).status_code == 200  # degraded, still serving
        # each instance serves its own sockets
        await vote_reaches(a, room.id, track, room.members[2], on_a)
        await vote_reaches(b, room.id, track, room.members[3], on_b)
        assert not [m for m in on_b.of_type("track_voted") if m["data"]["user"]["id"] == room.members[2].id]
        await on_a.ws.send(frame("get_room_state"))
        state = await on_a.wait_for(lambda m: m["type"] in ("room_state", "error"), 10, "room state")
        assert state["type"] == "room_state" and room.admin.id in state["data"]["online_users"]
        # rate limits: per instance, neither shared nor switched off
        during = await logins(a, "10.0.0.2", LOGIN_LIMIT) + await logins(b, "10.0.0.2", LOGIN_LIMIT)
        assert during == [401] * (2 * LOGIN_LIMIT)
        assert await logins(a, "10.0.0.2", 1) == [429]

        private_redis.start()
        restarted = time.monotonic()
        for api in (a, b):
            await wait_until(lambda api=api: _is(redis_health(api), "healthy"), 20, "Redis healthy again")
        reconnected = time.monotonic() - restarted
        after_ab = await vote_reaches(a, room.id, track, room.members[4], on_b)  # A -> B again
        after_ba = await vote_reaches(b, room.id, track, room.members[5], on_a)  # B -> A
        await on_b.ws.send(frame("get_room_state"))
        state = await on_b.wait_for(lambda m: m["type"] == "room_state", 10, "room state on B")
        assert set(state["data"]["online_users"]) >= {room.admin.id, room.members[0].id}  # presence spans both
        assert await logins(a, "10.0.0.3", 4) + await logins(b, "10.0.0.3", 3) == [401] * 6 + [429]  # shared again
        assert all(listener.open_now for listener in listeners)
        statuses = {o.status for o in a.outcomes + b.outcomes}
        assert all(0 < status < 500 for status in statuses), statuses
    finally:
        await close_all(listeners)
        await a.aclose()
        await b.aclose()
    result = await check_consistency(pg_url, one.storage / "audio", one.storage / "public", a.acknowledged)
    print(
        f"\n[faults] scenario 2: outage seen by both instances' health {detected:.2f}s after the kill; both "
        f"reconnected {reconnected:.2f}s after the restart; vote A->B {before * 1000:.0f} ms before, "
        f"{after_ab * 1000:.0f} ms after (B->A {after_ba * 1000:.0f} ms); {len(a.outcomes) + len(b.outcomes)} "
        f"requests, statuses {sorted(statuses)}; {result.describe()}; {time.monotonic() - began:.1f}s"
    )


async def _is(health: Any, status: str) -> bool:
    return bool((await health)["status"] == status)
