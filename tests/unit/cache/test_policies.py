"""Each eviction policy against cachetools as the reference model (priorities equal, TTL out of reach).

The store keeps its order in a cachetools cache but decides itself when to evict (a namespace's ``max_entries``,
or the global budget) and does its own size and tag bookkeeping; these machines check that, after any sequence of
set / get / delete, the store holds exactly the keys and values a plain cachetools cache of the same size holds.
For Random, both sides get a ``random.Random`` with the same seed: the same operations leave the same key lists in
the same order, so equal seeds make the same choices, and an exact comparison stays possible (a store that drew
from another generator, or at other times, fails it).
"""

from __future__ import annotations

import random
from typing import Any

from cachetools import Cache, FIFOCache, LFUCache, LRUCache, RRCache
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from spotik.cache import ENTRY_OVERHEAD, CacheStore, NamespaceSpec, Policy
from spotik.cache.codec import decode
from tests.unit.cache.helpers import FakeClock

CAPACITY = 4
KEYS = st.sampled_from([f"k{i}" for i in range(9)])
SEED = 20261126


def reference_for(policy: Policy) -> Cache[str, Any]:
    if policy is Policy.LRU:
        return LRUCache(CAPACITY)
    if policy is Policy.LFU:
        return LFUCache(CAPACITY)
    if policy is Policy.FIFO:
        return FIFOCache(CAPACITY)
    return RRCache(CAPACITY, choice=random.Random(SEED).choice)


class PolicyMachine(RuleBasedStateMachine):
    policy: Policy
    through_global_budget: bool  # the limit is the namespace's max_entries, or the store's global max_entries

    def __init__(self) -> None:
        super().__init__()
        self.reference = reference_for(self.policy)
        limit = {} if self.through_global_budget else {"max_entries": CAPACITY}
        namespace = NamespaceSpec(name="ns", ttl=1e9, policy=self.policy, **limit)  # type: ignore[arg-type]
        self.store = CacheStore(
            [namespace],
            max_entries=CAPACITY if self.through_global_budget else 10_000,
            clock=FakeClock(),
            rng=random.Random(SEED),
        )

    @rule(key=KEYS, value=st.integers(-1000, 1000))
    def set(self, key: str, value: int) -> None:
        self.reference[key] = value
        assert self.store.set("ns", key, value)

    @rule(key=KEYS)
    def get(self, key: str) -> None:
        assert self.store.get("ns", key) == self.reference.get(key)

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        assert self.store.delete("ns", key) == (self.reference.pop(key, None) is not None)

    @invariant()
    def same_contents(self) -> None:
        space = self.store.namespace("ns")
        held = {key: decode(entry.blob) for key in space.entries if (entry := space.peek(key)) is not None}
        expected = {key: Cache.__getitem__(self.reference, key) for key in self.reference}  # no LRU/LFU touch
        assert held == expected
        assert self.store.entries == len(expected)
        assert self.store.bytes == sum(len(self.store.encode("ns", v)) + ENTRY_OVERHEAD for v in expected.values())


def machine(policy: Policy, through_global_budget: bool) -> type[PolicyMachine]:
    name = f"{policy.name}{'Budget' if through_global_budget else 'Capacity'}Machine"
    return type(name, (PolicyMachine,), {"policy": policy, "through_global_budget": through_global_budget})


SETTINGS = settings(max_examples=60, stateful_step_count=60, deadline=None)
TestLRUCapacity = SETTINGS(machine(Policy.LRU, False)).TestCase
TestLFUCapacity = SETTINGS(machine(Policy.LFU, False)).TestCase
TestFIFOCapacity = SETTINGS(machine(Policy.FIFO, False)).TestCase
TestRandomCapacity = SETTINGS(machine(Policy.RANDOM, False)).TestCase
TestLRUBudget = SETTINGS(machine(Policy.LRU, True)).TestCase
TestLFUBudget = SETTINGS(machine(Policy.LFU, True)).TestCase
TestFIFOBudget = SETTINGS(machine(Policy.FIFO, True)).TestCase
TestRandomBudget = SETTINGS(machine(Policy.RANDOM, True)).TestCase
