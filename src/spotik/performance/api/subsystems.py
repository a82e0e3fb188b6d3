"""The one interface through which a subsystem joins the performance API, and the built-in subsystems.

A subsystem is any object with a ``name`` and five methods (:class:`Subsystem`): a cheap ``headline()`` (a few
figures, read on every ``/api/performance/metrics`` poll), its ``dashboard()`` section, a ``health()`` check, an
``optimize()`` action and a bounded ``benchmark()``. :class:`SubsystemRegistry` holds them in order; the caching
service joins by registering one object in ``create_app`` (``state.performance.registry.register``), without
touching this package. A subsystem that can also empty caches implements :class:`CacheClearing`.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import psutil
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from spotik.auth.repository import purge_expired_revocations
from spotik.db.models import Base
from spotik.performance.dbtiming import untracked
from spotik.performance.metrics import pool_status
from spotik.performance.monitor import Monitoring
from spotik.realtime import protocol
from spotik.realtime.gateway import Realtime
from spotik.settings import Settings


class Services(Protocol):
    """What the subsystems read (``Services`` has it all)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def engine(self) -> AsyncEngine: ...
    @property
    def sessionmaker(self) -> async_sessionmaker[AsyncSession]: ...
    @property
    def monitoring(self) -> Monitoring: ...
    @property
    def realtime(self) -> Realtime: ...


Status = Literal["healthy", "degraded", "unhealthy"]
Figure = float | int | str | None
MB = 1024 * 1024
_RANK: dict[str, int] = {"healthy": 0, "degraded": 1, "unhealthy": 2}

# Thresholds (ms / fractions). Settings may carry MEMORY_WARNING_MB / MEMORY_CRITICAL_MB (the realtime layer reads
# the same names); the rest are fixed here until someone needs them configurable.
DB_PING_DEGRADED_MS = 250.0
POOL_BUSY_DEGRADED = 0.9


@dataclass(frozen=True, slots=True)
class ComponentHealth:
    status: Status
    reasons: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "reasons": list(self.reasons), **self.details}


def worst(statuses: Iterable[Status]) -> Status:
    result: Status = "healthy"
    for status in statuses:
        if _RANK[status] > _RANK[result]:
            result = status
    return result


@runtime_checkable
class Subsystem(Protocol):
    """What a subsystem gives the performance API. Every method must be bounded in time and never raise for an
    expected failure (report it instead): the registry still guards each call."""

    name: str

    def headline(self) -> dict[str, Figure]:
        """A few cheap figures for the live dashboard (no I/O: read on every poll)."""
        ...

    async def dashboard(self) -> dict[str, Any]: ...

    async def health(self) -> ComponentHealth: ...

    async def optimize(self) -> dict[str, Any]:
        """Do the subsystem's housekeeping now; report what was done."""
        ...

    async def benchmark(self) -> dict[str, Any]:
        """A bounded in-process benchmark; figures only."""
        ...


@runtime_checkable
class CacheClearing(Protocol):
    """Optional: a subsystem that can empty caches (``POST /api/performance/cache/clear``)."""

    async def clear_cache(self, cache_type: str) -> int:
        """Entries removed for ``cache_type`` (one of ``CACHE_TYPES``)."""
        ...


class SubsystemRegistry:
    """The subsystems of one app, in registration order (names unique)."""

    def __init__(self) -> None:
        self._subsystems: dict[str, Subsystem] = {}

    def register(self, subsystem: Subsystem) -> None:
        if subsystem.name in self._subsystems:
            raise ValueError(f"a subsystem named {subsystem.name!r} is already registered")
        self._subsystems[subsystem.name] = subsystem

    def get(self, name: str) -> Subsystem | None:
        return self._subsystems.get(name)

    def names(self) -> list[str]:
        return list(self._subsystems)

    def __iter__(self) -> Iterator[Subsystem]:
        return iter(list(self._subsystems.values()))


