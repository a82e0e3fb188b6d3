"""App-scoped resources, built by the lifespan and reached through dependencies (no module globals)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from spotik.auth.tokens import TokenService
from spotik.events import LocalEventBus
from spotik.settings import Settings

if TYPE_CHECKING:
    from spotik.playback.scheduler import PlaybackScheduler
    from spotik.realtime.gateway import Realtime


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    tokens: TokenService
    events: LocalEventBus = field(default_factory=LocalEventBus)
    started_at: float = field(default_factory=time.time)
    started_monotonic: float = field(default_factory=time.monotonic)
    # Advances rooms whose track has ended (contract D5); started and stopped by the lifespan.
    playback_scheduler: PlaybackScheduler | None = None
    # The WebSocket gateway (/ws): connections, rooms, fan-out; started and stopped by the lifespan.
    realtime: Realtime | None = None
