"""What a namespace is (its TTL, priority, codec, compression and eviction policy), and the cachetools structure that
keeps the eviction order of its entries.

**cachetools for the order, our store for the rules.** ``LRUCache``, ``LFUCache``, ``FIFOCache`` and ``RRCache`` keep
their order in O(1) per access and pick the next victim with ``popitem()``; they are well kept and they are also the
reference model of the tests (tests/unit/cache/test_policies.py). What they cannot express is why an entry leaves:
an entry's own TTL (``TTLCache`` has one TTL for the whole cache), priorities across namespaces, one byte and entry
budget shared by all namespaces, and tags. So each namespace gets an unbounded cachetools cache (``maxsize`` is
never reached) and the store (:mod:`spotik.cache.store`) decides *when* to evict and from *which* namespace, then
asks that namespace's cache *whom* with ``popitem()``.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

from cachetools import Cache, FIFOCache, LFUCache, LRUCache, RRCache

from spotik.cache.codec import Codec


class Policy(StrEnum):
    LRU = "lru"  # least recently read or written goes first
    LFU = "lfu"  # least often read or written goes first (ties: least recently)
    FIFO = "fifo"  # first written goes first (cachetools: writing a key again moves it to the back)
    RANDOM = "random"


class Priority(IntEnum):
    LOW = 0
    MEDIUM = 1
    HIGH = 2


@dataclass(frozen=True, slots=True)
class NamespaceSpec:
    """One namespace. ``ttl`` is the default per entry (a ``set`` may pass its own); ``max_entries`` caps this
    namespace alone (evictions counted as ``capacity``), on top of the global limits (counted as ``budget``)."""

    name: str
    ttl: float
    priority: Priority = Priority.MEDIUM
    compress: bool = False
    policy: Policy = Policy.LRU
    codec: Codec = Codec.JSON
    max_entries: int | None = None

    def __post_init__(self) -> None:
        if self.ttl <= 0:
            raise ValueError(f"cache namespace {self.name!r}: ttl must be positive")
        if self.max_entries is not None and self.max_entries < 1:
            raise ValueError(f"cache namespace {self.name!r}: max_entries must be at least 1")

    @classmethod
    def parse(cls, name: str, fields: dict[str, Any]) -> NamespaceSpec:
        """From the settings' plain values (``priority: "high"``, ``policy: "lfu"`` …)."""
        return cls(
            name=name,
            ttl=float(fields["ttl"]),
            priority=Priority[str(fields.get("priority", "medium")).upper()],
            compress=bool(fields.get("compress", False)),
            policy=Policy(fields.get("policy", "lru")),
            codec=Codec(fields.get("codec", "json")),
            max_entries=fields.get("max_entries"),
        )


def order_keeper(policy: Policy, rng: random.Random | None = None) -> Cache[Any, Any]:
    """An unbounded cachetools cache that keeps ``policy``'s order; ``popitem()`` removes its next victim.
    ``rng`` makes Random eviction reproducible (the tests give the store and the reference the same seed)."""
    unbounded = sys.maxsize
    if policy is Policy.LRU:
        return LRUCache(unbounded)
    if policy is Policy.LFU:
        return LFUCache(unbounded)
    if policy is Policy.FIFO:
        return FIFOCache(unbounded)
    return RRCache(unbounded, choice=(rng or random.Random()).choice)
