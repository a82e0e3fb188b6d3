"""The in-process tier: namespaces of encoded entries with per-entry TTL, per-namespace eviction policy, priorities
under one global entry and byte budget, tags, and the statistics of it all. Synchronous and single-threaded: it runs
on the event loop and never awaits, so no lock is needed (and none of it is thread-safe).

**Eviction order.** Three rules decide when an entry leaves besides ``delete``/tags/``clear`` (counted as
``invalidation``):

- ``ttl``: an expired entry is dropped when read, or by :meth:`CacheStore.purge_expired` (the manager's sweep).
- ``capacity``: a namespace with ``max_entries`` that is full evicts its own next victim before a new key goes in.
- ``budget``: when the global limits (``max_entries``, ``max_bytes``) would be exceeded, victims come from the
  namespace of the **lowest priority** that has entries (among equals, the one holding the most bytes), in that
  namespace's policy order, and never from a namespace of higher priority than the entry being written: a value
  that could only fit by displacing higher priorities is not stored (counted as ``rejected``).

Which entry of a namespace goes first is cachetools' business (:mod:`spotik.cache.policies` says why).

**Sizes.** An entry weighs ``len(encoded bytes) + ENTRY_OVERHEAD``: the bytes are exactly what is stored (after
compression), and the overhead is a fixed, documented estimate of the bookkeeping around them (the entry object,
the key in the namespace's dict and order structure, tag index slots), so that many tiny entries cannot hide
behind a byte budget that only counts payloads.

**Never stale.** Every invalidation takes a sequence number and remembers it per key (``delete``), per tag, per
namespace (``clear(ns)``) and for everything (``clear()``). A writer that read or computed a value while
invalidations could happen captures the sequence first (:meth:`CacheStore.watching`) and passes it to
:meth:`CacheStore.put`, which refuses the write when an invalidation of that key, one of its tags, its namespace or
everything came later: a value computed from data that changed meanwhile is returned to its caller but never
cached. The remembered numbers are forgotten once no writer that captured an older sequence is still running, so
the record stays as small as the number of invalidations during the longest running computation.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

from cachetools import Cache

from spotik.cache.codec import decode, encode
from spotik.cache.policies import NamespaceSpec, Priority, order_keeper

ENTRY_OVERHEAD = 256  # bytes counted per entry besides its encoded value (see the module docstring)
PRUNE_INVALIDATIONS_AT = 4096  # remembered invalidations before pruning those no running writer can need
EvictionCause = Literal["ttl", "capacity", "budget", "invalidation"]
EVICTION_CAUSES: tuple[EvictionCause, ...] = ("ttl", "capacity", "budget", "invalidation")


class UnknownNamespaceError(KeyError):
    """A namespace that config/cache.yml does not define."""


class Entry:
    __slots__ = ("blob", "expires_at", "size", "tags")

    def __init__(self, blob: bytes, expires_at: float, size: int, tags: tuple[str, ...]) -> None:
        self.blob = blob
        self.expires_at = expires_at
        self.size = size
        self.tags = tags


class Namespace:
    """One namespace's entries (in its policy's order) and counters."""

    __slots__ = ("bytes", "compress_above", "entries", "evictions", "hits", "misses", "redis_hits", "rejected",
                 "spec", "stale_skips")  # fmt: skip

    def __init__(self, spec: NamespaceSpec, compress_threshold: int, rng: random.Random | None) -> None:
        self.spec = spec
        self.entries: Cache[str, Entry] = order_keeper(spec.policy, rng)
        self.compress_above = compress_threshold if spec.compress else None
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.redis_hits = 0
        self.rejected = 0
        self.stale_skips = 0
        self.evictions: dict[EvictionCause, int] = dict.fromkeys(EVICTION_CAUSES, 0)

    def peek(self, key: str) -> Entry | None:
        """The entry without counting as a use (no LRU/LFU touch)."""
        return Cache.__getitem__(self.entries, key) if key in self.entries else None

    def stats(self) -> dict[str, Any]:
        lookups = self.hits + self.misses
        return {
            "policy": self.spec.policy.value,
            "priority": self.spec.priority.name.lower(),
            "ttl": self.spec.ttl,
            "hits": self.hits,
            "misses": self.misses,
            "redis_hits": self.redis_hits,
            "hit_rate": (self.hits + self.redis_hits) / lookups if lookups else None,
            "entries": len(self.entries),
            "bytes": self.bytes,
            "evictions": dict(self.evictions),
            "rejected": self.rejected,
            "stale_skips": self.stale_skips,
        }


class CacheStore:
    def __init__(
        self,
        namespaces: Iterable[NamespaceSpec],
        *,
        max_entries: int = 10_000,
        max_bytes: int = 100 * 1024 * 1024,
        compress_threshold: int = 1024,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.namespaces = {spec.name: Namespace(spec, compress_threshold, rng) for spec in namespaces}
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.entries = 0
        self.bytes = 0
        self.ttl_cap: float | None = None  # the manager sets it while Redis is unreachable
        self._clock = clock
        self._tags: dict[str, set[tuple[str, str]]] = {}
        self.seq = 0
        self._invalidated: dict[tuple[str, ...], int] = {}
        self._cleared_at = 0
        self._watchers: dict[int, int] = {}

    def namespace(self, name: str) -> Namespace:
        try:
            return self.namespaces[name]
        except KeyError:
            raise UnknownNamespaceError(f"unknown cache namespace {name!r} (see config/cache.yml)") from None

    # --- reading ---------------------------------------------------------------------------------------------

    def get(self, ns: str, key: str, default: Any = None) -> Any:
        """A fresh copy of the cached value, or ``default`` (a miss, also when the entry has expired)."""
        space = self.namespace(ns)
        try:
            entry = space.entries[key]
        except KeyError:
            space.misses += 1
            return default
        if entry.expires_at <= self._clock():
            del space.entries[key]
            self._forget(space, key, entry, "ttl")
            space.misses += 1
            return default
        space.hits += 1
        return decode(entry.blob)

    def remaining_ttl(self, ns: str, key: str) -> float | None:
        entry = self.namespace(ns).peek(key)
        return None if entry is None else entry.expires_at - self._clock()

    # --- writing ---------------------------------------------------------------------------------------------

    def encode(self, ns: str, value: Any) -> bytes:
        """``value`` as this namespace stores it (its codec; compressed above the threshold if it compresses)."""
        space = self.namespace(ns)
        return encode(value, space.spec.codec, space.compress_above)

    def set(self, ns: str, key: str, value: Any, *, ttl: float | None = None, tags: Iterable[str] = ()) -> bool:
        """Encode and store; False when the value was not stored (see :meth:`put`)."""
        return self.put(ns, key, self.encode(ns, value), ttl=ttl, tags=tags)

    def put(
        self,
        ns: str,
        key: str,
        blob: bytes,
        *,
        ttl: float | None = None,
        tags: Iterable[str] = (),
        since: int | None = None,
    ) -> bool:
        """Store encoded bytes for ``ttl`` seconds (default: the namespace's; capped by ``ttl_cap``).

        Not stored (False): when ``since`` is given and the key, one of ``tags``, the namespace or everything was
        invalidated after it; or when the entry cannot fit without evicting higher priorities. A value that was not
        stored also removes the key's previous value, which the caller meant to replace."""
        space = self.namespace(ns)
        tags = tuple(tags)
        if since is not None and self.is_stale(since, ns, key, tags):
            space.stale_skips += 1
            return False
        ttl = space.spec.ttl if ttl is None else ttl
        if ttl <= 0:
            raise ValueError(f"cache ttl must be positive, got {ttl}")
        if self.ttl_cap is not None:
            ttl = min(ttl, self.ttl_cap)
        size = len(blob) + ENTRY_OVERHEAD
        if not self._make_room(space, key, size):
            space.rejected += 1
            old = space.peek(key)
            if old is not None:
                del space.entries[key]
                self._forget(space, key, old, "budget")
            return False
        old = space.peek(key)
        if old is None:
            self.entries += 1
        else:
            self._untag(ns, key, old.tags)
            space.bytes -= old.size
            self.bytes -= old.size
        space.bytes += size
        self.bytes += size
        space.entries[key] = Entry(blob, self._clock() + ttl, size, tags)
        for tag in tags:
            self._tags.setdefault(tag, set()).add((ns, key))
        return True

    def _make_room(self, space: Namespace, key: str, size: int) -> bool:
        if size > self.max_bytes:
            return False
        limit = space.spec.max_entries
        if limit is not None and key not in space.entries:
            while len(space.entries) >= limit:
                self._evict(space, "capacity")
        while True:
            old = space.peek(key)
            new_entries = self.entries + (old is None)
            new_bytes = self.bytes + size - (0 if old is None else old.size)
            if new_entries <= self.max_entries and new_bytes <= self.max_bytes:
                return True
            victim = self._victim(space.spec.priority)
            if victim is None:
                return False
            self._evict(victim, "budget")

    def _victim(self, at_most: Priority) -> Namespace | None:
        candidates = [s for s in self.namespaces.values() if s.spec.priority <= at_most and len(s.entries)]
        return min(candidates, key=lambda s: (s.spec.priority, -s.bytes), default=None)

    def _evict(self, space: Namespace, cause: EvictionCause) -> None:
        key, entry = space.entries.popitem()
        self._forget(space, key, entry, cause)

    def _forget(self, space: Namespace, key: str, entry: Entry, cause: EvictionCause) -> None:
        """Account for an entry already removed from its namespace's structure."""
        space.bytes -= entry.size
        self.bytes -= entry.size
        self.entries -= 1
        space.evictions[cause] += 1
        self._untag(space.spec.name, key, entry.tags)

    def _untag(self, ns: str, key: str, tags: tuple[str, ...]) -> None:
        for tag in tags:
            members = self._tags.get(tag)
            if members is not None:
                members.discard((ns, key))
                if not members:
                    del self._tags[tag]

    # --- invalidating ----------------------------------------------------------------------------------------

    def delete(self, ns: str, key: str) -> bool:
        space = self.namespace(ns)
        self._note(("key", ns, key))
        entry = space.peek(key)
        if entry is None:
            return False
        del space.entries[key]
        self._forget(space, key, entry, "invalidation")
        return True

    def invalidate_tags(self, *tags: str) -> int:
        """Remove every entry carrying any of ``tags``, in every namespace; the number removed."""
        removed = 0
        for tag in tags:
            self._note(("tag", tag))
            for ns, key in list(self._tags.get(tag, ())):
                removed += self.delete(ns, key)
        return removed

    def clear(self, ns: str | None = None) -> int:
        """Remove every entry of ``ns`` (every entry when None); the number removed."""
        if ns is None:
            self.seq += 1
            self._cleared_at = self.seq
        else:
            self._note(("ns", self.namespace(ns).spec.name))
        removed = 0
        for space in self.namespaces.values() if ns is None else (self.namespaces[ns],):
            entries = space.entries
            for key in list(entries):
                entry = Cache.__getitem__(entries, key)
                self._forget(space, key, entry, "invalidation")
                removed += 1
            entries.clear()
        return removed

    def purge_expired(self) -> int:
        """Remove every expired entry (counted as ``ttl``); the number removed."""
        now = self._clock()
        removed = 0
        for space in self.namespaces.values():
            entries = space.entries
            expired = [key for key in entries if Cache.__getitem__(entries, key).expires_at <= now]
            for key in expired:
                entry = Cache.__getitem__(entries, key)
                del entries[key]
                self._forget(space, key, entry, "ttl")
            removed += len(expired)
        return removed

    def cap_ttls(self, cap: float) -> None:
        """Shorten every entry's remaining life to at most ``cap`` seconds (entering a Redis outage)."""
        limit = self._clock() + cap
        for space in self.namespaces.values():
            for key in space.entries:
                entry = Cache.__getitem__(space.entries, key)
                entry.expires_at = min(entry.expires_at, limit)

    # --- never stale -----------------------------------------------------------------------------------------

    def _note(self, mark: tuple[str, ...]) -> None:
        self.seq += 1
        if self._watchers:  # nobody running can be made stale otherwise
            self._invalidated[mark] = self.seq

    @contextmanager
    def watching(self) -> Iterator[int]:
        """The current invalidation sequence, to pass as ``put(since=...)`` after reading or computing elsewhere;
        invalidations are remembered while the block runs."""
        since = self.seq
        self._watchers[since] = self._watchers.get(since, 0) + 1
        try:
            yield since
        finally:
            left = self._watchers.pop(since) - 1
            if left:
                self._watchers[since] = left
            if not self._watchers:
                self._invalidated.clear()
            elif len(self._invalidated) > PRUNE_INVALIDATIONS_AT:
                oldest = min(self._watchers)
                self._invalidated = {mark: seq for mark, seq in self._invalidated.items() if seq > oldest}

    def is_stale(self, since: int, ns: str, key: str, tags: Iterable[str] = ()) -> bool:
        """Whether ``ns``/``key`` (or one of ``tags``) was invalidated after sequence ``since``."""
        if self._cleared_at > since:
            return True
        marks = self._invalidated
        if not marks:
            return False
        if marks.get(("ns", ns), 0) > since or marks.get(("key", ns, key), 0) > since:
            return True
        return any(marks.get(("tag", tag), 0) > since for tag in tags)

    # --- statistics ------------------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        spaces = {name: space.stats() for name, space in self.namespaces.items()}
        hits = sum(s.hits + s.redis_hits for s in self.namespaces.values())
        lookups = sum(s.hits + s.misses for s in self.namespaces.values())
        evictions = {cause: sum(s.evictions[cause] for s in self.namespaces.values()) for cause in EVICTION_CAUSES}
        return {
            "entries": self.entries,
            "bytes": self.bytes,
            "max_entries": self.max_entries,
            "max_bytes": self.max_bytes,
            "hits": hits,
            "misses": lookups - hits,
            "lookups": lookups,
            "hit_rate": hits / lookups if lookups else None,
            "evictions": evictions,
            "tags": len(self._tags),
            "namespaces": spaces,
        }
