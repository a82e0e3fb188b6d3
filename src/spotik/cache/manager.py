"""The cache as the app uses it: one :class:`CacheManager` per app, built from the settings, started and stopped
by the lifespan. It joins the in-process tier (:mod:`spotik.cache.store`), the optional Redis tier
(:mod:`spotik.cache.redis_tier`), single-flight computation, the periodic maintenance and health.

**Reading through the cache.** ``get_or_compute(ns, key, compute)`` answers from the in-process tier, else from
Redis, else awaits ``compute()`` once for all concurrent callers of the same key (single flight): the computation
runs in a task of its own and every caller awaits it through ``asyncio.shield``, so a caller that is cancelled
leaves the others waiting on the same result; an exception reaches every waiter and nothing is cached. Every
caller gets its own decoded copy of the value (the first one too, so a miss and a hit return the same shapes).

**Never stale.** The flight captures the store's invalidation sequence before reading Redis or computing, and the
result is cached only when no invalidation of the key, one of its tags, its namespace or everything happened
meanwhile (the store's docstring explains the record). After writing to Redis the flight checks again and removes
its write if an invalidation overtook it. What remains: an invalidation on another instance reaches this one
through pub/sub, so a computation here that ends within that delay (a few ms) can still cache a value its peer
just invalidated, for at most the entry's TTL. Closing that would take a version check on every Redis read.

**Redis outages.** Reads and writes go on from the in-process tier. An instance can't hear its peers'
invalidations meanwhile, so on entering an outage it caps every local entry's remaining TTL (and every new one) to
``cache_degraded_ttl``, and when the subscription had to be re-established it clears its in-process tier. Its own
invalidations are kept and replayed to Redis and the peers on recovery.

**Disabled** (``cache_enabled=false``): lookups miss, ``set`` stores nothing, ``get_or_compute`` just computes, but
invalidations still reach Redis and the peers (an instance without a cache still changes data others cache).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import structlog

from spotik.cache.codec import decode
from spotik.cache.policies import NamespaceSpec
from spotik.cache.redis_tier import Listener, RedisConfig, RedisTier
from spotik.cache.store import CacheStore

if TYPE_CHECKING:
    from spotik.settings import Settings

log = structlog.get_logger("spotik.cache")

T = TypeVar("T")
HIT_RATE_FLOOR = 0.70
MIN_LOOKUPS_FOR_HIT_RATE = 100
USAGE_CEILING = 0.90
_MISSING: Any = object()


class CacheManager(Listener):
    def __init__(
        self,
        store: CacheStore,
        *,
        enabled: bool = True,
        redis: RedisConfig | None = None,
        degraded_ttl: float = 5.0,
        cleanup_interval: float = 300.0,
        stats_interval: float = 60.0,
        instance_id: str | None = None,
    ) -> None:
        self.store = store
        self.enabled = enabled
        self.redis = RedisTier(redis, self, instance_id=instance_id) if redis is not None else None
        self.degraded_ttl = degraded_ttl
        self.cleanup_interval = cleanup_interval
        self.stats_interval = stats_interval
        self._flights: dict[tuple[str, str], asyncio.Task[bytes]] = {}
        self._maintenance: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> CacheManager:
        store = CacheStore(
            [NamespaceSpec.parse(name, ns.model_dump()) for name, ns in settings.cache_namespaces.items()],
            max_entries=settings.cache_max_entries,
            max_bytes=settings.cache_max_bytes,
            compress_threshold=settings.cache_compress_threshold,
            clock=clock,
        )
        redis = None
        if settings.redis_url:
            redis = RedisConfig(
                url=settings.redis_url,
                prefix=settings.cache_redis_prefix,
                timeout=settings.cache_redis_timeout,
                reconnect_max=settings.cache_redis_reconnect_max,
                max_connections=settings.redis_max_connections,
            )
        return cls(
            store,
            enabled=settings.cache_enabled,
            redis=redis,
            degraded_ttl=settings.cache_degraded_ttl,
            cleanup_interval=settings.cache_cleanup_interval,
            stats_interval=settings.cache_stats_interval,
        )

    # --- lifecycle -------------------------------------------------------------------------------------------

    async def start(self, *, redis_wait: float = 1.0) -> None:
        """Start the maintenance task and the Redis tier (waiting up to ``redis_wait`` s for it to connect; an
        unreachable Redis leaves the cache degraded, not the start failed)."""
        if self.redis is not None:
            await self.redis.start()
            await self.redis.wait_ready(redis_wait)
        self._maintenance = asyncio.get_running_loop().create_task(self.run_maintenance(), name="spotik-cache")

    async def stop(self) -> None:
        tasks = [t for t in (self._maintenance, *self._flights.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._maintenance = None
        if self.redis is not None:
            await self.redis.stop()

    async def run_maintenance(self) -> None:
        """Forever: purge expired entries every ``cleanup_interval`` s and log statistics every
        ``stats_interval`` s. A failing round is logged and the loop goes on; cancel the task to stop it."""
        loop = asyncio.get_running_loop()
        next_cleanup = loop.time() + self.cleanup_interval
        next_stats = loop.time() + self.stats_interval
        while True:
            await asyncio.sleep(max(0.0, min(next_cleanup, next_stats) - loop.time()))
            now = loop.time()
            try:
                if now >= next_cleanup:
                    next_cleanup = now + self.cleanup_interval
                    purged = self.store.purge_expired()
                    if purged:
                        log.debug("cache expired entries purged", purged=purged)
                if now >= next_stats:
                    next_stats = now + self.stats_interval
                    self.log_stats()
            except Exception:
                log.exception("cache maintenance failed")

    def log_stats(self) -> None:
        stats = self.store.stats()
        log.info(
            "cache stats",
            redis=self.redis_status,
            entries=stats["entries"],
            bytes=stats["bytes"],
            hit_rate=None if stats["hit_rate"] is None else round(stats["hit_rate"], 3),
            lookups=stats["lookups"],
            evictions=stats["evictions"],
            namespaces={
                name: f"{ns['entries']} entries, {ns['hits'] + ns['redis_hits']}/{ns['hits'] + ns['misses']} hits"
                for name, ns in stats["namespaces"].items()
            },
        )

    # --- reading ---------------------------------------------------------------------------------------------

    async def get(self, ns: str, key: str, default: Any = None) -> Any:
        """The cached value (a fresh copy), from this process or else from Redis; ``default`` on a miss."""
        if not self.enabled:
            return default
        store = self.store
        value = store.get(ns, key, _MISSING)
        if value is not _MISSING or self.redis is None or not self.redis.up:
            return default if value is _MISSING else value
        with store.watching() as since:
            found = await self.redis.get(ns, key)
            if found is None:
                return default
            blob, remaining = found
            store.put(ns, key, blob, ttl=remaining, since=since)
        store.namespace(ns).redis_hits += 1
        return decode(blob)

    def local(self, ns: str, key: str) -> Any:
        """The value if this process holds it (a fresh copy), else None (also with the cache off); never asks
        Redis."""
        return self.store.get(ns, key) if self.enabled else None

    async def get_or_compute(
        self,
        ns: str,
        key: str,
        compute: Callable[[], Awaitable[T]],
        *,
        ttl: float | None = None,
        tags: Iterable[str] = (),
        on_miss: Callable[[], Awaitable[object]] | None = None,
    ) -> T:
        """The cached value, else ``await compute()`` (once for all concurrent callers of ``ns``/``key``), cached
        for ``ttl`` (default: the namespace's) with ``tags``. The value comes back through the namespace's codec
        (a tuple becomes a list). ``on_miss`` is awaited first when this process does not hold the value (before
        Redis is asked or a computation is awaited)."""
        if not self.enabled:
            return await compute()
        value = self.store.get(ns, key, _MISSING)
        if value is not _MISSING:
            return cast(T, value)
        if on_miss is not None:
            await on_miss()
        flight = self._flights.get((ns, key))
        if flight is None:
            flight = asyncio.get_running_loop().create_task(self._fill(ns, key, compute, ttl, tuple(tags)))
            self._flights[(ns, key)] = flight
            flight.add_done_callback(partial(self._landed, (ns, key)))
        return cast(T, decode(await asyncio.shield(flight)))

    async def _fill(
        self, ns: str, key: str, compute: Callable[[], Awaitable[Any]], ttl: float | None, tags: tuple[str, ...]
    ) -> bytes:
        store, redis = self.store, self.redis
        with store.watching() as since:
            if redis is not None and redis.up:
                found = await redis.get(ns, key)
                if found is not None:
                    blob, remaining = found
                    store.put(ns, key, blob, ttl=remaining, tags=tags, since=since)
                    store.namespace(ns).redis_hits += 1
                    return blob
            blob = store.encode(ns, await compute())
            if store.put(ns, key, blob, ttl=ttl, tags=tags, since=since) and redis is not None and redis.up:
                await redis.set(ns, key, blob, ttl or store.namespace(ns).spec.ttl, tags)
                if store.is_stale(since, ns, key, tags):  # an invalidation overtook the write to Redis
                    await redis.forget(ns, key)
            return blob

    def _landed(self, flight_key: tuple[str, str], task: asyncio.Task[bytes]) -> None:
        if self._flights.get(flight_key) is task:
            del self._flights[flight_key]
        if not task.cancelled():
            task.exception()  # retrieved here, raised to every waiter; never "exception was never retrieved"

    # --- writing and invalidating ----------------------------------------------------------------------------

    async def set(self, ns: str, key: str, value: Any, *, ttl: float | None = None, tags: Iterable[str] = ()) -> bool:
        """Cache ``value`` (JSON-shaped; see :mod:`spotik.cache.codec`) in this process and in Redis; False when it
        was not stored (cache disabled, or it does not fit without evicting higher priorities)."""
        blob = self.store.encode(ns, value)  # an unsupported value raises even when disabled
        if not self.enabled:
            return False
        tags = tuple(tags)
        if not self.store.put(ns, key, blob, ttl=ttl, tags=tags):
            return False
        if self.redis is not None and self.redis.up:
            await self.redis.set(ns, key, blob, ttl or self.store.namespace(ns).spec.ttl, tags)
        return True

    async def delete(self, ns: str, key: str) -> None:
        self.store.delete(ns, key)
        if self.redis is not None:
            await self.redis.delete(ns, key)

    async def invalidate_tags(self, *tags: str) -> int:
        """Remove every entry tagged with any of ``tags`` in every namespace, here, in Redis and on the other
        instances; the number of entries this process dropped."""
        removed = self.store.invalidate_tags(*tags)
        if self.redis is not None:
            removed += self._drop(await self.redis.invalidate_tags(tags))
        return removed

    async def clear(self, ns: str | None = None) -> int:
        """Empty one namespace (every namespace when None), here, in Redis and on the other instances."""
        removed = self.store.clear(ns)
        if self.redis is not None:
            await self.redis.clear(ns)
        return removed

    def _drop(self, pairs: Iterable[Iterable[str]]) -> int:
        removed = 0
        for ns, key in pairs:
            if ns in self.store.namespaces:
                removed += self.store.delete(ns, key)
        return removed

    # --- what the Redis tier tells us ------------------------------------------------------------------------

    def on_invalidation(self, message: dict[str, Any]) -> None:
        op, ns = message.get("op"), message.get("ns")
        if op == "delete" and ns in self.store.namespaces:
            self.store.delete(str(ns), str(message.get("key")))
        elif op == "tags":
            self.store.invalidate_tags(*map(str, message.get("tags") or ()))
            self._drop(message.get("keys") or ())
        elif op == "clear" and (ns is None or ns in self.store.namespaces):
            self.store.clear(None if ns is None else str(ns))

    def on_redis_down(self) -> None:
        self.store.ttl_cap = self.degraded_ttl
        self.store.cap_ttls(self.degraded_ttl)

    def on_redis_up(self, resubscribed: bool) -> None:
        self.store.ttl_cap = None
        if resubscribed:
            self.store.clear()

    # --- statistics and health -------------------------------------------------------------------------------

    @property
    def redis_status(self) -> Literal["ok", "degraded", "disabled"]:
        return "disabled" if self.redis is None else self.redis.status

    def stats(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "redis": self.redis_status,
            "redis_tier": None if self.redis is None else self.redis.stats(),
            "in_flight": len(self._flights),
            **self.store.stats(),
        }

    def health(self) -> dict[str, Any]:
        """``status`` "healthy" or "degraded", with the ``reasons``: a hit rate under 70 % once there were 100
        lookups, entries or bytes above 90 % of their limit, Redis unreachable."""
        stats = self.store.stats()
        reasons: list[str] = []
        rate = stats["hit_rate"]
        if rate is not None and stats["lookups"] >= MIN_LOOKUPS_FOR_HIT_RATE and rate < HIT_RATE_FLOOR:
            reasons.append(f"hit rate {rate:.0%} under {HIT_RATE_FLOOR:.0%} over {stats['lookups']} lookups")
        for what, limit in (("entries", "max_entries"), ("bytes", "max_bytes")):
            if stats[what] > USAGE_CEILING * stats[limit]:
                reasons.append(f"{what} at {stats[what] / stats[limit]:.0%} of the limit ({stats[limit]})")
        if self.redis_status == "degraded":
            reasons.append("redis unreachable: in-process tier only, local TTLs capped")
        return {
            "status": "degraded" if reasons else "healthy",
            "reasons": reasons,
            "enabled": self.enabled,
            "redis": self.redis_status,
            "hit_rate": rate,
            "entries": stats["entries"],
            "bytes": stats["bytes"],
        }