async def guarded(call: Callable[[], Awaitable[dict[str, Any]]], seconds: float) -> dict[str, Any]:
    """A subsystem call bounded in time; a failure becomes ``{error}`` instead of a 500."""
    try:
        return await asyncio.wait_for(call(), seconds)
    except TimeoutError:
        return {"error": f"timed out after {seconds:g}s"}
    except Exception as exc:  # one subsystem failing must not hide the others
        return {"error": f"{type(exc).__name__}: {exc}"}


async def guarded_health(subsystem: Subsystem, seconds: float) -> ComponentHealth:
    try:
        return await asyncio.wait_for(subsystem.health(), seconds)
    except TimeoutError:
        return ComponentHealth("unhealthy", (f"{subsystem.name}: health check timed out after {seconds:g}s",))
    except Exception as exc:  # a crashing check is an unhealthy component, not a 500
        return ComponentHealth("unhealthy", (f"{subsystem.name}: health check failed: {type(exc).__name__}",))


def timings(samples_ms: list[float]) -> dict[str, float | int]:
    ordered = sorted(samples_ms)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "iterations": len(ordered),
        "min_ms": round(ordered[0], 4),
        "avg_ms": round(statistics.fmean(ordered), 4),
        "p95_ms": round(p95, 4),
        "max_ms": round(ordered[-1], 4),
    }


# --- database ------------------------------------------------------------------------------------------------


def _index_inventory(connection: Connection) -> dict[str, Any]:
    """Every index ``Base.metadata`` declares, looked up in the live schema by name or by column list."""
    inspector = inspect(connection)
    tables = set(inspector.get_table_names())
    expected: list[dict[str, Any]] = []
    missing: list[str] = []
    for table in Base.metadata.sorted_tables:
        if not table.indexes:
            continue
        present_names: set[str] = set()
        present_columns: set[tuple[str, ...]] = set()
        if table.name in tables:
            for reflected in inspector.get_indexes(table.name):
                if reflected.get("name"):
                    present_names.add(str(reflected["name"]).lower())
                present_columns.add(tuple(str(c) for c in reflected.get("column_names", []) if c))
            for constraint in inspector.get_unique_constraints(table.name):
                if constraint.get("name"):
                    present_names.add(str(constraint["name"]).lower())
                present_columns.add(tuple(str(c) for c in constraint.get("column_names", [])))
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            columns = tuple(column.name for column in index.columns)
            name = str(index.name)
            found = name.lower() in present_names or (bool(columns) and columns in present_columns)
            expected.append({"table": table.name, "name": name, "columns": list(columns), "present": found})
            if not found:
                missing.append(name)
    return {"expected": len(expected), "present": len(expected) - len(missing), "missing": missing, "indexes": expected}


