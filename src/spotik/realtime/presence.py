"""Who is online in a room (WebSocket presence), on this instance or across instances through Redis.

Local truth is the registry (sockets per user per room). With Redis each instance also writes its own share:

* ``<prefix>:presence:<room>:<instance>`` — a hash ``user_id → sockets`` holding this instance's sockets in the room;
* ``<prefix>:presence:<room>:instances`` — the set of instances that wrote a share for the room.

Both expire after ``ttl`` seconds and a heartbeat (every ``ttl / 3``) rewrites every share this instance holds,
so the share of an instance that died disappears by itself within ``ttl``, and the shares come back on their own
after Redis loses its data (the heartbeat, and the broker's recovery callback, rewrite them). A reader merges its
own counts (local, always current) with the other instances' live shares and forgets instances whose share has
expired. When Redis is unreachable, presence is this instance's alone (logged by the link, not per call).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog

from spotik.realtime.broker import REDIS_FAILURES, RedisLink
from spotik.realtime.registry import Registry

log = structlog.get_logger("spotik.realtime.presence")


def presence_announcement(user: dict[str, Any], online: dict[str, int], message: str) -> dict[str, Any]:
    """``user_connected_websocket`` / ``user_disconnected_websocket``. Its size does not grow with the room: a mass
    join already sends one announcement per socket to every socket (N²/2 frames); a list of the online users in each
    would make that N³ bytes. The list is in the replies to ``join_room`` and ``get_room_state``."""
    return {
        "user": user,
        "websocket_connections": sum(online.values()),
        "online_user_count": len(online),
        "user_online": str(user.get("id")) in online,
        "message": message,
    }


def presence_summary(online: dict[str, int]) -> dict[str, Any]:
    """The presence fields of the replies to ``join_room`` and ``get_room_state``."""
    return {"websocket_connections": sum(online.values()), "online_users": sorted(online)}


class LocalPresence:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def changed(self, room_id: str) -> None:
        return None

    async def online(self, room_id: str) -> dict[str, int]:
        return self.registry.user_counts(room_id)

    def stats(self) -> dict[str, Any]:
        return {"kind": "local"}


class RedisPresence:
    def __init__(
        self, registry: Registry, link: RedisLink, *, prefix: str, instance_id: str, ttl: float = 60.0
    ) -> None:
        self.registry = registry
        self.link = link
        self.prefix = prefix
        self.instance_id = instance_id
        self.ttl = max(3, int(ttl))
        self._written: set[str] = set()  # rooms for which this instance holds a share in Redis
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._write_lock = asyncio.Lock()  # writes of one instance must not overtake each other
        self.heartbeats = 0
        self.failures = 0
        link.on_recovered(self.publish_all)

    def _share_key(self, room_id: str, instance_id: str | None = None) -> str:
        return f"{self.prefix}:presence:{room_id}:{instance_id or self.instance_id}"

    def _instances_key(self, room_id: str) -> str:
        return f"{self.prefix}:presence:{room_id}:instances"

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._heartbeat(), name="spotik-ws-presence")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.link.up and self._written:
            with contextlib.suppress(*REDIS_FAILURES):
                async with asyncio.timeout(2):
                    async with self.link.client.pipeline(transaction=True) as pipe:
                        for room_id in self._written:
                            pipe.delete(self._share_key(room_id))
                            pipe.srem(self._instances_key(room_id), self.instance_id)
                        await pipe.execute()
        self._written.clear()

    async def _write(self, rooms: list[str]) -> None:
        async with self._write_lock, self.link.client.pipeline(transaction=True) as pipe:
            for room_id in rooms:
                counts = self.registry.user_counts(room_id)
                share, instances = self._share_key(room_id), self._instances_key(room_id)
                pipe.delete(share)
                if counts:
                    pipe.hset(share, mapping=counts)  # type: ignore[arg-type]
                    pipe.expire(share, self.ttl)
                    pipe.sadd(instances, self.instance_id)
                    pipe.expire(instances, self.ttl)
                else:
                    pipe.srem(instances, self.instance_id)
            await pipe.execute()
        for room_id in rooms:
            if self.registry.room_size(room_id):
                self._written.add(room_id)
            else:
                self._written.discard(room_id)

    async def changed(self, room_id: str) -> None:
        """This instance's sockets in ``room_id`` changed: rewrite its share now."""
        if not self.link.up:
            return
        try:
            await self._write([room_id])
        except REDIS_FAILURES as exc:
            self.failures += 1
            self.link.mark_down(exc, "presence")

    async def publish_all(self) -> None:
        """Rewrite every share this instance holds (heartbeat, and after Redis comes back)."""
        rooms = sorted(set(self.registry.rooms()) | self._written)
        if rooms:
            await self._write(rooms)
        self.heartbeats += 1

    async def online(self, room_id: str) -> dict[str, int]:
        counts = dict(self.registry.user_counts(room_id))
        if not self.link.up:
            return counts
        try:
            client = self.link.client
            instances = [
                (i.decode() if isinstance(i, bytes) else str(i))
                for i in await client.smembers(self._instances_key(room_id))
            ]
            others = [i for i in instances if i != self.instance_id]
            if not others:
                return counts
            async with client.pipeline(transaction=False) as pipe:
                for instance_id in others:
                    pipe.hgetall(self._share_key(room_id, instance_id))
                shares = await pipe.execute()
            gone = [instance_id for instance_id, share in zip(others, shares, strict=True) if not share]
            for share in shares:
                for user_id, sockets in share.items():
                    key = user_id.decode() if isinstance(user_id, bytes) else str(user_id)
                    counts[key] = counts.get(key, 0) + int(sockets)
            if gone:
                await client.srem(self._instances_key(room_id), *gone)
        except REDIS_FAILURES as exc:
            self.failures += 1
            self.link.mark_down(exc, "presence")
        return counts

    async def _heartbeat(self) -> None:
        interval = self.ttl / 3
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), interval)
            if self._stopping.is_set() or not self.link.up:
                continue
            try:
                await self.publish_all()
            except REDIS_FAILURES as exc:
                self.failures += 1
                self.link.mark_down(exc, "presence heartbeat")
            except Exception:
                log.exception("presence heartbeat failed")

    def stats(self) -> dict[str, Any]:
        return {
            "kind": "redis",
            "ttl_seconds": self.ttl,
            "rooms_written": len(self._written),
            "heartbeats": self.heartbeats,
            "failures": self.failures,
        }


Presence = LocalPresence | RedisPresence
