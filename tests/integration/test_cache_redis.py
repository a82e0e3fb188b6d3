"""The cache's Redis tier on real Redis servers: two managers (two instances) sharing warm entries and
invalidations through 127.0.0.1:6379, each test under a key prefix and channel of its own (removed afterwards); then
an unreachable Redis, and a redis-server of the test's own that it kills and restarts (outage and recovery)."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis
from structlog.testing import capture_logs

from spotik.cache import CacheManager
from spotik.settings import Settings
from tests.conftest import unavailable
from tests.e2e.server import free_port
from tests.integration.test_rate_limit import redis_url  # the fixture: 127.0.0.1:6379, or skip / fail in CI
from tests.integration.test_websocket_redis import RedisProcess

pytestmark = pytest.mark.redis
WAIT = 10.0
OUTAGE_LOG = "cache redis unreachable: in-process tier only"


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    name = f"spotik-test:{uuid.uuid4().hex[:12]}:"
    yield name
    client = redis.Redis.from_url(redis_url)
    try:
        leftovers = list(client.scan_iter(match=f"{name}*"))
        if leftovers:
            client.delete(*leftovers)
    finally:
        client.close()


@asynccontextmanager
async def instances(url: str, prefix: str, count: int = 2, **overrides: Any) -> AsyncIterator[list[CacheManager]]:
    settings = Settings(redis_url=url, cache_redis_prefix=prefix, **overrides)
    managers = [CacheManager.from_settings(settings) for _ in range(count)]
    try:
        for manager in managers:
            await manager.start()
        yield managers
    finally:
        for manager in managers:
            await manager.stop()


async def until(predicate: Callable[[], bool], what: str, within: float = WAIT) -> None:
    """Poll the instances' state (the outcome, not the clock), failing after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {within}s")
        await asyncio.sleep(0.01)


def held(manager: CacheManager, ns: str, key: str) -> bool:
    return manager.store.namespace(ns).peek(key) is not None


async def test_a_value_set_on_one_instance_is_a_hit_on_the_other(redis_url: str, prefix: str) -> None:
    async with instances(redis_url, prefix) as (one, two):
        assert (one.redis_status, two.redis_status) == ("ok", "ok")
        assert await one.set("user_data", "u1", {"name": "Ada", "bio": "x" * 2000}, ttl=300)
        assert await two.get("user_data", "u1") == {"name": "Ada", "bio": "x" * 2000}
        assert two.stats()["namespaces"]["user_data"]["redis_hits"] == 1
        assert held(two, "user_data", "u1")  # now warm in the second instance's own tier
        assert await two.get("user_data", "u1") == {"name": "Ada", "bio": "x" * 2000}
        assert two.stats()["namespaces"]["user_data"]["hits"] == 1

        raw = redis.Redis.from_url(redis_url)
        try:
            stored = one.store.namespace("user_data").peek("u1")
            assert stored is not None
            assert raw.get(f"{prefix}v:user_data:u1") == stored.blob  # the same (compressed) bytes
            assert 295_000 < raw.pttl(f"{prefix}v:user_data:u1") <= 300_000  # type: ignore[operator]
        finally:
            raw.close()
        remaining = two.store.remaining_ttl("user_data", "u1")
        assert remaining is not None and 295 < remaining <= 300  # both copies expire together


async def test_get_or_compute_uses_what_another_instance_computed(redis_url: str, prefix: str) -> None:
    async def first() -> dict[str, Any]:
        return {"queue": ["t1", "t2"]}

    async def never() -> dict[str, Any]:
        raise AssertionError("the second instance computed although Redis held the value")

    async with instances(redis_url, prefix) as (one, two):
        assert await one.get_or_compute("track_queue", "r1", first, tags=["room:r1"]) == {"queue": ["t1", "t2"]}
        assert await two.get_or_compute("track_queue", "r1", never, tags=["room:r1"]) == {"queue": ["t1", "t2"]}
        assert await two.invalidate_tags("room:r1") == 1
        await until(lambda: not held(one, "track_queue", "r1"), "the first instance dropped the entry")


INVALIDATIONS: dict[str, Callable[[CacheManager], Any]] = {
    "tag": lambda c: c.invalidate_tags("room:r1"),
    "delete": lambda c: c.delete("room_state", "r1"),
    "clear namespace": lambda c: c.clear("room_state"),
    "clear everything": lambda c: c.clear(),
}


