"""Cached reads, as the domains see them (docs/cache.md): what they need of the cache (a Protocol that
``spotik.cache.CacheManager`` satisfies, so no service imports the cache itself), the namespaces and tags, and which
tags each domain event invalidates.

**Never stale.** An entry is computed in a session of its own (never the caller's: with single flight the value may
outlive the request that started it, and a fresh session reads the latest committed data). Every write publishes
its domain event after its commit; the composition root subscribes :func:`invalidation_handler` to the bus, first,
so the entries a write changed are dropped before anyone hears of the write. A computation that started before that
invalidation is not stored (the cache's stale guard), and one that starts after it reads the committed data.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from spotik.events import DomainEvent, EventHandler

T = TypeVar("T")

ROOM_STATE: Final = "room_state"
TRACK_QUEUE: Final = "track_queue"
USER_DATA: Final = "user_data"
FILE_METADATA: Final = "file_metadata"
API_RESPONSE: Final = "api_response"  # the hot reads' rendered answers, per viewer (spotik.http.hot)

# Events that change only the queue order and one voter's votes: they leave the other members' vote sets alone.
VOTE_EVENTS: Final = frozenset({"track_voted", "track_unvoted", "queue_reordered"})
# Events without a room whose data appears inside room entries (genre names, users' names): rare, so the room
# namespaces are emptied rather than tagged with every genre and user they mention.
SHARED_DATA_EVENTS: Final = frozenset({"genre_updated", "user_updated"})


class ReadCache(Protocol):
    """What the domains use of the cache (``spotik.cache.CacheManager``)."""

    @property
    def enabled(self) -> bool: ...

    async def get_or_compute(
        self,
        ns: str,
        key: str,
        compute: Callable[[], Awaitable[T]],
        *,
        ttl: float | None = None,
        tags: Iterable[str] = (),
        on_miss: Callable[[], Awaitable[object]] | None = None,
    ) -> T: ...

    async def invalidate_tags(self, *tags: str) -> int: ...

    def local(self, ns: str, key: str) -> Any:
        """The value if this process holds it (a fresh copy), else None; never asks Redis or computes."""


class Invalidating(Protocol):
    async def invalidate_tags(self, *tags: str) -> int: ...

    async def clear(self, ns: str | None = None) -> int: ...


ROOMS_TAG: Final = "rooms"  # the room list: every room's entry, whatever happens in any room, and new rooms


def room_tag(room_id: uuid.UUID | str) -> str:
    """Everything derived from one room's rows: its state, its queue, its members' vote sets, its files."""
    return f"room:{room_id}"


def shared_tag(room_id: uuid.UUID | str) -> str:
    """The room's entries every member shares (state, queue): what a vote changes."""
    return f"room:{room_id}:shared"


def voter_tag(room_id: uuid.UUID | str, user_id: uuid.UUID | str) -> str:
    """One member's vote set in the room."""
    return f"room:{room_id}:votes:{user_id}"


def viewer_tags(room_id: uuid.UUID | str, user_id: uuid.UUID | str) -> tuple[str, ...]:
    """Everything one member's view of a room is built from: the room, its shared entries, their votes, their row."""
    return room_tag(room_id), shared_tag(room_id), voter_tag(room_id, user_id), user_tag(user_id)


def user_tag(user_id: uuid.UUID | str) -> str:
    return f"user:{user_id}"


def token_tag(jti: str) -> str:
    """One token's revocation (its key in ``user_data`` too)."""
    return f"token:{jti}"


def invalidations(event: DomainEvent) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(tags, namespaces)`` that ``event`` makes stale.

    * a vote (``track_voted``/``track_unvoted``/``queue_reordered``): the room's shared entries and the voter's set;
    * any other event of a room (uploads, deletions, playback, joins, leaves, room updates and deletion): everything
      tagged with the room;
    * any event of a room, votes included: the room list (it shows every room's current track and its score);
    * ``user_updated``: the user's row, and the room namespaces (room entries show users' names);
    * ``genre_updated``: the room namespaces (tracks show their genre);
    * both: the hot reads' answers (``api_response``), which show both.
    """
    tags: list[str] = []
    namespaces: tuple[str, ...] = ()
    if event.room_id is not None:
        tags.append(ROOMS_TAG)
        if event.type in VOTE_EVENTS:
            tags.append(shared_tag(event.room_id))
            voter = event.data.get("user")
            if isinstance(voter, dict) and voter.get("id"):
                tags.append(voter_tag(event.room_id, voter["id"]))
        else:
            tags.append(room_tag(event.room_id))
    if event.type == "user_updated":
        tags.append(user_tag(event.data["user_id"]))
    if event.type in SHARED_DATA_EVENTS:
        namespaces = (ROOM_STATE, TRACK_QUEUE, API_RESPONSE)
    return tuple(tags), namespaces


def invalidation_handler(cache: Invalidating) -> EventHandler:
    async def invalidate(event: DomainEvent) -> None:
        tags, namespaces = invalidations(event)
        if tags:
            await cache.invalidate_tags(*tags)
        for ns in namespaces:
            await cache.clear(ns)

    return invalidate


@dataclass(frozen=True, slots=True)
class Reads:
    """The cache and where its computations get a session: what a service needs to read through the cache."""

    cache: ReadCache
    sessionmaker: async_sessionmaker[AsyncSession]

    async def through(
        self,
        ns: str,
        key: str,
        build: Callable[[AsyncSession], Awaitable[T]],
        *,
        session: AsyncSession,
        tags: Iterable[str],
    ) -> T:
        """``build``'s value for ``ns``/``key``, cached with ``tags``. ``session`` is the caller's: with the cache
        off, ``build`` runs in it (the uncached path is exactly the old one); with the cache on and the value not
        in this process, its transaction is ended first, so a request never holds two pooled connections while a
        computation opens its own (a hit leaves it untouched)."""
        if not self.cache.enabled:
            return await build(session)

        async def compute() -> T:
            async with self.sessionmaker() as own:
                return await build(own)

        return await self.cache.get_or_compute(ns, key, compute, tags=tags, on_miss=lambda: session.commit())
