"""Component checks shared by /api/health and the readiness probe."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

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
    probe.write_bytes(b"ok")
    try:
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
