"""The shared second tier: warm entries in Redis for every instance, and invalidations broadcast to every instance's
in-process tier.

**Keys.** ``<prefix>v:<namespace>:<key>`` holds exactly the bytes the in-process tier stores (flag byte + body, see
:mod:`spotik.cache.codec`) with the entry's TTL as the Redis TTL; an instance that reads it keeps it locally for the
TTL Redis has left, so both copies expire together.

**Tags are Redis sets** (``<prefix>t:<tag>`` → the data keys written with that tag; the set lives as long as its
longest-lived member). A write and an invalidation are each one Lua script, so neither sees the other half-done.
The other common scheme, a version key per tag stored beside each entry, makes an invalidation one ``INCR`` but every
read a second lookup (the entry's tag versions against the current ones); here reads outnumber invalidations by far,
so reads stay one ``GET`` and invalidations pay instead. Scripts touch keys they did not declare, which is fine on one
Redis server (not on a Redis Cluster).

**Invalidations** (``delete``, tags, ``clear``) change Redis and then publish on ``<prefix>invalidate`` a small JSON
message naming the instance; every other instance drops the same entries from its own tier (an instance skips its
own messages: it has already dropped them). A tag message also lists the data keys the script found in the tag's
sets, so an instance drops entries it read from Redis without knowing their tags.

**Outages.** Every call is bounded by the socket timeout setting and redis-py's own retries are off, so a failure
surfaces at once; the first one marks the tier down (logged once per outage, not per call), and from then on reads
and writes skip Redis (the in-process tier keeps serving) while invalidations are kept (up to
``PENDING_MAX``; past that, one "clear everything" replaces them). One subscriber task per process owns the pub/sub
connection; it reconnects with capped backoff and jitter, re-subscribes, replays the kept invalidations, and then
reports the recovery to its listener. While down, an instance cannot hear its peers' invalidations: the manager
caps local TTLs to a short setting for the outage and clears its in-process tier when the subscription had to be
re-established (messages may have been missed); see :mod:`spotik.cache.manager`.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from spotik.backoff import backoff_delay
from spotik.redispool import reconnecting_client

log = structlog.get_logger("spotik.cache.redis")

REDIS_FAILURES: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)
CLOSE_TIMEOUT = 2.0  # redis-py#3941: PubSub.aclose() can hang
POLL_TIMEOUT = 1.0  # s a subscriber waits for a message before checking whether Redis came back
PENDING_MAX = 1000  # invalidations kept during an outage
SCAN_BATCH = 500

# KEYS[1] the data key, KEYS[2..] its tag sets; ARGV[1] the bytes, ARGV[2] the TTL in ms.
SET_SCRIPT = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
for i = 2, #KEYS do
  redis.call('SADD', KEYS[i], KEYS[1])
  if redis.call('PTTL', KEYS[i]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
end
return 1
"""
# KEYS: tag sets. Deletes their members and the sets; returns the members.
INVALIDATE_TAGS_SCRIPT = """
local members = {}
for i = 1, #KEYS do
  for _, key in ipairs(redis.call('SMEMBERS', KEYS[i])) do
    redis.call('UNLINK', key)
    table.insert(members, key)
  end
  redis.call('UNLINK', KEYS[i])
end
return members
"""

Invalidation = (
    tuple[Literal["delete"], str, str] | tuple[Literal["tags"], tuple[str, ...]] | tuple[Literal["clear"], str | None]
)


@dataclass(frozen=True, slots=True)
class RedisConfig:
    url: str
    prefix: str = "spotik:cache:"
    timeout: float = 0.25
    reconnect_max: float = 5.0
    reconnect_initial: float = 0.1
    max_connections: int = 50


