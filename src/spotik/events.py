"""Domain events (docs/decisions.md#d4) and the in-process event bus.

Services publish an event after the change is committed; they never know who listens. The real-time layer turns
events into WebSocket room broadcasts (and, once there is a cache, it will turn them into invalidations). ``data``
is the JSON-ready payload with the union of fields the web client reads (docs/api.md#event-payloads).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

log = structlog.get_logger("spotik.events")


@dataclass(frozen=True, slots=True)
class DomainEvent:
    type: str
    room_id: uuid.UUID | None
    data: dict[str, Any]
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))


EventHandler = Callable[[DomainEvent], Awaitable[None]]


class EventBus(Protocol):
    async def publish(self, event: DomainEvent) -> None: ...


class LocalEventBus:
    """Delivers each event to every subscriber in order; a failing subscriber is logged, not raised."""

    def __init__(self) -> None:
        self._handlers: list[EventHandler] = []

    def subscribe(self, handler: EventHandler) -> Callable[[], None]:
        self._handlers.append(handler)
        return lambda: self._handlers.remove(handler)

    async def publish(self, event: DomainEvent) -> None:
        for handler in list(self._handlers):
            try:
                await handler(event)
            except Exception:
                log.exception("event handler failed", event_type=event.type, room_id=str(event.room_id))