class DatabaseSubsystem:
    name = "database"

    def __init__(self, state: Services) -> None:
        self.state = state
        self.monitoring: Monitoring | None = state.monitoring
        self._inventory: dict[str, Any] | None = None

    @property
    def dialect(self) -> str:
        return self.state.engine.dialect.name

    def pool(self) -> dict[str, int] | None:
        return pool_status(self.state.engine.pool)

    def headline(self) -> dict[str, Figure]:
        pool = self.pool()
        queries = self.monitoring.queries if self.monitoring is not None else None
        return {
            "driver": self.dialect,
            "statements": queries.statements_total if queries is not None else None,
            "slow_queries": len(queries.recent_slow) if queries is not None else None,
            "pool_checked_out": pool["checked_out"] if pool else None,
        }

    async def inventory(self, refresh: bool = False) -> dict[str, Any]:
        if self._inventory is None or refresh:
            with untracked():  # a few statements per table, on purpose: not an n+1 to report
                async with self.state.engine.connect() as connection:
                    self._inventory = await connection.run_sync(_index_inventory)
        return self._inventory

    async def dashboard(self) -> dict[str, Any]:
        queries = self.monitoring.queries if self.monitoring is not None else None
        section: dict[str, Any] = {
            "driver": self.dialect,
            "pool": self.pool(),
            "pool_description": self.state.engine.pool.status(),
            "indexes": await self.inventory(refresh=True),
        }
        if queries is not None:
            section["query_stats"] = {
                "statements_total": queries.statements_total,
                "slow_threshold_ms": queries.slow_ms,
                "n_plus_one_threshold": queries.n_plus_one_threshold,
            }
            section["slow_queries"] = [
                {"statement": q.statement, "duration_ms": round(q.duration_ms, 3), "operation": q.operation, "at": q.at}
                for q in list(queries.recent_slow)[-10:]
            ]
            section["n_plus_one"] = list(queries.recent_n_plus_one)[-10:]
        return section

    async def _ping_ms(self) -> float:
        started = time.perf_counter()
        async with self.state.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        return (time.perf_counter() - started) * 1000

    async def health(self) -> ComponentHealth:
        try:
            ping_ms = await self._ping_ms()
        except (SQLAlchemyError, OSError) as exc:
            return ComponentHealth("unhealthy", (f"database unreachable: {type(exc).__name__}",))
        reasons: list[str] = []
        status: Status = "healthy"
        if ping_ms > DB_PING_DEGRADED_MS:
            status = "degraded"
            reasons.append(f"database round trip {ping_ms:.1f} ms > {DB_PING_DEGRADED_MS:g} ms")
        pool = self.pool()
        if pool is not None:
            capacity = max(self.state.settings.db_pool_max, pool["size"], 1)
            if pool["checked_out"] / capacity >= POOL_BUSY_DEGRADED:
                status = "degraded"
                reasons.append(f"connection pool {pool['checked_out']}/{capacity} in use")
        inventory = self._inventory
        if inventory is not None and inventory["missing"]:
            status = "degraded"
            reasons.append(f"missing indexes: {', '.join(inventory['missing'])}")
        return ComponentHealth(status, tuple(reasons), {"response_time_ms": round(ping_ms, 3), "pool": pool})

    async def optimize(self) -> dict[str, Any]:
        done: dict[str, Any] = {}
        async with self.state.sessionmaker() as session:
            purged = await purge_expired_revocations(session)
            await session.commit()
        done["jwt_blacklist_purged"] = purged
        engine = self.state.engine
        if self.dialect == "postgresql":
            # VACUUM cannot run inside a transaction block: an AUTOCOMMIT connection. Plain VACUUM takes no
            # exclusive lock (never VACUUM FULL here); the statement timeout bounds it.
            async with engine.connect() as connection:
                autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
                started = time.perf_counter()
                await autocommit.execute(text("VACUUM (ANALYZE)"))
                done["vacuum_analyze_ms"] = round((time.perf_counter() - started) * 1000, 3)
        elif self.dialect == "sqlite":
            async with engine.begin() as connection:
                started = time.perf_counter()
                await connection.execute(text("ANALYZE"))
                await connection.execute(text("PRAGMA optimize"))
                done["analyze_ms"] = round((time.perf_counter() - started) * 1000, 3)
            done["vacuum"] = "skipped: SQLite VACUUM rewrites the whole file under an exclusive lock"
        else:
            async with engine.begin() as connection:
                await connection.execute(text("ANALYZE"))
            done["analyze"] = True
        inventory = await self.inventory(refresh=True)
        done["missing_indexes"] = inventory["missing"]
        return done

    async def benchmark(self) -> dict[str, Any]:
        results: dict[str, Any] = {}
        queries = {
            "select_1": ("SELECT 1", 50),
            "count_rooms": ("SELECT count(*) FROM rooms", 20),
            "recent_tracks": ("SELECT id, room_id, vote_score FROM tracks ORDER BY created_at DESC LIMIT 20", 20),
        }
        async with self.state.engine.connect() as connection:
            for name, (statement, iterations) in queries.items():
                samples: list[float] = []
                for _ in range(iterations):
                    started = time.perf_counter()
                    await connection.execute(text(statement))
                    samples.append((time.perf_counter() - started) * 1000)
                results[name] = timings(samples)
        return {"driver": self.dialect, "queries": results}


