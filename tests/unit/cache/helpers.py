"""What the cache tests share: a clock the test moves, and stores built from a few namespaces."""

from __future__ import annotations

from spotik.cache import CacheStore, NamespaceSpec, Priority


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def store_of(*specs: NamespaceSpec, clock: FakeClock | None = None, **limits: int) -> CacheStore:
    return CacheStore(specs, clock=clock or FakeClock(), **limits)


def spec(name: str, ttl: float = 60.0, priority: Priority = Priority.MEDIUM, **fields: object) -> NamespaceSpec:
    return NamespaceSpec(name=name, ttl=ttl, priority=priority, **fields)  # type: ignore[arg-type]
