"""The in-process tier: TTL on an injected clock, priorities under the global budget, honest sizes, compression per
namespace, tags across namespaces, fresh copies, the never-stale guard and the counters."""

from __future__ import annotations

import pytest

from spotik.cache import ENTRY_OVERHEAD, Codec, Priority, UnknownNamespaceError
from spotik.cache.codec import is_compressed
from tests.unit.cache.helpers import FakeClock, spec, store_of

ROOM = {"id": "0b6a", "name": "Friday", "members": 3}


def test_an_entry_lives_for_its_namespace_ttl() -> None:
    clock = FakeClock()
    store = store_of(spec("room_state", ttl=30), clock=clock)
    store.set("room_state", "r", ROOM)
    clock.advance(29.9)
    assert store.get("room_state", "r") == ROOM
    clock.advance(0.1)
    assert store.get("room_state", "r") is None
    stats = store.stats()
    assert (stats["entries"], stats["bytes"], stats["evictions"]["ttl"]) == (0, 0, 1)


def test_a_set_can_give_its_own_ttl() -> None:
    clock = FakeClock()
    store = store_of(spec("room_state", ttl=30), clock=clock)
    store.set("room_state", "short", ROOM, ttl=5)
    store.set("room_state", "long", ROOM, ttl=100)
    clock.advance(50)
    assert store.get("room_state", "short") is None
    assert store.get("room_state", "long") == ROOM


def test_purge_removes_expired_entries_nobody_reads() -> None:
    clock = FakeClock()
    store = store_of(spec("a", ttl=10), spec("b", ttl=100), clock=clock)
    for i in range(5):
        store.set("a", f"k{i}", i, tags=["t"])
        store.set("b", f"k{i}", i)
    clock.advance(10)
    assert store.purge_expired() == 5
    assert store.stats()["namespaces"]["a"]["evictions"]["ttl"] == 5
    assert (store.entries, store.stats()["tags"]) == (5, 0)  # the tag index went with them
    assert store.get("b", "k3") == 3


def test_ttl_must_be_positive() -> None:
    store = store_of(spec("a"))
    with pytest.raises(ValueError, match="positive"):
        store.set("a", "k", 1, ttl=0)


def test_the_global_entry_limit_evicts_lower_priorities_first() -> None:
    store = store_of(
        spec("files", priority=Priority.LOW), spec("users", priority=Priority.MEDIUM),
        spec("rooms", priority=Priority.HIGH), max_entries=3,
    )  # fmt: skip
    store.set("rooms", "r1", 1)
    store.set("users", "u1", 1)
    store.set("files", "f1", 1)
    assert store.set("rooms", "r2", 2)
    assert store.get("files", "f1") is None and store.get("users", "u1") == 1
    assert store.set("rooms", "r3", 3)
    assert store.get("users", "u1") is None
    stats = store.stats()["namespaces"]
    assert stats["files"]["evictions"]["budget"] == stats["users"]["evictions"]["budget"] == 1
    assert store.entries == 3


def test_a_lower_priority_never_displaces_a_higher_one() -> None:
    store = store_of(spec("files", priority=Priority.LOW), spec("rooms", priority=Priority.HIGH), max_entries=2)
    store.set("rooms", "r1", 1)
    store.set("rooms", "r2", 2)
    assert not store.set("files", "f1", 1)
    assert store.get("files", "f1") is None
    assert (store.get("rooms", "r1"), store.get("rooms", "r2")) == (1, 2)
    assert store.stats()["namespaces"]["files"]["rejected"] == 1


def test_same_priority_takes_victims_from_the_namespace_holding_most_bytes() -> None:
    store = store_of(spec("a"), spec("b"), max_entries=3)
    store.set("a", "small", 1)
    store.set("b", "big1", "x" * 500)
    store.set("b", "big2", "x" * 500)
    store.set("a", "new", 2)
    assert store.get("b", "big1") is None
    assert store.get("a", "small") == 1


def test_an_entry_weighs_its_encoded_bytes_plus_the_overhead() -> None:
    store = store_of(spec("plain"), spec("packed", compress=True, codec=Codec.MSGPACK), compress_threshold=100)
    value = {"title": "x" * 1000}
    store.set("plain", "k", value)
    store.set("packed", "k", value)
    plain, packed = store.namespace("plain").peek("k"), store.namespace("packed").peek("k")
    assert plain is not None and packed is not None
    assert plain.size == len(b'\x01{"title":"' + b"x" * 1000 + b'"}') + ENTRY_OVERHEAD
    assert is_compressed(packed.blob) and not is_compressed(plain.blob)
    assert packed.size == len(packed.blob) + ENTRY_OVERHEAD < plain.size
    assert store.bytes == plain.size + packed.size
    store.set("plain", "k", 1)  # an overwrite replaces the size
    assert store.bytes == len(b"\x011") + ENTRY_OVERHEAD + packed.size


def test_the_global_byte_budget_is_never_exceeded() -> None:
    entry_size = len(b'\x01"' + b"v" * 100 + b'"') + ENTRY_OVERHEAD
    store = store_of(spec("a"), max_bytes=entry_size * 3 + 10)
    for i in range(10):
        assert store.set("a", f"k{i}", "v" * 100)
        assert store.bytes <= store.max_bytes
    assert store.entries == 3
    assert [store.get("a", f"k{i}") is not None for i in (6, 7, 8, 9)] == [False, True, True, True]
    assert store.stats()["evictions"]["budget"] == 7


def test_a_value_larger_than_the_budget_is_rejected_and_replaces_nothing() -> None:
    store = store_of(spec("a"), max_bytes=2048)
    store.set("a", "k", "old")
    assert not store.set("a", "k", "x" * 4096)
    assert store.get("a", "k") is None  # the old value is gone: the caller meant to replace it
    assert (store.entries, store.bytes) == (0, 0)


