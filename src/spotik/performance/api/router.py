"""The performance API's routes (docs/api.md#performance): ``/api/performance/*``, ``/api/websocket/status``,
Laravel's ``/api/metrics`` and the live ``/dashboard`` page. The figures come from the app's
:class:`~spotik.performance.api.service.PerformanceApi` (``AppState.performance``).
"""

from __future__ import annotations

import asyncio
import os
import platform
import secrets
import time
from dataclasses import dataclass
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Body, Depends
from starlette.responses import HTMLResponse, Response

from spotik.auth.models import User
from spotik.deps import CurrentUser, StateDep
from spotik.errors import Forbidden, JSONResponse
from spotik.http.input import BoundedBodyRoute
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
from spotik.performance.api.service import (
    ACTION_TIMEOUT_SECONDS,
    CACHE_TYPES,
    NONCE_PLACEHOLDER,
    OPTIMIZATION_TYPES,
    CacheClearRequest,
    OptimizeRequest,
    PerformanceApi,
    counter_total,
    is_operator,
    load_average,
)
from spotik.performance.api.subsystems import (
    CacheClearing,
    guarded,
)
from spotik.performance.monitor import Monitoring
from spotik.state import AppState
from spotik.timefmt import now_iso

log = structlog.get_logger("spotik.performance.api")

router = APIRouter(tags=["performance"])
# The operator actions take a typed JSON body, which FastAPI would read without a size limit: BoundedBodyRoute reads
# it first, within read_input's limit (413). Included into ``router`` at the end of this module.
actions_router = APIRouter(tags=["performance"], route_class=BoundedBodyRoute)

# What an operator's action (optimize, cache clear) can answer besides its result.
OPERATOR_ACTION = responses(
    UNAUTHENTICATED,
    {403: error("Not a performance operator (PERFORMANCE_ADMINS) (envelope A).")},
    {400: error("The body is not valid JSON (envelope A).", ErrorA)},
    {400: error("An unknown type.", InvalidType)},
    {413: error("The body is larger than `MAX_BODY_KB` (1 MiB by default) (envelope A).", ErrorA)},
    {422: error("The body does not match its schema (envelope A).", ValidationErrorA)},
)


@router.get(
    "/api/performance/metrics",
    summary="Headline figures",
    responses=returns(PerformanceMetricsResponse),
)
async def performance_metrics(context: Context) -> JSONResponse:
    api = context.api
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
    api = context.api
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
    api = context.api
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
    api = context.api
    results: dict[str, Any] = {}
    for subsystem in api.registry:  # one at a time: benchmarks running side by side would skew each other
        results[subsystem.name] = await guarded(subsystem.benchmark, ACTION_TIMEOUT_SECONDS)
    return JSONResponse({"success": True, "benchmarks": results, "timestamp": now_iso()})


@actions_router.post(
    "/api/performance/optimize",
    summary="Run each subsystem's optimization (operators)",
    responses=responses(
        returns(OptimizeResponse),
        OPERATOR_ACTION,
    ),
)
async def performance_optimize(
    context: Context,
    operator: Operator,
    payload: Annotated[OptimizeRequest | None, Body()] = None,
) -> JSONResponse:
    api = context.api
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


@actions_router.post(
    "/api/performance/cache/clear",
    summary="Clear caches (operators)",
    responses=responses(
        returns(CacheClearResponse),
        OPERATOR_ACTION,
    ),
)
async def performance_cache_clear(
    context: Context,
    operator: Operator,
    payload: Annotated[CacheClearRequest | None, Body()] = None,
) -> JSONResponse:
    api = context.api
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
    responses=responses(returns(LaravelMetrics), {503: error("The monitoring is disabled (envelope B).", ErrorB)}),
)
async def laravel_metrics_endpoint(context: Context) -> JSONResponse:
    api = context.api
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
async def dashboard_page(state: StateDep) -> Response:
    nonce = secrets.token_urlsafe(18)
    policy = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
        "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
    return HTMLResponse(
        state.performance.page.replace(NONCE_PLACEHOLDER, nonce),
        headers={"Content-Security-Policy": policy, "Cache-Control": "no-store"},
    )


class _NoHeadline:
    def headline(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True, slots=True)
class PerformanceContext:
    api: PerformanceApi
    state: AppState
    monitoring: Monitoring | None


async def performance_context(state: StateDep) -> PerformanceContext:
    return PerformanceContext(state.performance, state, state.monitoring)


Context = Annotated[PerformanceContext, Depends(performance_context)]


async def operator_user(user: CurrentUser, state: StateDep) -> User:
    if not is_operator(state.settings, user):
        raise Forbidden("Performance operators only", error="Forbidden")
    return user


Operator = Annotated[User, Depends(operator_user)]


router.include_router(actions_router)