# --- websocket -----------------------------------------------------------------------------------------------

BENCH_TRACK_ID = "8a1f6a52-9ac4-4c1e-a0f6-61d2f0f6a001"
BENCH_EVENT: dict[str, Any] = {
    "track": {
        "id": BENCH_TRACK_ID,
        "title": "Benchmark Track",
        "artist": "Spotik",
        "duration_seconds": 215,
        "vote_score": 3,
        "uploader": {"id": "3f0d8f47-2d1f-44f3-9f38-0c5f7b0ea002", "username": "bench"},
    },
    "started_at": "2026-01-24T20:28:47.123456Z",
    "current_playback_position": 0,
    "is_playing": True,
}


class WebSocketSubsystem:
    name = "websocket"
    ENCODE_ITERATIONS = 2000
    FANOUT_QUEUES = 200
    FANOUT_EVENTS = 20

    def __init__(self, state: Services) -> None:
        self.state = state

    def _stats(self) -> dict[str, Any] | None:
        realtime = self.state.realtime
        return realtime.registry.stats() if realtime is not None else None

    def headline(self) -> dict[str, Figure]:
        stats = self._stats()
        if stats is None:
            return {"connections": None}
        return {
            "connections": stats["connections"],
            "rooms": len(stats["rooms"]),
            "queued_messages": stats["queued_messages"],
            "dropped_messages": stats["dropped_messages"],
        }

    async def dashboard(self) -> dict[str, Any]:
        realtime = self.state.realtime
        if realtime is None:
            return {"enabled": False}
        status = realtime.status()
        return {"enabled": True, **status}

    async def health(self) -> ComponentHealth:
        realtime = self.state.realtime
        if realtime is None:
            return ComponentHealth("unhealthy", ("websocket gateway not started",))
        stats = realtime.registry.stats()
        reasons: list[str] = []
        status: Status = "healthy"
        if not realtime.accepting:
            status = "unhealthy"
            reasons.append("websocket gateway is not accepting connections")
        if stats["connections"] >= stats["max_connections"]:
            status = worst([status, "degraded"])
            reasons.append(f"websocket connections at the limit ({stats['connections']})")
        # Process memory (sampled by the gateway's monitor) is reported once, by the memory subsystem.
        return ComponentHealth(status, tuple(reasons), {"connections": stats["connections"]})

    async def optimize(self) -> dict[str, Any]:
        realtime = self.state.realtime
        if realtime is None:
            return {"skipped": "websocket gateway not started"}
        sweep = await realtime.janitor.sweep()
        return {
            "stale_sweep": {
                "checked": sweep.checked,
                "closed": sweep.closed,
                "remaining": sweep.remaining,
                "ms": round(sweep.seconds * 1000, 3),
            }
        }

    async def benchmark(self) -> dict[str, Any]:
        started = time.perf_counter()
        item = None
        for _ in range(self.ENCODE_ITERATIONS):
            item = protocol.room_broadcast("playback_started", BENCH_TRACK_ID, BENCH_EVENT)
        encode_seconds = time.perf_counter() - started
        assert item is not None
        queues: list[asyncio.Queue[protocol.Outgoing]] = [
            asyncio.Queue(maxsize=self.FANOUT_EVENTS) for _ in range(self.FANOUT_QUEUES)
        ]
        started = time.perf_counter()
        for _ in range(self.FANOUT_EVENTS):
            frame = protocol.room_broadcast("track_voted", "room", BENCH_EVENT)
            for queue in queues:
                queue.put_nowait(frame)
        fanout_seconds = time.perf_counter() - started
        deliveries = self.FANOUT_EVENTS * self.FANOUT_QUEUES
        return {
            "encode": {
                "iterations": self.ENCODE_ITERATIONS,
                "frame_bytes": item.size,
                "total_ms": round(encode_seconds * 1000, 3),
                "per_message_us": round(encode_seconds / self.ENCODE_ITERATIONS * 1e6, 3),
                "messages_per_second": round(self.ENCODE_ITERATIONS / encode_seconds) if encode_seconds else None,
            },
            "fanout": {
                "events": self.FANOUT_EVENTS,
                "queues": self.FANOUT_QUEUES,
                "deliveries": deliveries,
                "total_ms": round(fanout_seconds * 1000, 3),
                "deliveries_per_second": round(deliveries / fanout_seconds) if fanout_seconds else None,
            },
        }


