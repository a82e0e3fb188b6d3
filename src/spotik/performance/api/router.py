"""The performance API (contract D1, D10): ``/api/performance/*``, ``/api/websocket/status``, Laravel's
``/api/metrics`` and the live ``/dashboard`` page.

``create_app`` builds one :class:`PerformanceApi` per app and includes its router::

    performance = PerformanceApi(settings)
    app.include_router(performance.router())

Subsystems join through ``performance.registry`` (see :mod:`spotik.performance.api.subsystems`). Request figures come
from the app's :class:`~spotik.performance.monitor.Monitoring` (``request.state.monitoring``): the Prometheus
latency histogram ``spotik_http_request_duration_seconds`` (count and sum by method, route template and status) is
the only per-route record the monitoring keeps, so ``/api/metrics`` derives its current-hour figures from it (the
histogram's value at the last read of the previous hour is the baseline; ``max_response_time`` is the upper bound
of the highest latency bucket that received a request this hour).
"""

from __future__ import annotations

import asyncio
import os
import platform
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Body, Depends, FastAPI
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from spotik.auth.models import User
from spotik.deps import CurrentUser, StateDep
from spotik.errors import Forbidden, JSONResponse
from spotik.http.openapi import UNAUTHENTICATED, ErrorA, ErrorB, ValidationErrorA, error, responses, returns
from spotik.performance.api.schemas import (
    BenchmarksResponse,
    CacheClearResponse,
    InvalidType,
    LaravelMetrics,
    OptimizeResponse,
    PerformanceDashboardResponse,
    PerformanceHealthResponse,
    PerformanceMetricsResponse,
    WebSocketStatus,
)
from spotik.performance.api.subsystems import (
    CacheClearing,
    ComponentHealth,
    Status,
    SubsystemRegistry,
    default_factories,
    guarded,
    guarded_health,
    worst,
)
from spotik.performance.monitor import Monitoring
from spotik.performance.routes import UNMATCHED
from spotik.settings import Environment, Settings
from spotik.state import AppState
from spotik.timefmt import now_iso

log = structlog.get_logger("spotik.performance.api")

OPTIMIZATION_TYPES = ("all", "database", "websocket", "cache", "memory")
CACHE_TYPES = (
    "room_state",
    "track_queue",
    "user_data",
    "file_metadata",
    "api_response",
    "database_query",
    "all",
)
HEALTH_TTL_SECONDS = 2.0  # the public endpoints are polled every second: one real check per window
HEALTH_TIMEOUT_SECONDS = 5.0
ACTION_TIMEOUT_SECONDS = 30.0
SLOW_RATE_ALERT = 0.05  # share of slow requests (SLOW_REQUEST_THRESHOLD) that raises an alert …
SLOW_RATE_MIN_REQUESTS = 20  # … once at least this many requests were served
DASHBOARD_FILE = Path(__file__).with_name("dashboard.html")
NONCE_PLACEHOLDER = "{{NONCE}}"


# --- request figures from the monitoring's Prometheus histogram ---------------------------------------------------

Key = tuple[str, str, str]  # method, route, status


class Series:
    __slots__ = ("buckets", "count", "sum")

    def __init__(self) -> None:
        self.count = 0.0
        self.sum = 0.0
        self.buckets: list[tuple[float, float]] = []  # (upper bound, cumulative count)


def read_histogram(monitoring: Monitoring | None) -> dict[Key, Series]:
    """The cumulative latency histogram by (method, route, status)."""
    if monitoring is None:
        return {}
    series: dict[Key, Series] = {}
    for family in monitoring.metrics.http_request_duration.collect():
        for sample in family.samples:
            labels = sample.labels
            key = (labels.get("method", ""), labels.get("route", ""), labels.get("status", ""))
            entry = series.setdefault(key, Series())
            if sample.name.endswith("_count"):
                entry.count = sample.value
            elif sample.name.endswith("_sum"):
                entry.sum = sample.value
            elif sample.name.endswith("_bucket"):
                entry.buckets.append((float(labels["le"]), sample.value))
    return series


