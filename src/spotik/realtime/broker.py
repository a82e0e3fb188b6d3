"""Room broadcasts within one process (``LocalBroker``) or across Spotik instances (``RedisBroker``).

``publish`` never awaits: the event is delivered to this instance's sockets at once (so local clients never wait
for a network hop and keep being served during a Redis outage) and, with Redis, handed to a publisher task.

**One channel, not one per room.** Every instance subscribes to a single channel ``<prefix>:broadcast`` and drops
events for rooms in which it has no socket (a dict lookup). Per-room channels would save bandwidth only when
instances host disjoint rooms, and in exchange every ``join_room`` would need a SUBSCRIBE round trip before it could
receive events (a race that loses events) and every last leave an UNSUBSCRIBE. Room events are human-paced (votes,
playback), and instances are few, so one channel is simpler and has no subscription races.

**Frames on the channel** are ``<instance>|<room>|<type>|<envelope JSON>``: the envelope is encoded once by the
publishing instance and delivered byte-for-byte; an instance skips frames that carry its own id, because it has
already delivered them locally (no double delivery).

**Outages.** One subscriber task per process owns the pub/sub connection; when Redis goes away it logs the outage
once, retries with capped exponential backoff and jitter, re-subscribes and logs the recovery (then calls
``on_recovered``, which re-publishes this instance's presence). While Redis is down, frames for other instances are
dropped and counted; local delivery never stops. redis-py's own retries are switched off so that failures surface
at once and this loop decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from spotik.backoff import backoff_delay
from spotik.realtime.protocol import Outgoing, is_critical
from spotik.redispool import reconnecting_client

log = structlog.get_logger("spotik.realtime.broker")

Deliver = Callable[[str, str, Outgoing], None]  # (room_id, event type, encoded frame)
REDIS_FAILURES: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)
PUBSUB_CLOSE_TIMEOUT = 2.0  # redis-py#3941: PubSub.aclose() can hang


class Broker(Protocol):
    instance_id: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def publish(self, room_id: str, event_type: str, item: Outgoing) -> None: ...

    def stats(self) -> dict[str, Any]: ...


class LocalBroker:
    def __init__(self, deliver: Deliver, *, instance_id: str | None = None) -> None:
        self.instance_id = instance_id or uuid.uuid4().hex
        self._deliver = deliver
        self.published = 0

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def publish(self, room_id: str, event_type: str, item: Outgoing) -> None:
        self.published += 1
        self._deliver(room_id, event_type, item)

    def stats(self) -> dict[str, Any]:
        return {"kind": "local", "instance_id": self.instance_id, "published": self.published}


class RedisLink:
    """The shared Redis client and the instance's view of Redis health (one outage is logged once)."""

    def __init__(
        self, url: str, *, connect_timeout: float = 2.0, socket_timeout: float = 5.0, max_connections: int = 50
    ) -> None:
        self.url = url
        self.client: Redis = reconnecting_client(
            url, max_connections=max_connections, connect_timeout=connect_timeout, socket_timeout=socket_timeout
        )
        self.up = False
        self.outages = 0
        self.down_since: float | None = None
        self.last_error: str | None = None
        self._recovered_callbacks: list[Callable[[], Awaitable[None]]] = []

    def on_recovered(self, callback: Callable[[], Awaitable[None]]) -> None:
        self._recovered_callbacks.append(callback)

    def mark_down(self, error: BaseException, where: str) -> None:
        self.last_error = f"{type(error).__name__}: {error}"
        if self.up or self.down_since is None:
            self.outages += 1
            self.down_since = asyncio.get_running_loop().time()
            log.warning("redis unreachable: serving local clients only", where=where, error=self.last_error)
        self.up = False

    @property
    def recovered_callbacks(self) -> list[Callable[[], Awaitable[None]]]:
        return list(self._recovered_callbacks)

    def mark_up(self) -> None:
        if self.up:
            return
        if self.down_since is not None and self.outages:
            downtime = asyncio.get_running_loop().time() - self.down_since
            log.info("redis reachable again", downtime_seconds=round(downtime, 3))
        self.up = True
        self.down_since = None

    async def aclose(self) -> None:
        with contextlib.suppress(*REDIS_FAILURES):
            await asyncio.wait_for(self.client.aclose(), PUBSUB_CLOSE_TIMEOUT)

    def stats(self) -> dict[str, Any]:
        return {"up": self.up, "outages": self.outages, "last_error": self.last_error}