# --- memory --------------------------------------------------------------------------------------------------


class MemorySubsystem:
    name = "memory"
    ALLOCATIONS = 100_000

    def __init__(self, state: Services) -> None:
        self.state = state
        self.monitoring: Monitoring | None = state.monitoring
        self.process = psutil.Process()
        settings = state.settings
        self.warning_mb = settings.memory_warning_mb
        self.critical_mb = settings.memory_critical_mb

    def rss_mb(self) -> float:
        return round(self.process.memory_info().rss / MB, 2)

    def level(self, rss_mb: float) -> str:
        """The same levels as the process memory monitor (``spotik.realtime.memory``), which logs their changes."""
        if self.state.realtime is not None:
            return self.state.realtime.memory.level_for(int(rss_mb * MB)).value
        if rss_mb >= self.critical_mb:
            return "critical"
        if rss_mb >= self.warning_mb:
            return "warning"
        return "ok"

    def headline(self) -> dict[str, Figure]:
        rss = self.rss_mb()
        return {"rss_mb": rss, "level": self.level(rss), "gc_gen0": gc.get_count()[0]}

    async def dashboard(self) -> dict[str, Any]:
        rss = self.rss_mb()
        section: dict[str, Any] = {
            "rss_mb": rss,
            "level": self.level(rss),
            "warning_mb": self.warning_mb,
            "critical_mb": self.critical_mb,
            "gc_counts": list(gc.get_count()),
            "gc_stats": gc.get_stats(),
        }
        if self.state.realtime is not None:  # the periodic sampler: level changes and the GC policy's record
            section["monitor"] = self.state.realtime.memory.status()
        if self.monitoring is not None:
            section["request_sampling"] = self.monitoring.memory.summary()
        return section

    async def health(self) -> ComponentHealth:
        rss = self.rss_mb()
        level = self.level(rss)
        details = {"rss_mb": rss, "level": level}
        if level == "critical":
            return ComponentHealth("unhealthy", (f"memory {rss:.0f} MB >= critical {self.critical_mb:g} MB",), details)
        if level == "warning":
            return ComponentHealth("degraded", (f"memory {rss:.0f} MB >= warning {self.warning_mb:g} MB",), details)
        return ComponentHealth("healthy", (), details)

    async def optimize(self) -> dict[str, Any]:
        before = self.process.memory_info().rss
        started = time.perf_counter()
        collected = gc.collect()
        pause_ms = (time.perf_counter() - started) * 1000
        after = self.process.memory_info().rss
        return {
            "gc_collected": collected,
            "gc_pause_ms": round(pause_ms, 3),
            "rss_before_mb": round(before / MB, 2),
            "rss_after_mb": round(after / MB, 2),
        }

    async def benchmark(self) -> dict[str, Any]:
        started = time.perf_counter()
        objects = [{"id": i, "name": "x"} for i in range(self.ALLOCATIONS)]
        allocate = time.perf_counter() - started
        del objects
        started = time.perf_counter()
        collected = gc.collect(0)
        young = time.perf_counter() - started
        return {
            "allocations": self.ALLOCATIONS,
            "allocate_ms": round(allocate * 1000, 3),
            "per_allocation_ns": round(allocate / self.ALLOCATIONS * 1e9, 1),
            "gc_young_ms": round(young * 1000, 3),
            "gc_young_collected": collected,
            "pid": os.getpid(),
        }


def default_subsystems(services: Services) -> list[Subsystem]:
    return [DatabaseSubsystem(services), WebSocketSubsystem(services), MemorySubsystem(services)]
