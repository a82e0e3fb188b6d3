"""The manager without Redis: single flight, errors and cancellation, the invalidate-during-compute guard, the
disabled cache, health, maintenance, and building it from the settings (config/cache.yml)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from spotik.cache import CacheManager, Codec, Policy, Priority
from spotik.settings import Settings
from tests.unit.cache.helpers import FakeClock, spec, store_of

WAIT = 5.0


def manager(enabled: bool = True, clock: FakeClock | None = None, **options: Any) -> CacheManager:
    store = store_of(spec("room_state", ttl=30), spec("track_queue", ttl=60), spec("user_data"), clock=clock)
    return CacheManager(store, enabled=enabled, **options)


class Gate:
    """A computation that waits until the test opens it, counting its calls."""

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value = {"queue": [1, 2, 3]} if value is None else value
        self.error = error
        self.calls = 0
        self.started = asyncio.Event()
        self.opened = asyncio.Event()

    async def __call__(self) -> Any:
        self.calls += 1
        self.started.set()
        await self.opened.wait()
        if self.error is not None:
            raise self.error
        return self.value


async def until(predicate: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(WAIT):
        while not predicate():
            await asyncio.sleep(0.001)
    assert predicate(), what


async def test_concurrent_misses_compute_once_and_each_caller_gets_its_own_copy() -> None:
    cache = manager()
    gate = Gate()
    callers = [asyncio.create_task(cache.get_or_compute("track_queue", "r1", gate)) for _ in range(20)]
    await gate.started.wait()
    gate.opened.set()
    results = await asyncio.gather(*callers)
    assert gate.calls == 1
    assert all(result == {"queue": [1, 2, 3]} for result in results)
    results[0]["queue"].append(4)
    assert results[1] == {"queue": [1, 2, 3]}
    assert await cache.get_or_compute("track_queue", "r1", gate) == {"queue": [1, 2, 3]}
    assert gate.calls == 1  # a hit
    assert cache.stats()["in_flight"] == 0


async def test_an_error_reaches_every_waiter_and_nothing_is_cached() -> None:
    cache = manager()
    gate = Gate(error=LookupError("room gone"))
    callers = [asyncio.create_task(cache.get_or_compute("room_state", "r1", gate)) for _ in range(5)]
    await gate.started.wait()
    gate.opened.set()
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(outcome, LookupError) for outcome in outcomes)
    assert gate.calls == 1
    assert await cache.get("room_state", "r1", "miss") == "miss"
    retry = Gate(value={"ok": True})
    retry.opened.set()
    assert await cache.get_or_compute("room_state", "r1", retry) == {"ok": True}  # computed anew
    assert retry.calls == 1


async def test_an_unencodable_result_raises_to_every_waiter() -> None:
    cache = manager()
    gate = Gate(value={1, 2})
    gate.opened.set()
    with pytest.raises(TypeError, match="cannot cache a set"):
        await cache.get_or_compute("room_state", "r1", gate)
    assert cache.store.entries == 0


async def test_cancelling_the_first_waiter_does_not_wedge_the_others() -> None:
    cache = manager()
    gate = Gate()
    first = asyncio.create_task(cache.get_or_compute("room_state", "r1", gate))
    await gate.started.wait()
    second = asyncio.create_task(cache.get_or_compute("room_state", "r1", gate))
    await asyncio.sleep(0)  # the second joins the flight
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    gate.opened.set()
    async with asyncio.timeout(WAIT):
        assert await second == {"queue": [1, 2, 3]}
    assert gate.calls == 1
    assert await cache.get("room_state", "r1") == {"queue": [1, 2, 3]}


Invalidate = Callable[[CacheManager], Awaitable[Any]]
INVALIDATIONS: dict[str, tuple[Invalidate, bool]] = {
    "tag": (lambda c: c.invalidate_tags("room:1"), True),
    "key": (lambda c: c.delete("track_queue", "r1"), True),
    "namespace": (lambda c: c.clear("track_queue"), True),
    "everything": (lambda c: c.clear(), True),
    "another tag": (lambda c: c.invalidate_tags("room:2"), False),
    "another key": (lambda c: c.delete("track_queue", "r2"), False),
    "another namespace": (lambda c: c.clear("room_state"), False),
}


@pytest.mark.parametrize("name", INVALIDATIONS)
async def test_a_computation_overtaken_by_an_invalidation_is_returned_but_not_cached(name: str) -> None:
    invalidate, stale = INVALIDATIONS[name]
    cache = manager()
    gate = Gate()
    caller = asyncio.create_task(cache.get_or_compute("track_queue", "r1", gate, tags=["room:1"]))
    await gate.started.wait()
    await invalidate(cache)
    gate.opened.set()
    assert await caller == {"queue": [1, 2, 3]}  # the caller still gets what it asked for
    cached = await cache.get("track_queue", "r1")
    assert (cached is None) is stale
    assert cache.stats()["namespaces"]["track_queue"]["stale_skips"] == int(stale)


async def test_a_disabled_cache_always_misses_and_just_computes() -> None:
    cache = manager(enabled=False)
    gate = Gate()
    gate.opened.set()
    assert not await cache.set("room_state", "r1", {"a": 1})
    assert await cache.get("room_state", "r1", "miss") == "miss"
    assert await cache.get_or_compute("room_state", "r1", gate) == {"queue": [1, 2, 3]}
    assert await cache.get_or_compute("room_state", "r1", gate) == {"queue": [1, 2, 3]}
    assert gate.calls == 2
    assert await cache.invalidate_tags("room:1") == 0
    assert cache.stats()["enabled"] is False and cache.store.entries == 0
    assert cache.health()["status"] == "healthy"


async def test_set_get_delete_and_ttl_through_the_manager() -> None:
    clock = FakeClock()
    cache = manager(clock=clock)
    assert await cache.set("user_data", "u1", {"name": "Ada"}, ttl=10, tags=["user:1"])
    assert await cache.get("user_data", "u1") == {"name": "Ada"}
    clock.advance(10)
    assert await cache.get("user_data", "u1") is None
    await cache.set("user_data", "u1", {"name": "Ada"})
    await cache.delete("user_data", "u1")
    assert await cache.get("user_data", "u1") is None


async def test_health_reports_a_low_hit_rate_after_enough_lookups() -> None:
    cache = manager()
    for i in range(99):
        await cache.get("room_state", f"k{i}")
    assert cache.health()["reasons"] == []  # 99 lookups: too few to judge
    await cache.get("room_state", "k99")
    health = cache.health()
    assert health["status"] == "degraded"
    assert health["reasons"] == ["hit rate 0% under 70% over 100 lookups"]
    await cache.set("room_state", "hot", 1)
    for _ in range(300):
        await cache.get("room_state", "hot")
    assert cache.health()["status"] == "healthy"  # 300 / 400 = 75 %
    assert cache.health()["redis"] == "disabled"


async def test_health_reports_a_budget_nearly_used() -> None:
    store = store_of(spec("a"), max_entries=10)
    cache = CacheManager(store)
    for i in range(9):
        await cache.set("a", f"k{i}", i)
    assert cache.health()["status"] == "healthy"  # 90 % is not above 90 %
    await cache.set("a", "k9", 9)
    assert cache.health()["reasons"] == ["entries at 100% of the limit (10)"]


async def test_maintenance_purges_expired_entries_and_logs_statistics_then_stops() -> None:
    clock = FakeClock()
    cache = manager(clock=clock, cleanup_interval=0.01, stats_interval=0.01)
    await cache.set("room_state", "r1", 1)
    await cache.get("room_state", "r1")
    clock.advance(31)
    with capture_logs() as logs:
        await cache.start()
        await until(lambda: cache.store.entries == 0, "expired entry purged")
        await until(lambda: any(entry["event"] == "cache stats" for entry in logs), "statistics logged")
        await cache.stop()
    stats_line = next(entry for entry in logs if entry["event"] == "cache stats")
    assert stats_line["namespaces"]["room_state"] == "0 entries, 1/1 hits"
    assert cache.store.stats()["evictions"]["ttl"] == 1
    assert cache._maintenance is None


def test_settings_bring_the_issue_13_namespaces_from_config_cache_yml() -> None:
    settings = Settings()
    namespaces = {
        name: (ns.ttl, ns.priority, ns.compress, ns.policy, ns.codec) for name, ns in settings.cache_namespaces.items()
    }
    assert namespaces == {
        "room_state": (30, "high", False, "lru", "json"),
        "track_queue": (60, "high", False, "lru", "json"),
        "user_data": (600, "medium", True, "lru", "json"),
        "file_metadata": (3600, "low", True, "lru", "json"),
        "api_response": (30, "medium", False, "lru", "msgpack"),
        "db_query": (180, "high", True, "lru", "json"),
    }
    cache = CacheManager.from_settings(settings)
    assert cache.store.namespace("file_metadata").spec.priority is Priority.LOW
    assert (cache.store.max_entries, cache.store.max_bytes) == (10_000, 100 * 1024 * 1024)
    assert cache.redis_status == "disabled"


def test_a_config_file_can_choose_policies_codecs_and_a_section_per_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cache.yml").write_text(
        "default:\n"
        "  cache_namespaces:\n"
        "    a: {ttl: 5, policy: lfu, codec: msgpack, max_entries: 3}\n"
        "production:\n"
        "  cache_max_entries: 50\n"
        "  cache_namespaces:\n"
        "    b: {ttl: 7, priority: low, policy: random}\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("SPOTIK_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("CACHE_ENABLED", "false")
    default = CacheManager.from_settings(Settings())
    assert not default.enabled
    assert default.store.namespace("a").spec == spec("a", ttl=5, policy=Policy.LFU, codec=Codec.MSGPACK, max_entries=3)
    monkeypatch.setenv("SPOTIK_ENV", "production")
    production = CacheManager.from_settings(Settings(jwt_secret="x" * 40))
    assert list(production.store.namespaces) == ["b"]
    assert production.store.max_entries == 50
    assert production.store.namespace("b").spec.policy is Policy.RANDOM