class RedisBroker:
    def __init__(
        self,
        link: RedisLink,
        deliver: Deliver,
        *,
        channel_prefix: str,
        instance_id: str | None = None,
        outbox_size: int = 10_000,
        reconnect_initial: float = 0.1,
        reconnect_max: float = 5.0,
        poll_timeout: float = 1.0,
    ) -> None:
        self.instance_id = instance_id or uuid.uuid4().hex
        self.link = link
        self.channel = f"{channel_prefix}:broadcast"
        self._deliver = deliver
        self._outbox: deque[bytes] = deque()
        self._outbox_size = outbox_size
        self._outbox_ready = asyncio.Event()
        self._reconnect_initial = reconnect_initial
        self._reconnect_max = reconnect_max
        self._poll_timeout = poll_timeout
        self._stopping = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.published = 0
        self.sent = 0
        self.received = 0
        self.echoes_skipped = 0
        self.dropped = 0
        self.reconnects = 0

    # --- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._subscriber(), name="spotik-ws-redis-subscriber"),
            loop.create_task(self._publisher(), name="spotik-ws-redis-publisher"),
        ]

    async def wait_subscribed(self, within: float) -> bool:
        try:
            await asyncio.wait_for(self._subscribed.wait(), within)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        self._stopping.set()
        self._outbox_ready.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, *REDIS_FAILURES):
                await task
        self._tasks = []

    # --- publishing ------------------------------------------------------------------------------------------

    def publish(self, room_id: str, event_type: str, item: Outgoing) -> None:
        self.published += 1
        self._deliver(room_id, event_type, item)
        if not self.link.up:
            self.dropped += 1
            return
        if len(self._outbox) >= self._outbox_size:
            self._outbox.popleft()
            self.dropped += 1
        self._outbox.append(f"{self.instance_id}|{room_id}|{event_type}|".encode() + item.text.encode())
        self._outbox_ready.set()

    async def _publisher(self) -> None:
        client = self.link.client
        while not self._stopping.is_set():
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            while self._outbox and not self._stopping.is_set():
                batch = [self._outbox.popleft() for _ in range(min(len(self._outbox), 100))]
                try:
                    async with client.pipeline(transaction=False) as pipe:
                        for frame in batch:
                            pipe.publish(self.channel, frame)
                        await pipe.execute()
                    self.sent += len(batch)
                except asyncio.CancelledError:
                    raise
                except REDIS_FAILURES as exc:
                    self.dropped += len(batch) + len(self._outbox)
                    self._outbox.clear()
                    self.link.mark_down(exc, "publish")

    # --- subscribing -----------------------------------------------------------------------------------------

    async def _subscriber(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            pubsub: PubSub | None = None
            try:
                pubsub = self.link.client.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(self.channel)
                attempt = 0
                self._subscribed.set()
                await self._recovered()
                while not self._stopping.is_set():
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=self._poll_timeout)
                    if message is not None and message.get("type") == "message":
                        self._receive(message["data"])
                    elif not self.link.up:
                        await self.link.client.ping()  # the publisher saw an error: is Redis back?
                        await self._recovered()
            except asyncio.CancelledError:
                raise
            except REDIS_FAILURES as exc:
                self._subscribed.clear()
                self.link.mark_down(exc, "subscribe")
            except Exception:  # a bug must not end fan-out for good: log it and start over
                self._subscribed.clear()
                log.exception("redis subscriber failed")
            finally:
                if pubsub is not None:
                    with contextlib.suppress(*REDIS_FAILURES):
                        await asyncio.wait_for(pubsub.aclose(), PUBSUB_CLOSE_TIMEOUT)  # type: ignore[no-untyped-call]
            if self._stopping.is_set():
                break
            self.reconnects += 1
            delay = backoff_delay(attempt, initial=self._reconnect_initial, cap=self._reconnect_max)
            attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _recovered(self) -> None:
        """Redis answers again: drop the pooled connections that died with it, re-publish what this instance holds
        (presence), and only then say Redis is up (so a half-recovery is not logged as a recovery)."""
        link = self.link
        if link.up:
            return
        if link.outages:
            await link.client.connection_pool.disconnect(inuse_connections=False)
        for callback in link.recovered_callbacks:
            await callback()
        link.mark_up()

    def _receive(self, frame: bytes) -> None:
        self.received += 1
        parts = frame.split(b"|", 3)
        if len(parts) != 4:
            log.warning("malformed broadcast frame ignored", size=len(frame))
            return
        instance_id, room_id, event_type, body = parts
        if instance_id.decode() == self.instance_id:
            self.echoes_skipped += 1
            return
        kind = event_type.decode()
        self._deliver(room_id.decode(), kind, Outgoing.of(body, kind, critical=is_critical(kind)))

    def stats(self) -> dict[str, Any]:
        return {
            "kind": "redis",
            "instance_id": self.instance_id,
            "channel": self.channel,
            "subscribed": self._subscribed.is_set(),
            "published": self.published,
            "sent": self.sent,
            "received": self.received,
            "echoes_skipped": self.echoes_skipped,
            "dropped": self.dropped,
            "reconnects": self.reconnects,
            "outbox": len(self._outbox),
            **self.link.stats(),
        }
