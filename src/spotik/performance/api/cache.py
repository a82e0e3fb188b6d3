"""The cache as a performance-API subsystem (``cache``): headline figures, the dashboard section (per namespace:
hits, misses, hit rate, evictions by cause, entries, bytes), health, optimize (purge expired entries), a bounded
benchmark, and ``POST /api/performance/cache/clear``."""

from __future__ import annotations

import time
from typing import Any, Final

from spotik.cache import CacheManager
from spotik.performance.api.subsystems import ComponentHealth, Figure, timings

# The documented cache types (CACHE_TYPES) that are spelt differently from the namespaces.
NAMESPACE_OF: Final = {"database_query": "db_query"}
BENCH_NAMESPACE: Final = "api_response"
BENCH_KEY: Final = "__performance_benchmark__"
BENCH_ITERATIONS: Final = 200


class CacheSubsystem:
    name = "cache"

    def __init__(self, cache: CacheManager) -> None:
        self.cache = cache

    def headline(self) -> dict[str, Figure]:
        stats = self.cache.store.stats()
        rate = stats["hit_rate"]
        return {
            "enabled": "yes" if self.cache.enabled else "no",
            "redis": self.cache.redis_status,
            "hit_rate": None if rate is None else round(rate, 4),
            "total_entries": stats["entries"],
            "bytes": stats["bytes"],
            "lookups": stats["lookups"],
        }

    async def dashboard(self) -> dict[str, Any]:
        stats = self.cache.stats()
        return {**stats, "health": self.cache.health()}

    async def health(self) -> ComponentHealth:
        report = self.cache.health()
        details = {key: value for key, value in report.items() if key not in ("status", "reasons")}
        return ComponentHealth(report["status"], tuple(report["reasons"]), details)

    async def optimize(self) -> dict[str, Any]:
        return {"expired_purged": self.cache.store.purge_expired()}

    async def benchmark(self) -> dict[str, Any]:
        """Set and read back one small value (a scratch key, deleted afterwards) ``BENCH_ITERATIONS`` times; the
        namespace's hit counters are put back, so the statistics keep describing the app's own reads."""
        value = {"id": "8a1f6a52-9ac4-4c1e-a0f6-61d2f0f6a001", "name": "benchmark", "votes": list(range(20))}
        sets: list[float] = []
        gets: list[float] = []
        space = self.cache.store.namespace(BENCH_NAMESPACE)
        counters = (space.hits, space.misses, space.redis_hits)
        try:
            for _ in range(BENCH_ITERATIONS):
                started = time.perf_counter()
                await self.cache.set(BENCH_NAMESPACE, BENCH_KEY, value)
                sets.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                await self.cache.get(BENCH_NAMESPACE, BENCH_KEY)
                gets.append((time.perf_counter() - started) * 1000)
        finally:
            await self.cache.delete(BENCH_NAMESPACE, BENCH_KEY)
            space.hits, space.misses, space.redis_hits = counters
        return {"enabled": self.cache.enabled, "set": timings(sets), "get": timings(gets)}

    async def clear_cache(self, cache_type: str) -> int:
        """``all`` empties every namespace; any other documented type its namespace (here, in Redis, on peers)."""
        if cache_type == "all":
            return await self.cache.clear()
        return await self.cache.clear(NAMESPACE_OF.get(cache_type, cache_type))
