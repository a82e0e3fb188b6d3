"""Ping, time, health and the liveness/readiness probes."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from fastapi import APIRouter

from spotik.deps import StateDep
from spotik.errors import JSONResponse
from spotik.health.checks import cache_check, check_redis, run_checks
from spotik.health.schemas import Health, Liveness, Ping, Readiness, ServerTime
from spotik.http.openapi import responses, returns
from spotik.timefmt import iso, now_iso

router = APIRouter(tags=["health"])


@router.get(
    "/api/ping",
    summary="Ping",
    responses=returns(Ping),
)
async def ping() -> JSONResponse:
    return JSONResponse({"status": "ok", "timestamp": now_iso()})


@router.get(
    "/api/time",
    summary="The server's clock",
    responses=returns(ServerTime),
)
async def server_time() -> JSONResponse:
    now = datetime.now(UTC)
    return JSONResponse(
        {"timestamp": iso(now), "unix_timestamp": int(now.timestamp()), "timezone": "UTC"},
        headers={"Cache-Control": "no-store"},
    )


@router.get(
    "/api/health",
    summary="Database, storage, Redis and cache health",
    responses=responses(returns(Health), returns(Health, 503, "The database or the storage is unhealthy.")),
)
async def health(state: StateDep) -> JSONResponse:
    status, checks = await run_checks(state.engine, state.settings)
    checks["cache"] = cache_check(state.cache.health())
    redis = await check_redis(state.realtime.link, state.monitoring.rate_limiter)
    if redis is not None:
        checks["redis"] = redis
        if status == "healthy" and redis["status"] != "healthy":
            status = "degraded"  # serving, with Redis-backed features limited to this instance
    body = {"status": status, "timestamp": now_iso(), "checks": checks}
    return JSONResponse(body, status_code=503 if status == "unhealthy" else 200)


@router.get(
    "/live",
    summary="Liveness probe",
    responses=returns(Liveness),
)
async def live(state: StateDep) -> JSONResponse:
    """Liveness: the process answers. No dependency is checked (a database outage must not restart it)."""
    uptime = time.monotonic() - state.started_monotonic
    return JSONResponse({"alive": True, "timestamp": now_iso(), "uptime": round(uptime, 3)})


@router.get(
    "/ready",
    summary="Readiness probe",
    responses=responses(
        returns(Readiness),
        returns(Readiness, 503, "Not ready: the database or the storage is unhealthy."),
    ),
)
async def ready(state: StateDep) -> JSONResponse:
    """Readiness: database reachable and storage writable, else 503 so a load balancer routes elsewhere."""
    status, checks = await run_checks(state.engine, state.settings)
    ready_now = status == "healthy"
    body = {"ready": ready_now, "timestamp": now_iso(), "checks": {k: v["status"] for k, v in checks.items()}}
    return JSONResponse(body, status_code=200 if ready_now else 503)
