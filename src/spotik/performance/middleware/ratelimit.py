"""Per-client-IP rate limiting: a 429 in envelope A (docs/api.md#rate-limits) before any work is done (WebSocket
upgrades too)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from spotik.errors import JSONResponse
from spotik.performance.metrics import Metrics
from spotik.performance.proxies import UNKNOWN_CLIENT, TrustedProxies
from spotik.performance.ratelimit import IpRateLimiter, Rejection

log = structlog.get_logger("spotik.security")

WEBSOCKET_DENIAL = "websocket.http.response"
POLICY_VIOLATION = 1008


def rejection_response(rejection: Rejection) -> JSONResponse:
    retry_after = rejection.retry_after
    return JSONResponse(
        {"success": False, "message": "Too many requests", "error": "Rate limit exceeded", "retry_after": retry_after},
        status_code=429,
        headers={
            "Retry-After": str(retry_after),
            "X-RateLimit-Limit": str(rejection.limit.item.amount),
            "X-RateLimit-Remaining": str(max(rejection.remaining, 0)),
            "X-RateLimit-Reset": str(math.ceil(rejection.reset_at)),  # epoch seconds
        },
    )


class RateLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: IpRateLimiter,
        proxies: TrustedProxies,
        exempt_paths: Iterable[str],
        metrics: Metrics | None = None,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.proxies = proxies
        self.exempt = frozenset(exempt_paths)
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        if self.proxies.networks:
            client = self.proxies.client_ip(scope)
        else:  # no proxy is trusted: the peer is the client
            peer = scope.get("client")
            client = peer[0] if peer else UNKNOWN_CLIENT
        path = scope["path"]
        if path.endswith("/"):
            path = path.rstrip("/") or "/"
        limiter = self.limiter
        if limiter.in_process:  # the common case: counting without a coroutine
            exceeded = limiter.exceeded_in_process(client, path)
            rejection = None if exceeded is None else await limiter.rejection(exceeded, client)
        else:
            rejection = await limiter.check(client, path)
        if rejection is None:
            await self.app(scope, receive, send)
            return

        if self.metrics is not None:
            self.metrics.rate_limit_rejections.labels(rejection.limit.name, kind).inc()
        log.warning(
            "rate limit exceeded",
            security_event="rate_limit_exceeded",
            client_ip=client,
            peer=self.proxies.peer(scope),
            transport=kind,
            method=scope.get("method", "GET"),
            path=scope["path"],
            limit=rejection.limit.name,
            rule=str(rejection.limit.item),
            retry_after=rejection.retry_after,
        )
        response = rejection_response(rejection)
        if kind == "http" or WEBSOCKET_DENIAL in (scope.get("extensions") or {}):
            # On a WebSocket scope Starlette's response becomes the ASGI denial response: an HTTP 429, no upgrade.
            await response(scope, receive, send)
        else:
            await send({"type": "websocket.close", "code": POLICY_VIOLATION, "reason": "Rate limit exceeded"})