class Listener:
    """What the tier tells its manager; the manager overrides these."""

    def on_invalidation(self, message: dict[str, Any]) -> None: ...

    def on_redis_down(self) -> None: ...

    def on_redis_up(self, resubscribed: bool) -> None: ...


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class RedisTier:
    def __init__(self, config: RedisConfig, listener: Listener, *, instance_id: str | None = None) -> None:
        self.config = config
        self.instance_id = instance_id or uuid.uuid4().hex
        self.channel = f"{config.prefix}invalidate"
        self.client: Redis = reconnecting_client(
            config.url,
            max_connections=config.max_connections,
            connect_timeout=config.timeout,
            socket_timeout=config.timeout,
        )
        self._listener = listener
        self._set_script = self.client.register_script(SET_SCRIPT)
        self._tags_script = self.client.register_script(INVALIDATE_TAGS_SCRIPT)
        self._pending: deque[Invalidation] = deque()
        self._stopping = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.up = False
        self.outages = 0
        self.last_error: str | None = None
        self._down_since: float | None = None
        self.received = 0
        self.published = 0
        self.reconnects = 0

    # --- keys ------------------------------------------------------------------------------------------------

    def data_key(self, ns: str, key: str) -> str:
        return f"{self.config.prefix}v:{ns}:{key}"

    def tag_key(self, tag: str) -> str:
        return f"{self.config.prefix}t:{tag}"

    def _parse_data_key(self, raw: bytes) -> tuple[str, str] | None:
        head = f"{self.config.prefix}v:"
        text = raw.decode()
        if not text.startswith(head):
            return None
        ns, _, key = text[len(head) :].partition(":")
        return ns, key

    # --- lifecycle -------------------------------------------------------------------------------------------

    @property
    def status(self) -> Literal["ok", "degraded"]:
        return "ok" if self.up else "degraded"

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._subscriber(), name="spotik-cache-redis-subscriber")

    async def wait_ready(self, within: float) -> bool:
        """Whether the tier is subscribed and up within ``within`` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), within)
        return self.up

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, *REDIS_FAILURES):
                await self._task
            self._task = None
        with contextlib.suppress(*REDIS_FAILURES):
            await asyncio.wait_for(self.client.aclose(), CLOSE_TIMEOUT)

    # --- reads and writes: skipped while down ----------------------------------------------------------------

    async def get(self, ns: str, key: str) -> tuple[bytes, float | None] | None:
        """The bytes and the seconds Redis has left for them, or None (a miss, or Redis down)."""
        if not self.up:
            return None
        name = self.data_key(ns, key)
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.get(name)
                pipe.pttl(name)
                blob, pttl = await pipe.execute()
        except REDIS_FAILURES as exc:
            self._mark_down(exc, "get")
            return None
        if blob is None or pttl == -2:
            return None
        return bytes(blob), (pttl / 1000 if pttl > 0 else None)

    async def set(self, ns: str, key: str, blob: bytes, ttl: float, tags: Iterable[str] = ()) -> bool:
        if not self.up:
            return False
        keys = [self.data_key(ns, key), *(self.tag_key(tag) for tag in tags)]
        try:
            await self._set_script(keys=keys, args=[blob, max(1, int(ttl * 1000))])
        except REDIS_FAILURES as exc:
            self._mark_down(exc, "set")
            return False
        return True

    async def forget(self, ns: str, key: str) -> None:
        """Remove a key without telling the other instances (undoing a write that lost a race)."""
        if self.up:
            try:
                await self.client.unlink(self.data_key(ns, key))
            except REDIS_FAILURES as exc:
                self._mark_down(exc, "forget")

    # --- invalidations: kept while down, replayed on recovery ------------------------------------------------

    async def delete(self, ns: str, key: str) -> None:
        await self._invalidate(("delete", ns, key))

    async def invalidate_tags(self, tags: Iterable[str]) -> list[tuple[str, str]]:
        """The (namespace, key) pairs Redis held under ``tags`` (all removed)."""
        return await self._invalidate(("tags", tuple(tags)))

    async def clear(self, ns: str | None) -> None:
        await self._invalidate(("clear", ns))

    async def _invalidate(self, op: Invalidation) -> list[tuple[str, str]]:
        if self.up:
            try:
                return await self._apply(op)
            except REDIS_FAILURES as exc:
                self._mark_down(exc, op[0])
        self._keep(op)
        return []

    def _keep(self, op: Invalidation) -> None:
        if self._pending and self._pending[0] == ("clear", None):
            return  # everything will be cleared anyway
        if op == ("clear", None) or len(self._pending) >= PENDING_MAX:
            self._pending.clear()
            self._pending.append(("clear", None))
        else:
            self._pending.append(op)

    async def _apply(self, op: Invalidation) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        message: dict[str, Any]
        if op[0] == "delete":
            _, ns, key = op
            await self.client.unlink(self.data_key(ns, key))
            message = {"op": "delete", "ns": ns, "key": key}
        elif op[0] == "tags":
            tags = op[1]
            members = await self._tags_script(keys=[self.tag_key(tag) for tag in tags])
            found = [pair for raw in members if (pair := self._parse_data_key(raw)) is not None]
            message = {"op": "tags", "tags": list(tags), "keys": found}
        else:
            ns_or_all = op[1]
            pattern = _glob_escape(self.config.prefix) + (
                "*" if ns_or_all is None else f"v:{_glob_escape(ns_or_all)}:*"
            )
            batch: list[bytes] = []
            async for name in self.client.scan_iter(match=pattern, count=SCAN_BATCH):
                batch.append(name)
                if len(batch) >= SCAN_BATCH:
                    await self.client.unlink(*batch)
                    batch = []
            if batch:
                await self.client.unlink(*batch)
            message = {"op": "clear", "ns": ns_or_all}
        await self.client.publish(self.channel, orjson.dumps({"from": self.instance_id, **message}))
        self.published += 1
        return found

    # --- the subscriber and the outage bookkeeping -----------------------------------------------------------

    async def _subscriber(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            pubsub: PubSub | None = None
            try:
                pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(self.channel)
                attempt = 0
                await self._recover(resubscribed=True)
                self._subscribed.set()
                while not self._stopping.is_set():
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=POLL_TIMEOUT)
                    if message is not None and message.get("type") == "message":
                        self._receive(message["data"])
                    elif not self.up:  # a command failed while the subscription stayed: is Redis back?
                        await self.client.ping()
                        await self._recover(resubscribed=False)
            except asyncio.CancelledError:
                raise
            except REDIS_FAILURES as exc:
                self._mark_down(exc, "subscribe")
            except Exception:  # a bug must not end invalidations for good: log it and start over
                log.exception("cache redis subscriber failed")
                self._mark_down(RuntimeError("subscriber failed"), "subscribe")
            finally:
                self._subscribed.clear()
                if pubsub is not None:
                    with contextlib.suppress(*REDIS_FAILURES):
                        await asyncio.wait_for(pubsub.aclose(), CLOSE_TIMEOUT)  # type: ignore[no-untyped-call]
            if self._stopping.is_set():
                break
            self.reconnects += 1
            delay = backoff_delay(attempt, initial=self.config.reconnect_initial, cap=self.config.reconnect_max)
            attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _recover(self, *, resubscribed: bool) -> None:
        """Redis answers again: drop pooled connections that died with it, replay the kept invalidations, tell the
        listener, and only then say Redis is up."""
        if self.up:
            return
        if self.outages:
            await self.client.connection_pool.disconnect(inuse_connections=False)
        while self._pending:
            await self._apply(self._pending[0])
            self._pending.popleft()
        self._listener.on_redis_up(resubscribed)
        if self._down_since is not None:
            downtime = asyncio.get_running_loop().time() - self._down_since
            log.info("cache redis reachable again", downtime_seconds=round(downtime, 3))
        self.up = True
        self._down_since = None

    def _mark_down(self, error: BaseException, where: str) -> None:
        self.last_error = f"{type(error).__name__}: {error}"
        if self.up or self._down_since is None:
            self.outages += 1
            self._down_since = asyncio.get_running_loop().time()
            log.warning("cache redis unreachable: in-process tier only", where=where, error=self.last_error)
            self.up = False
            self._listener.on_redis_down()

    def _receive(self, data: bytes) -> None:
        self.received += 1
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            log.warning("malformed cache invalidation ignored", size=len(data))
            return
        if isinstance(message, dict) and message.get("from") != self.instance_id:
            self._listener.on_invalidation(message)

    def stats(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "instance_id": self.instance_id,
            "channel": self.channel,
            "outages": self.outages,
            "last_error": self.last_error,
            "pending_invalidations": len(self._pending),
            "published": self.published,
            "received": self.received,
            "reconnects": self.reconnects,
        }
