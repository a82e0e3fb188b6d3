"""Component checks shared by /api/health and the readiness probe."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

from anyio import to_thread
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from spotik.settings import Settings


async def check_database(engine: AsyncEngine) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        status, error = "healthy", None
    except Exception as exc:  # any failure to reach the database is what this check reports
        status, error = "unhealthy", type(exc).__name__
    result: dict[str, Any] = {
        "status": status,
        "response_time": round((time.perf_counter() - started) * 1000, 2),
        "connection": "ok" if error is None else "failed",
        "driver": engine.dialect.name,
    }
    if error:
        result["error"] = error
    return result


def _write_probe(directory: Path) -> None:
    probe = directory / f".health-{uuid.uuid4().hex}"
    try:
        probe.write_bytes(b"ok")  # on a full disk this creates the file, then fails: it must still go
        if probe.read_bytes() != b"ok":
            raise OSError("read back differs")
    finally:
        probe.unlink(missing_ok=True)


async def check_storage(settings: Settings) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        for directory in (settings.audio_root, settings.public_root):
            await to_thread.run_sync(_write_probe, directory)
        status, error = "healthy", None
    except OSError as exc:
        status, error = "unhealthy", type(exc).__name__
    result: dict[str, Any] = {
        "status": status,
        "response_time": round((time.perf_counter() - started) * 1000, 2),
        "read_write": error is None,
    }
    if error:
        result["error"] = error
    return result


async def run_checks(engine: AsyncEngine, settings: Settings) -> tuple[str, dict[str, Any]]:
    checks = {"database": await check_database(engine), "storage": await check_storage(settings)}
    overall = "healthy" if all(c["status"] == "healthy" for c in checks.values()) else "unhealthy"
    return overall, checks


def cache_check(report: dict[str, Any]) -> dict[str, Any]:
    """The cache's part of /api/health, from ``CacheManager.health()``. Informational: the app answers from the
    database when the cache is off or its Redis is unreachable, so it never makes the overall status unhealthy."""
    return {
        "status": report["status"] if report["enabled"] else "disabled",
        "enabled": report["enabled"],
        "redis": report["redis"],
        "hit_rate": report["hit_rate"],
        "entries": report["entries"],
        "bytes": report["bytes"],
        "reasons": report["reasons"],
    }


# --- Redis (docs/reliability.md#2) -------------------------------------------------------------------------------
# Redis is optional: while it is down each instance serves its own sockets and counts rate limits per instance, so
# its outage makes the instance "degraded" (still 200, still ready), never "unhealthy". The realtime and performance
# objects are read through these protocols: the health checks do not depend on those packages.

REDIS_PING_TIMEOUT = 1.5  # s


class RedisLinkView(Protocol):
    """The real-time broker's Redis link (``spotik.realtime.broker.RedisLink``)."""

    @property
    def up(self) -> bool: ...

    @property
    def outages(self) -> int: ...

    @property
    def last_error(self) -> str | None: ...


class SharedRateLimiterView(Protocol):
    """The rate limiter (``spotik.performance.ratelimit.IpRateLimiter``)."""

    @property
    def shared(self) -> bool: ...

    async def healthy(self) -> bool: ...


def _error_name(error: str | None) -> str | None:
    return error.split(":", 1)[0] if error else None  # the class name only: no addresses in a public answer


async def check_redis(link: RedisLinkView | None, limiter: SharedRateLimiterView | None) -> dict[str, Any] | None:
    """The broker's and the rate limiter's view of Redis, or None when neither uses Redis."""
    shared_limiter = limiter if limiter is not None and limiter.shared else None
    if link is None and shared_limiter is None:
        return None
    started = time.perf_counter()
    parts: dict[str, Any] = {}
    if link is not None:
        broker: dict[str, Any] = {
            "status": "healthy" if link.up else "degraded",
            "connected": link.up,
            "outages": link.outages,
        }
        if not link.up and (error := _error_name(link.last_error)):
            broker["error"] = error
        parts["broker"] = broker
    if shared_limiter is not None:
        try:
            reachable = await asyncio.wait_for(shared_limiter.healthy(), REDIS_PING_TIMEOUT)
        except TimeoutError:
            reachable = False
        parts["rate_limiter"] = {
            "status": "healthy" if reachable else "degraded",
            "connected": reachable,
            "limits": "shared" if reachable else "per-instance",
        }
    status = "healthy" if all(part["status"] == "healthy" for part in parts.values()) else "degraded"
    return {"status": status, "response_time": round((time.perf_counter() - started) * 1000, 2), **parts}