def test_a_namespace_cap_evicts_within_the_namespace() -> None:
    store = store_of(spec("small", max_entries=2), spec("other"))
    store.set("other", "o", 0)
    for i in range(4):
        store.set("small", f"k{i}", i)
    assert sorted(store.namespace("small").entries) == ["k2", "k3"]
    assert store.get("other", "o") == 0
    assert store.stats()["namespaces"]["small"]["evictions"]["capacity"] == 2


def test_compression_follows_the_namespace_and_the_threshold() -> None:
    store = store_of(spec("c", compress=True), spec("u"), compress_threshold=1024)
    small, large = {"v": "y" * 100}, {"v": "y" * 2000}
    assert not is_compressed(store.encode("c", small))
    assert is_compressed(store.encode("c", large))
    assert not is_compressed(store.encode("u", large))
    store.set("c", "large", large)
    assert store.get("c", "large") == large


def test_every_read_returns_a_fresh_copy() -> None:
    store = store_of(spec("a"))
    store.set("a", "k", {"queue": [1, 2]})
    got = store.get("a", "k")
    got["queue"].append(3)
    assert store.get("a", "k") == {"queue": [1, 2]}


def test_tags_reach_across_namespaces() -> None:
    store = store_of(spec("room_state"), spec("track_queue"), spec("user_data"))
    store.set("room_state", "r1", ROOM, tags=["room:1"])
    store.set("track_queue", "r1", [1, 2], tags=["room:1"])
    store.set("track_queue", "r2", [3], tags=["room:2"])
    store.set("user_data", "u1", {"n": 1}, tags=["user:1", "room:1"])
    assert store.invalidate_tags("room:1") == 3
    assert store.get("room_state", "r1") is None and store.get("track_queue", "r1") is None
    assert store.get("user_data", "u1") is None
    assert store.get("track_queue", "r2") == [3]
    assert store.stats()["evictions"]["invalidation"] == 3
    assert store.invalidate_tags("user:1") == 0  # u1's other tag went with it


def test_an_overwrite_replaces_the_tags() -> None:
    store = store_of(spec("a"))
    store.set("a", "k", 1, tags=["old"])
    store.set("a", "k", 2, tags=["new"])
    assert store.invalidate_tags("old") == 0
    assert store.invalidate_tags("new") == 1


def test_delete_and_clear() -> None:
    store = store_of(spec("a"), spec("b"))
    for ns in ("a", "b"):
        for i in range(3):
            store.set(ns, f"k{i}", i, tags=["t"])
    assert store.delete("a", "k0") and not store.delete("a", "k0")
    assert store.clear("a") == 2
    assert (store.entries, len(store.namespace("b").entries)) == (3, 3)
    assert store.clear() == 3
    assert (store.entries, store.bytes, store.stats()["tags"]) == (0, 0, 0)


def test_unknown_namespaces_are_refused() -> None:
    store = store_of(spec("a"))
    with pytest.raises(UnknownNamespaceError, match="'nope'"):
        store.get("nope", "k")


@pytest.mark.parametrize(
    ("invalidate", "stale"),
    [
        (lambda s: s.delete("a", "k"), True),
        (lambda s: s.invalidate_tags("room:1"), True),
        (lambda s: s.clear("a"), True),
        (lambda s: s.clear(), True),
        (lambda s: s.delete("a", "other"), False),
        (lambda s: s.invalidate_tags("room:2"), False),
        (lambda s: s.clear("b"), False),
    ],
    ids=["delete", "tag", "clear-ns", "clear-all", "other-key", "other-tag", "other-ns"],
)
def test_a_write_prepared_before_an_invalidation_is_refused(invalidate: object, stale: bool) -> None:
    store = store_of(spec("a"), spec("b"))
    with store.watching() as since:
        invalidate(store)  # type: ignore[operator]
        stored = store.put("a", "k", store.encode("a", "computed"), tags=["room:1"], since=since)
    assert stored is not stale
    assert (store.get("a", "k") is None) is stale
    assert store.stats()["namespaces"]["a"]["stale_skips"] == int(stale)


def test_invalidations_are_forgotten_once_no_writer_watches() -> None:
    store = store_of(spec("a"))
    with store.watching() as since:
        store.delete("a", "k")
        assert store.is_stale(since, "a", "k")
    with store.watching() as later:
        assert not store.is_stale(later, "a", "k")
    assert store._invalidated == {}


def test_capping_ttls_shortens_long_lives_only() -> None:
    clock = FakeClock()
    store = store_of(spec("a", ttl=600), clock=clock)
    store.set("a", "long", 1)
    store.set("a", "short", 1, ttl=2)
    store.cap_ttls(5)
    store.ttl_cap = 5
    store.set("a", "new", 1)
    assert store.remaining_ttl("a", "long") == 5 and store.remaining_ttl("a", "new") == 5
    assert store.remaining_ttl("a", "short") == 2


def test_counters_and_hit_rate() -> None:
    store = store_of(spec("a"), spec("b"))
    store.set("a", "k", 1)
    for _ in range(3):
        store.get("a", "k")
    store.get("a", "missing")
    stats = store.stats()
    a = stats["namespaces"]["a"]
    assert (a["hits"], a["misses"], a["hit_rate"], a["entries"]) == (3, 1, 0.75, 1)
    assert stats["namespaces"]["b"]["hit_rate"] is None
    assert (stats["hits"], stats["misses"], stats["lookups"], stats["hit_rate"]) == (3, 1, 4, 0.75)