def counter_total(monitoring: Monitoring | None, attribute: str) -> float:
    if monitoring is None:
        return 0.0
    total = 0.0
    for family in getattr(monitoring.metrics, attribute).collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                total += sample.value
    return total


def _max_bound(current: Series, baseline: Series | None) -> float:
    """Upper bound (s) of the highest bucket that gained a request since the baseline."""
    before = dict(baseline.buckets) if baseline is not None else {}
    previous_now = previous_then = 0.0
    highest = 0.0
    for bound, cumulative in sorted(current.buckets):
        gained = (cumulative - previous_now) - (before.get(bound, 0.0) - previous_then)
        previous_now, previous_then = cumulative, before.get(bound, 0.0)
        if gained > 0:
            highest = bound
    if highest == float("inf"):  # past the last finite bucket: the best bound known is the last finite one
        finite = [bound for bound, _ in current.buckets if bound != float("inf")]
        highest = max(finite, default=0.0)
    return highest


class HourlyRequests:
    """Request figures of the current clock hour, as differences of the cumulative histogram."""

    def __init__(self, started_at: float) -> None:
        self.started_at = started_at
        self._hour: int | None = None
        self._baseline: dict[Key, Series] = {}
        self._last: dict[Key, Series] = {}

    def current(self, cumulative: dict[Key, Series], now: float) -> dict[Key, tuple[Series, Series | None]]:
        hour = int(now // 3600)
        if self._hour is None:
            # First read: everything since start counts when the process started this hour.
            self._baseline = {} if self.started_at >= hour * 3600 else cumulative
        elif hour != self._hour:
            self._baseline = self._last  # the last read of the previous hour
        self._hour = hour
        self._last = cumulative
        result: dict[Key, tuple[Series, Series | None]] = {}
        for key, series in cumulative.items():
            baseline = self._baseline.get(key)
            delta = Series()
            delta.count = series.count - (baseline.count if baseline else 0.0)
            delta.sum = series.sum - (baseline.sum if baseline else 0.0)
            if delta.count > 0:
                result[key] = (delta, baseline)
        return result


def laravel_metrics(
    hour: dict[Key, tuple[Series, Series | None]],
    cumulative: dict[Key, Series],
    memory_samples: Iterable[tuple[float, int]],
    current_rss: int,
    hour_start: float,
) -> dict[str, Any]:
    """``{requests, status_codes, routes}`` (Laravel's PerformanceMonitor shape; times in ms, memory in bytes)."""
    if not hour:
        return {}
    total = 0.0
    time_sum = 0.0
    max_time = 0.0
    status_codes: dict[str, int] = {}
    routes: dict[str, dict[str, Any]] = {}
    for key, (delta, baseline) in hour.items():
        _method, route, status = key
        bound = _max_bound(cumulative[key], baseline) * 1000
        total += delta.count
        time_sum += delta.sum
        max_time = max(max_time, bound)
        status_codes[status] = status_codes.get(status, 0) + int(delta.count)
        name = "unknown" if route in ("", UNMATCHED) else route
        entry = routes.setdefault(name, {"count": 0, "time_sum": 0.0, "max_time": 0.0})
        entry["count"] += int(delta.count)
        entry["time_sum"] += delta.sum * 1000
        entry["max_time"] = max(entry["max_time"], bound)
    memory = [rss for at, rss in memory_samples if at >= hour_start] or [current_rss]
    return {
        "requests": {
            "total": int(total),
            "avg_response_time": round(time_sum * 1000 / total, 3),
            "max_response_time": round(max_time, 3),
            "avg_memory_usage": round(sum(memory) / len(memory)),
            "max_memory_usage": max(memory),
        },
        "status_codes": dict(sorted(status_codes.items())),
        "routes": {
            name: {
                "count": entry["count"],
                "avg_time": round(entry["time_sum"] / entry["count"], 3),
                "max_time": round(entry["max_time"], 3),
            }
            for name, entry in sorted(routes.items())
        },
    }


# --- alerts --------------------------------------------------------------------------------------------------


class Alerts:
    """Threshold crossings: each logged once when it starts (and once when it clears), listed while active."""

    def __init__(self, history: int = 50) -> None:
        self.active: dict[str, dict[str, Any]] = {}
        self.recent: deque[dict[str, Any]] = deque(maxlen=history)

    def update(self, key: str, active: bool, level: str, message: str) -> None:
        if active and key not in self.active:
            alert = {"key": key, "level": level, "message": message, "since": now_iso()}
            self.active[key] = alert
            self.recent.append({**alert, "event": "raised"})
            (log.error if level == "critical" else log.warning)("performance alert", key=key, message=message)
        elif active:
            self.active[key]["message"] = message  # still crossed: current figures, no new log line
        elif key in self.active:
            alert = self.active.pop(key)
            self.recent.append({**alert, "event": "cleared", "at": now_iso()})
            log.info("performance alert cleared", key=key)

    def as_dict(self) -> dict[str, Any]:
        return {"active": list(self.active.values()), "recent": list(self.recent)}


# --- the API object ----------------------------------------------------------------------------------------


class OptimizeRequest(BaseModel):
    type: str = "all"


class CacheClearRequest(BaseModel):
    cache_type: str = "all"


def is_operator(settings: Settings, user: User) -> bool:
    """D10: a user listed in PERFORMANCE_ADMINS (id, username or e-mail), or anyone signed in in development."""
    if settings.env is Environment.DEVELOPMENT:
        return True
    admins = {entry.strip().lower() for entry in settings.performance_admins}
    return bool(admins & {str(user.id).lower(), user.username.lower(), user.email.lower()})


def load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None


class PerformanceApi:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = SubsystemRegistry()
        for factory in default_factories():
            self.registry.register_factory(factory)
        self.alerts = Alerts()
        self.hourly = HourlyRequests(time.time())
        self._health: tuple[float, dict[str, Any]] | None = None
        self._health_lock = asyncio.Lock()
        self._page = DASHBOARD_FILE.read_text(encoding="utf-8")

    # -- figures --------------------------------------------------------------------------------------------

    async def health(self, monitoring: Monitoring | None, *, fresh: bool = False) -> dict[str, Any]:
        async with self._health_lock:
            now = time.monotonic()
            if not fresh and self._health is not None and now - self._health[0] < HEALTH_TTL_SECONDS:
                return self._health[1]
            subsystems = list(self.registry)
            results = await asyncio.gather(*(guarded_health(s, HEALTH_TIMEOUT_SECONDS) for s in subsystems))
            components: dict[str, ComponentHealth] = {s.name: r for s, r in zip(subsystems, results, strict=True)}
            overall: Status = worst(c.status for c in components.values())
            report = {
                "overall_status": overall,
                "health_issues": [r for c in components.values() if c.status == "unhealthy" for r in c.reasons],
                "warning_issues": [r for c in components.values() if c.status == "degraded" for r in c.reasons],
                "components": {name: c.as_dict() for name, c in components.items()},
                "timestamp": now_iso(),
            }
            self._evaluate_alerts(components, monitoring)
            if monitoring is not None:
                for name, component in components.items():
                    monitoring.set_health(f"performance_{name}", component.status)
            self._health = (now, report)
            return report

    def _evaluate_alerts(self, components: dict[str, ComponentHealth], monitoring: Monitoring | None) -> None:
        for name, component in components.items():
            if name == "memory":  # its own alerts below, named after the levels
                continue
            reasons = "; ".join(component.reasons) or component.status
            self.alerts.update(f"{name}_unhealthy", component.status == "unhealthy", "critical", reasons)
            self.alerts.update(f"{name}_degraded", component.status == "degraded", "warning", reasons)
        memory = components.get("memory")
        level = memory.details.get("level") if memory is not None else None
        self.alerts.update("memory_critical", level == "critical", "critical", f"memory level {level}")
        self.alerts.update("memory_warning", level == "warning", "warning", f"memory level {level}")
        total = sum(s.count for s in read_histogram(monitoring).values())
        slow = counter_total(monitoring, "http_slow_requests")
        rate = slow / total if total else 0.0
        self.alerts.update(
            "slow_requests",
            total >= SLOW_RATE_MIN_REQUESTS and rate > SLOW_RATE_ALERT,
            "warning",
            f"{rate:.1%} of {int(total)} requests slower than {self.settings.slow_request_threshold:g} ms",
        )

    def hour_metrics(self, monitoring: Monitoring | None) -> tuple[dict[str, Any], dict[Key, Series]]:
        now = time.time()
        cumulative = read_histogram(monitoring)
        hour = self.hourly.current(cumulative, now)
        samples: list[tuple[float, int]] = []
        rss = 0
        if monitoring is not None:
            samples = [(s.at, s.rss_bytes) for s in monitoring.memory.samples]
            rss = monitoring.memory.rss()
        return laravel_metrics(hour, cumulative, samples, rss, (now // 3600) * 3600), cumulative

    # -- wiring ---------------------------------------------------------------------------------------------

    def router(self) -> APIRouter:
        api = self

        @asynccontextmanager
        async def lifespan(_app: FastAPI) -> AsyncIterator[dict[str, Any]]:
            yield {"performance": api}

        router = APIRouter(tags=["performance"], lifespan=lifespan)

        @router.get(
            "/api/performance/metrics",
            summary="Headline figures",
            responses=returns(PerformanceMetricsResponse),
        )
        async def performance_metrics(context: Context) -> JSONResponse:
            state, monitoring = context.state, context.monitoring
            health = await api.health(monitoring)
            hour, cumulative = api.hour_metrics(monitoring)
            status_codes: dict[str, int] = {}
            for (_method, _route, status), series in cumulative.items():
                status_codes[status] = status_codes.get(status, 0) + int(series.count)
            headlines = {s.name: s.headline() for s in api.registry}
            memory = headlines.get("memory", {})
            websocket = headlines.get("websocket", {})
            database = headlines.get("database", {})
            cache = headlines.get("cache", {})
            body = {
                "timestamp": now_iso(),
                "server_time": time.time(),
                "uptime": round(time.monotonic() - state.started_monotonic, 3),
                "memory": {"current_mb": memory.get("rss_mb"), "status": memory.get("level")},
                "connections": {
                    "websocket": websocket.get("connections"),
                    "database": database.get("pool_checked_out"),
                },
                "performance": {
                    "health_status": health["overall_status"],
                    "operations_per_hour": hour.get("requests", {}).get("total", 0),
                },
                "cache": {"hit_rate": cache.get("hit_rate"), "total_entries": cache.get("total_entries", 0)},
                "requests": {
                    "total": int(sum(s.count for s in cumulative.values())),
                    "duration_seconds_sum": round(sum(s.sum for s in cumulative.values()), 6),
                    "in_flight": monitoring.metrics.in_flight.value if monitoring is not None else None,
                    "slow_total": int(counter_total(monitoring, "http_slow_requests")),
                    "status_codes": dict(sorted(status_codes.items())),
                },
                "health": {
                    "status": health["overall_status"],
                    "components": {name: c["status"] for name, c in health["components"].items()},
                },
                "alerts": len(api.alerts.active),
                "subsystems": headlines,
            }
            return JSONResponse({"success": True, "metrics": body})

        @router.get(
            "/api/performance/health",
            summary="Every subsystem's health",
            responses=responses(
                returns(PerformanceHealthResponse),
                returns(PerformanceHealthResponse, 503, "A subsystem is unhealthy."),
            ),
        )
        async def performance_health(context: Context) -> JSONResponse:
            monitoring = context.monitoring
            report = await api.health(monitoring, fresh=True)
            code = 503 if report["overall_status"] == "unhealthy" else 200
            return JSONResponse({"success": True, "health": report, "timestamp": now_iso()}, status_code=code)

        @router.get(
            "/api/performance/dashboard",
            summary="The dashboard's figures",
            responses=responses(returns(PerformanceDashboardResponse), UNAUTHENTICATED),
        )
        async def performance_dashboard(context: Context, _user: CurrentUser) -> JSONResponse:
            state, monitoring = context.state, context.monitoring
            health = await api.health(monitoring, fresh=True)
            hour, _cumulative = api.hour_metrics(monitoring)
            uptime = time.monotonic() - state.started_monotonic
            data: dict[str, Any] = {
                "server": {
                    "uptime": round(uptime, 3),
                    "started_at": state.started_at,
                    "python_version": platform.python_version(),
                    "environment": state.settings.env.value,
                    "pid": os.getpid(),
                    "memory_mb": (api.registry.get("memory") or _NoHeadline()).headline().get("rss_mb"),
                    "load_average": load_average(),
                    "cpu_count": os.cpu_count(),
                },
                "performance": {
                    "operations_per_hour": hour.get("requests", {}).get("total", 0),
                    "current_hour": hour,
                },
            }
            subsystems = list(api.registry)
            sections = await asyncio.gather(*(guarded(s.dashboard, ACTION_TIMEOUT_SECONDS) for s in subsystems))
            for subsystem, section in zip(subsystems, sections, strict=True):
                data[subsystem.name] = section
            if monitoring is not None:
                snapshot = monitoring.snapshot()
                data["monitoring"] = {
                    "compression": snapshot["compression"],
                    "rate_limiting": snapshot["rate_limiting"],
                }
            data["alerts"] = api.alerts.as_dict()
            data["health"] = health
            return JSONResponse({"success": True, "data": data, "timestamp": now_iso(), "authenticated": True})

        @router.get(
            "/api/performance/benchmarks",
            summary="Run each subsystem's micro-benchmark",
            responses=responses(returns(BenchmarksResponse), UNAUTHENTICATED),
        )
        async def performance_benchmarks(context: Context, _user: CurrentUser) -> JSONResponse:
            results: dict[str, Any] = {}
            for subsystem in api.registry:  # one at a time: benchmarks running side by side would skew each other
                results[subsystem.name] = await guarded(subsystem.benchmark, ACTION_TIMEOUT_SECONDS)
            return JSONResponse({"success": True, "benchmarks": results, "timestamp": now_iso()})

        @router.post(
            "/api/performance/optimize",
            summary="Run each subsystem's optimization (operators)",
            responses=responses(
                returns(OptimizeResponse),
                UNAUTHENTICATED,
                {403: error("Not a performance operator (PERFORMANCE_ADMINS) (envelope A).")},
                {400: error("The body is not valid JSON (envelope A).", ErrorA)},
                {400: error("An unknown type.", InvalidType)},
                {422: error("The body does not match its schema (envelope A).", ValidationErrorA)},
            ),
        )
        async def performance_optimize(
            context: Context,
            operator: Operator,
            payload: Annotated[OptimizeRequest | None, Body()] = None,
        ) -> JSONResponse:
            kind = (payload or OptimizeRequest()).type
            valid = list(dict.fromkeys([*OPTIMIZATION_TYPES, *api.registry.names()]))
            if kind not in valid:
                return JSONResponse(
                    {"success": False, "error": "Invalid optimization type", "valid_types": valid}, status_code=400
                )
            names = api.registry.names() if kind == "all" else [kind]
            results: dict[str, Any] = {}
            for name in names:
                subsystem = api.registry.get(name)
                if subsystem is None:
                    results[name] = {"skipped": f"no {name} subsystem is registered"}
                    continue
                results[name] = await guarded(subsystem.optimize, ACTION_TIMEOUT_SECONDS)
            log.info("performance optimization", type=kind, user_id=str(operator.id), results=results)
            return JSONResponse(
                {
                    "success": True,
                    "message": "Performance optimization completed",
                    "optimization_type": kind,
                    "results": results,
                    "timestamp": now_iso(),
                }
            )

        @router.post(
            "/api/performance/cache/clear",
            summary="Clear caches (operators)",
            responses=responses(
                returns(CacheClearResponse),
                UNAUTHENTICATED,
                {403: error("Not a performance operator (PERFORMANCE_ADMINS) (envelope A).")},
                {400: error("The body is not valid JSON (envelope A).", ErrorA)},
                {400: error("An unknown type.", InvalidType)},
                {422: error("The body does not match its schema (envelope A).", ValidationErrorA)},
            ),
        )
        async def performance_cache_clear(
            context: Context,
            operator: Operator,
            payload: Annotated[CacheClearRequest | None, Body()] = None,
        ) -> JSONResponse:
            cache_type = (payload or CacheClearRequest()).cache_type
            if cache_type not in CACHE_TYPES:
                return JSONResponse(
                    {"success": False, "error": "Invalid cache type", "valid_types": list(CACHE_TYPES)},
                    status_code=400,
                )
            cleared = 0
            for subsystem in api.registry:
                if isinstance(subsystem, CacheClearing):
                    cleared += await subsystem.clear_cache(cache_type)
            log.info("cache cleared", cache_type=cache_type, cleared=cleared, user_id=str(operator.id))
            return JSONResponse(
                {
                    "success": True,
                    "message": f"Cache cleared: {cache_type}",
                    "cache_type": cache_type,
                    "cleared": cleared,
                    "timestamp": now_iso(),
                }
            )

        @router.get(
            "/api/websocket/status",
            summary="The WebSocket gateway's connections",
            responses=returns(WebSocketStatus),
        )
        async def websocket_status(state: StateDep) -> JSONResponse:
            realtime = state.realtime
            stats = realtime.registry.stats() if realtime is not None else None
            return JSONResponse(
                {
                    "websocket_enabled": realtime is not None and realtime.accepting,
                    "connection_stats": {
                        "total_connections": stats["connections"] if stats else 0,
                        "room_connections": sum(stats["rooms"].values()) if stats else 0,
                        "rooms": len(stats["rooms"]) if stats else 0,
                        "authenticated_users": stats["users"] if stats else 0,
                    },
                    "server_time": now_iso(),
                }
            )

        @router.get(
            "/api/metrics",
            summary="The current hour's request figures",
            responses=responses(
                returns(LaravelMetrics), {503: error("The monitoring is disabled (envelope B).", ErrorB)}
            ),
        )
        async def laravel_metrics_endpoint(context: Context) -> JSONResponse:
            monitoring = context.monitoring
            if monitoring is None or not monitoring.enabled:
                return JSONResponse({"error": "Metrics disabled"}, status_code=503)
            hour, _cumulative = api.hour_metrics(monitoring)
            return JSONResponse({"timestamp": now_iso(), "metrics": hour})

        @router.get(
            "/dashboard",
            summary="The live performance dashboard (HTML)",
            response_class=HTMLResponse,
            responses={200: {"description": "The dashboard page; it polls the performance API."}},
        )
        async def dashboard_page() -> Response:
            nonce = secrets.token_urlsafe(18)
            policy = (
                f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
                "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
            )
            return HTMLResponse(
                api._page.replace(NONCE_PLACEHOLDER, nonce),
                headers={"Content-Security-Policy": policy, "Cache-Control": "no-store"},
            )

        return router


class _NoHeadline:
    def headline(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True, slots=True)
class PerformanceContext:
    api: PerformanceApi
    state: AppState
    monitoring: Monitoring | None


def performance_context(request: Request, state: StateDep) -> PerformanceContext:
    """The app's PerformanceApi (lifespan state of its router) with its subsystems bound to the app state."""
    api: PerformanceApi = request.state.performance
    monitoring: Monitoring | None = getattr(request.state, "monitoring", None)
    api.registry.bind(state, monitoring)
    return PerformanceContext(api, state, monitoring)


Context = Annotated[PerformanceContext, Depends(performance_context)]


def operator_user(user: CurrentUser, state: StateDep) -> User:
    if not is_operator(state.settings, user):
        raise Forbidden("Performance operators only", error="Forbidden")
    return user


Operator = Annotated[User, Depends(operator_user)]
