"""Capturing the domain events an operation publishes, through the real event bus."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from spotik.events import DomainEvent
from spotik.state import AppState


@contextmanager
def capture_events(state: AppState) -> Iterator[list[DomainEvent]]:
    seen: list[DomainEvent] = []

    async def record(event: DomainEvent) -> None:
        seen.append(event)

    unsubscribe = state.events.subscribe(record)
    try:
        yield seen
    finally:
        unsubscribe()