@pytest.mark.parametrize("name", INVALIDATIONS)
async def test_an_invalidation_on_one_instance_empties_the_other(redis_url: str, prefix: str, name: str) -> None:
    async with instances(redis_url, prefix) as (one, two):
        await one.set("room_state", "r1", {"playing": True}, tags=["room:r1"])
        await one.set("room_state", "r2", {"playing": False}, tags=["room:r2"])
        await one.set("user_data", "u1", {"name": "Ada"})
        for key in ("r1", "r2"):
            await two.get("room_state", key)  # read through Redis: the second instance holds them, untagged
        await two.get("user_data", "u1")
        assert held(two, "room_state", "r1")
        await INVALIDATIONS[name](one)
        await until(lambda: not held(two, "room_state", "r1"), "the second instance dropped r1")
        assert await two.get("room_state", "r1") is None  # and Redis no longer has it
        survivors = {
            "tag": {"r2", "u1"},
            "delete": {"r2", "u1"},
            "clear namespace": {"u1"},
            "clear everything": set(),
        }[name]
        await until(
            lambda: {k for ns, k in (("room_state", "r2"), ("user_data", "u1")) if held(two, ns, k)} == survivors,
            "only the invalidated entries dropped",
        )
        assert await two.get("user_data", "u1") == ({"name": "Ada"} if "u1" in survivors else None)


async def test_an_unreachable_redis_leaves_the_in_process_tier_working(prefix: str) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    with capture_logs() as logs:
        async with instances(closed, prefix, count=1, cache_degraded_ttl=3) as (cache,):
            assert cache.redis_status == "degraded"
            for i in range(20):
                assert await cache.set("user_data", f"u{i}", {"n": i}, ttl=600)
                assert await cache.get("user_data", f"u{i}") == {"n": i}
                await cache.invalidate_tags(f"user:{i}")
            remaining = cache.store.remaining_ttl("user_data", "u0")
            assert remaining is not None and remaining <= 3  # local TTLs capped while peers can't reach us
            health = cache.health()
            assert health["status"] == "degraded" and health["redis"] == "degraded"
            assert "redis unreachable: in-process tier only, local TTLs capped" in health["reasons"]
            assert cache.stats()["redis_tier"]["pending_invalidations"] == 20
    assert [entry["event"] for entry in logs].count(OUTAGE_LOG) == 1  # once, not per call


@pytest.fixture
def private_redis() -> Iterator[RedisProcess]:
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server (binary)", FileNotFoundError("redis-server not on PATH"))
    server = RedisProcess(str(binary))
    server.start()
    try:
        yield server
    finally:
        server.kill()


async def pingable(url: str) -> bool:
    client = redis.asyncio.Redis.from_url(url, socket_connect_timeout=0.5)
    try:
        return bool(await client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        await client.aclose()


async def test_an_outage_keeps_the_local_tier_and_invalidations_flow_again_after_recovery(
    private_redis: RedisProcess, prefix: str
) -> None:
    async with asyncio.timeout(WAIT):
        while not await pingable(private_redis.url):
            await asyncio.sleep(0.05)
    with capture_logs() as logs:
        async with instances(private_redis.url, prefix, cache_redis_reconnect_max=0.2) as (one, two):
            await one.set("room_state", "r1", {"v": 1}, tags=["room:r1"])
            assert await two.get("room_state", "r1") == {"v": 1}

            private_redis.kill()
            await until(lambda: one.redis_status == two.redis_status == "degraded", "outage seen by both")
            assert await one.set("room_state", "during", {"v": 2}, tags=["room:r1"])
            assert await one.get("room_state", "during") == {"v": 2}  # the local tier keeps serving
            assert await two.get("room_state", "r1") == {"v": 1}
            assert one.health()["status"] == "degraded"
            await one.invalidate_tags("room:r1")  # cannot reach Redis: kept for the recovery
            assert one.stats()["redis_tier"]["pending_invalidations"] == 1

            private_redis.start()
            await until(lambda: one.redis_status == two.redis_status == "ok", "recovery", within=20)
            assert one.stats()["redis_tier"]["pending_invalidations"] == 0
            assert not held(two, "room_state", "r1")  # it may have missed invalidations: its tier was cleared
            assert one.health()["status"] == "healthy"

            await one.set("room_state", "r1", {"v": 3}, tags=["room:r1"])
            assert await two.get("room_state", "r1") == {"v": 3}
            await one.invalidate_tags("room:r1")
            await until(lambda: not held(two, "room_state", "r1"), "an invalidation after the recovery")
    events = [entry["event"] for entry in logs]
    assert events.count(OUTAGE_LOG) == 2  # once per instance
    assert events.count("cache redis reachable again") == 2


__all__ = ["redis_url"]
