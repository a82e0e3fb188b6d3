"""The app-scoped objects, built once by ``create_app`` (the composition root) and reached through dependencies.

``SpotikApp`` is the ASGI app that carries them: handlers reach them as ``request.app.services`` through
``spotik.deps.app_state``; nothing is looked up by name. The lifespan (``spotik.lifespan``) only starts and stops
them. See docs/architecture.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Receive, Scope, Send

from spotik.auth.tokens import TokenService
from spotik.cache import CacheManager
from spotik.events import LocalEventBus
from spotik.performance.api.service import PerformanceApi
from spotik.performance.monitor import Monitoring
from spotik.playback.scheduler import PlaybackScheduler
from spotik.reads import Reads
from spotik.realtime.gateway import Realtime
from spotik.rooms.warmup import CacheWarmer
from spotik.settings import Settings


@dataclass(frozen=True, slots=True, kw_only=True)
class AppState:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    tokens: TokenService
    events: LocalEventBus
    # The cache (in-process tier + Redis when REDIS_URL is set), and how the services read through it.
    cache: CacheManager
    reads: Reads
    warmer: CacheWarmer
    # Request timing, query and memory monitoring, Prometheus metrics, the rate limiter.
    monitoring: Monitoring
    # Health, alerts and the subsystems behind /api/performance/* and the dashboard.
    performance: PerformanceApi
    # The WebSocket gateway (/ws): connections, rooms, fan-out.
    realtime: Realtime
    # Advances rooms whose track has ended.
    playback_scheduler: PlaybackScheduler
    started_at: float = field(default_factory=time.time)
    started_monotonic: float = field(default_factory=time.monotonic)


class SpotikApp(FastAPI):
    """The FastAPI app with its ``services``, except that ``/ws`` WebSocket scopes go straight to
    ``websocket_gateway`` (the gateway behind the rate limiter).

    An open socket keeps every ASGI layer it passed through alive as a suspended coroutine for as long as it is
    connected. The HTTP stack (FastAPI's own error, telemetry and body-limit layers, request id, timing, CORS,
    error envelope, exception handlers, router) does nothing for a socket after the handshake, so bypassing it keeps
    an idle connection small; the gateway does its own Origin check and error handling.
    """

    def __init__(self, *, services: AppState, websocket_gateway: ASGIApp, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.services = services
        self.websocket_gateway = websocket_gateway

    @property
    def max_body_bytes(self) -> int:
        """``MAX_BODY_KB``, for ``spotik.http.input``."""
        return self.services.settings.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == "/ws":
            await self.websocket_gateway(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
