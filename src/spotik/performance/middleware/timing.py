"""Request timing: ``X-Response-Time``, the latency histogram, in-flight requests, per-request DB counters, slow
requests — and, in the same send wrapper, the security headers, gzip and the sampled memory delta.

They share one layer because each costs little while a layer of its own costs about as much again on every
request (the whole stack must stay within 15 % of the bare app's throughput; see bench/). Each stays its own
piece — the policies in ``security.py`` and ``gzip.py``, the sampling in ``spotik.performance.memory`` — and the
first two also exist as standalone middleware for when monitoring is switched off.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from spotik.performance.dbtiming import REQUEST_QUERIES, QueryMonitor, RequestQueries
from spotik.performance.memory import MemorySampler
from spotik.performance.metrics import Metrics
from spotik.performance.middleware.gzip import Gzip, _GZipResponder
from spotik.performance.middleware.security import SecurityHeaders
from spotik.performance.routes import route_template

log = structlog.get_logger("spotik.performance.http")

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestTimingMiddleware:
    """Times every HTTP request; sits right inside the request-id middleware so its logs carry the id.

    ``X-Response-Time`` is the time to the response start (what the client waits for the headers); the histogram
    and the slow-request log use the time until the last body byte was handed to the server.

    ``security`` adds the security headers; ``memory`` samples RSS around 1 request in N.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        queries: QueryMonitor,
        slow_request_ms: float,
        security: SecurityHeaders | None = None,
        memory: MemorySampler | None = None,
        gzip: Gzip | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.queries = queries
        self.slow_request_ms = slow_request_ms
        self.security = security
        self.gzip = gzip
        self.memory = memory if memory is not None and memory.sample_every > 0 else None
        self._until_sample = self.memory.sample_every if self.memory is not None else 0  # requests left until one
        self._growth: dict[str, Any] = {}  # memory growth counters by route (labels() locks on every call)
        self._in_flight = metrics.in_flight
        self._durations = metrics.http_request_duration

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()
        status = 500
        headers_at = 0.0
        security = self.security
        extra = None if security is None else security.for_request(scope)
        private = extra is not None and SecurityHeaders.private(scope)
        gzip = self.gzip if self.gzip is not None and self.gzip.accepted(scope) else None
        compressing: _GZipResponder | None = None

        async def send_timed(message: Message) -> None:
            nonlocal status, headers_at, compressing
            if compressing is not None:
                await compressing.send_body(message)
                return
            if message["type"] == "http.response.start":
                status = message["status"]
                headers_at = time.perf_counter()
                elapsed = (b"x-response-time", b"%.2fms" % ((headers_at - started) * 1000))
                if extra is not None:
                    SecurityHeaders.apply(message, extra, private).append(elapsed)
                else:
                    message["headers"] = [*message.get("headers", ()), elapsed]
                if gzip is not None and gzip.eligible(message):
                    compressing = gzip.responder(send, message)  # holds the start until the first body chunk
                    return
            await send(message)

        rss_before = None
        if self.memory is not None:
            self._until_sample -= 1
            if self._until_sample <= 0:  # every sample_every-th request
                self._until_sample = self.memory.sample_every
                rss_before = self.memory.rss()
        in_flight = self._in_flight
        in_flight.value += 1
        queries = RequestQueries()
        token = REQUEST_QUERIES.set(queries)
        scope.setdefault("state", {})["db_queries"] = queries
        try:
            await self.app(scope, receive, send_timed)
        finally:
            REQUEST_QUERIES.reset(token)
            in_flight.value -= 1
            elapsed = time.perf_counter() - started
            route = route_template(scope)
            method = scope["method"]
            if method not in KNOWN_METHODS:
                method = "OTHER"  # clients choose methods: never let them mint label values
            self._durations.observe(elapsed, (method, route, str(status)))
            if queries.count:
                self.queries.finish_request(queries, route=route, method=method)
            if rss_before is not None:
                self._record_memory(route, method, rss_before)
            if elapsed * 1000 > self.slow_request_ms:
                self._log_slow(route, method, status, elapsed, headers_at - started if headers_at else None, queries)

    def _record_memory(self, route: str, method: str, rss_before: int) -> None:
        assert self.memory is not None
        sample = self.memory.record(route, method, rss_before, self.memory.rss())
        self.metrics.memory_request_delta.observe(sample.delta_bytes)
        if sample.delta_bytes > 0:
            growth = self._growth.get(route)
            if growth is None:
                growth = self._growth[route] = self.metrics.memory_route_growth.labels(route)
            growth.inc(sample.delta_bytes)

    def _log_slow(
        self, route: str, method: str, status: int, elapsed: float, headers: float | None, queries: RequestQueries
    ) -> None:
        self.metrics.http_slow_requests.labels(route).inc()
        log.warning(
            "slow request",
            route=route,
            method=method,
            status=status,
            duration_ms=round(elapsed * 1000, 3),
            headers_ms=round(headers * 1000, 3) if headers is not None else None,
            threshold_ms=self.slow_request_ms,
            db_queries=queries.count,
            db_ms=round(queries.total_ms, 3),
        )
