"""``Monitoring``: the one app-scoped object behind the middleware stack, the query monitor and ``/metrics``.

``create_app`` builds it from the settings, points it at the engine and the WebSocket gateway, and puts its
middleware in the stack::

    monitoring = Monitoring(settings)
    monitoring.instrument_engine(engine)
    monitoring.watch_websockets(realtime.figures)
    middleware = [RequestId, *monitoring.outer_middleware(), CORS, *monitoring.inner_middleware(), UnhandledError]

The lifespan starts and stops it; handlers reach it as ``AppState.monitoring``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import psutil
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.middleware import Middleware
from starlette.types import ASGIApp

from spotik.performance.dbtiming import QueryMonitor
from spotik.performance.memory import MemorySampler
from spotik.performance.metrics import HealthStatus, Metrics, pool_status
from spotik.performance.middleware import (
    CompressionStats,
    Gzip,
    GZipMiddleware,
    RateLimitMiddleware,
    RequestTimingMiddleware,
    SecurityHeaders,
    SecurityHeadersMiddleware,
)
from spotik.performance.proxies import TrustedProxies
from spotik.performance.ratelimit import IpRateLimiter
from spotik.realtime.tally import WebSocketFigures
from spotik.settings import Environment, Settings


def _version() -> str:
    try:
        return version("spotik")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"


class Monitoring:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.enabled = settings.enable_performance_monitoring
        self.started_at = time.time()
        self.process = psutil.Process()
        self.metrics = Metrics(
            environment=settings.env.value, version=_version(), pool=self.pool_status, process=self.process
        )
        self.proxies = TrustedProxies(settings.trusted_proxies)
        explain = settings.slow_query_explain
        self.queries = QueryMonitor(
            slow_ms=settings.slow_query_threshold,
            n_plus_one_threshold=settings.n_plus_one_threshold,
            explain=settings.env is Environment.DEVELOPMENT if explain is None else explain,
            metrics=self.metrics,
        )
        self.memory = MemorySampler(
            sample_every=settings.memory_sample_every, window_size=settings.memory_window_size, process=self.process
        )
        self.compression = CompressionStats(self.metrics)
        self.gzip = (
            Gzip(minimum_size=settings.gzip_min_size, level=settings.gzip_level, stats=self.compression)
            if settings.gzip_enabled
            else None
        )
        self.rate_limiter = IpRateLimiter.from_settings(settings) if settings.rate_limiting_enabled else None
        self._running = False

    # -- wiring --------------------------------------------------------------------------------------------------

    def outer_middleware(self) -> list[Middleware]:
        """Right inside the request-id middleware: timing, which also applies security headers, gzip and memory
        sampling (one layer instead of four); with monitoring off, the security and gzip layers on their own."""
        security = (
            SecurityHeaders.from_settings(self.settings, self.proxies)
            if self.settings.security_headers_enabled
            else None
        )
        if self.enabled:
            return [
                Middleware(
                    RequestTimingMiddleware,
                    metrics=self.metrics,
                    queries=self.queries,
                    slow_request_ms=self.settings.slow_request_threshold,
                    security=security,
                    memory=self.memory,
                    gzip=self.gzip,
                )
            ]
        layers = [Middleware(SecurityHeadersMiddleware, policy=security)] if security is not None else []
        if self.gzip is not None:
            layers.append(Middleware(GZipMiddleware, policy=self.gzip))
        return layers

    def inner_middleware(self) -> list[Middleware]:
        """Inside CORS (so that a 429 is readable by browsers): the rate limiter."""
        if self.rate_limiter is None:
            return []
        return [
            Middleware(
                RateLimitMiddleware,
                limiter=self.rate_limiter,
                proxies=self.proxies,
                exempt_paths=self.settings.rate_limit_exempt_paths,
                metrics=self.metrics,
            )
        ]

    def websocket_guard(self, app: ASGIApp) -> ASGIApp:
        """WebSocket scopes bypass the HTTP stack (``spotik.state.SpotikApp``); upgrades still count against the
        limits."""
        if self.rate_limiter is None:
            return app
        return RateLimitMiddleware(
            app,
            limiter=self.rate_limiter,
            proxies=self.proxies,
            exempt_paths=self.settings.rate_limit_exempt_paths,
            metrics=self.metrics,
        )

    # -- lifecycle -----------------------------------------------------------------------------------------------

    def instrument_engine(self, engine: AsyncEngine) -> None:
        """Time every statement of ``engine`` (idempotent; nothing when monitoring is switched off)."""
        if self.enabled:
            self.queries.attach(engine)

    def watch_websockets(self, figures: Callable[[], WebSocketFigures]) -> None:
        """Read the WebSocket gateway's counters at scrape time (the ``spotik_ws_*`` families)."""
        self.metrics.websocket.source = figures

    async def start(self) -> None:
        if self._running:
            return
        self._running = True
        await self.queries.start()

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        await self.queries.stop()
        self.memory.close()
        if self.rate_limiter is not None:
            await self.rate_limiter.close()

    # -- figures -------------------------------------------------------------------------------------------------

    def pool_status(self) -> dict[str, int] | None:
        engine = self.queries.engine
        return pool_status(engine.pool) if engine is not None else None

    def set_health(self, component: str, status: HealthStatus | bool) -> None:
        """A health check's callback: ``spotik_health_status{component}``."""
        self.metrics.set_health(component, status)

    def snapshot(self) -> dict[str, Any]:
        """Headline figures for the performance API and the dashboard."""
        return {
            "uptime_seconds": round(time.time() - self.started_at, 3),
            "memory": self.memory.summary(),
            "database": {
                "statements": self.queries.statements_total,
                "pool": self.pool_status(),
                "slow_queries": [vars(q) for q in self.queries.recent_slow],
                "n_plus_one": list(self.queries.recent_n_plus_one),
                "plans": list(self.queries.recent_plans),
            },
            "compression": self.compression.summary(),
            "rate_limiting": {
                "enabled": self.rate_limiter is not None,
                "shared": bool(self.rate_limiter and self.rate_limiter.shared),
            },
        }
