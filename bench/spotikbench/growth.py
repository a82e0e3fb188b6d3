"""Section 3 of ``spotik bench``, the queue part: how the queue query (``spotik.tracks.repository.queue_tracks``, the
one every queue read runs) grows with the tracks table, on SQLite and on PostgreSQL, in this process against a
database migrated by ``spotik migrate`` and filled with plain inserts (uploading 100,000 files is not the subject).

Two series, the table growing to each size N in turn:

* a room of 10 tracks while another room holds N tracks: with the indexes its time should stay flat (index-bound);
  then again with every index that leads with ``room_id`` dropped (the plan turns into a scan), and put back;
* the room of N tracks itself: time and the memory its rows take in this process (tracemalloc's peak while they
  are loaded), which should grow linearly.

The plans (SQLite's ``EXPLAIN QUERY PLAN``, PostgreSQL's ``EXPLAIN ANALYZE``) are kept for the report."""

from __future__ import annotations

import asyncio
import statistics
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Index, event, insert, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from spotikbench.tools import say

FIXED_ROOM_TRACKS = 10
CHUNK = 5000
FLAT_TARGET = 1.5  # "flat": the 10-track room's time at the largest size within 1.5x of its time at 1,000


def room_indexes() -> list[Index]:
    """The tracks indexes that lead with ``room_id`` (the ones the queue query can use)."""
    from spotik.tracks.models import Track

    return [
        index
        for index in Track.__table__.indexes  # type: ignore[attr-defined]  # a Table, typed as FromClause
        if index.expressions and getattr(index.expressions[0], "name", None) == "room_id"
    ]


async def fill(session: AsyncSession, room: uuid.UUID, user: uuid.UUID, start: int, stop: int) -> None:
    from spotik.db.base import uuid7
    from spotik.tracks.models import Track

    for first in range(start, stop, CHUNK):
        rows = [
            {
                "id": uuid7(),
                "room_id": room,
                "uploader_id": user,
                "filename": f"{room.hex}-{i}.wav",
                "original_name": f"track {i}.wav",
                "file_path": f"tracks/{room.hex}-{i}.wav",
                "duration_seconds": 180,
                "file_size_bytes": 60_044,
                "mime_type": "audio/wav",
                "vote_score": i % 4,
            }
            for i in range(first, min(stop, first + CHUNK))
        ]
        await session.execute(insert(Track), rows)
    await session.commit()


async def timed(call: Callable[[], Awaitable[Any]], repeats: int) -> dict[str, float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return {
        "median_ms": round(statistics.median(times), 3),
        "min_ms": round(min(times), 3),
        "max_ms": round(max(times), 3),
    }


class Capture:
    """The last statement the engine sent (to EXPLAIN it with the same parameters)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.statement: str = ""
        self.parameters: Any = None
        event.listen(engine.sync_engine, "before_cursor_execute", self.record)

    def record(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        self.statement, self.parameters = statement, parameters


async def explain(engine: AsyncEngine, capture: Capture, postgres: bool) -> str:
    statement, parameters = capture.statement, capture.parameters
    prefix = "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) " if postgres else "EXPLAIN QUERY PLAN "
    async with engine.connect() as connection:
        rows = (await connection.exec_driver_sql(prefix + statement, parameters)).all()
    return "\n".join(str(row[0]) if postgres else str(row[-1]) for row in rows)


async def measure_database(database_url: str, sizes: list[int], repeats: int, label: str) -> dict[str, Any]:
    from spotik.auth.models import User
    from spotik.db.engine import create_engine, create_sessionmaker
    from spotik.rooms.models import Room
    from spotik.settings import Settings
    from spotik.tracks.repository import queue_tracks

    settings = Settings(database_url=database_url, storage_path=Path("/nonexistent"), env="testing")
    engine = create_engine(settings)
    sessions: async_sessionmaker[AsyncSession] = create_sessionmaker(engine)
    postgres = not settings.is_sqlite
    capture = Capture(engine)
    result: dict[str, Any] = {"fixed": [], "own": []}
    try:
        async with sessions() as session:
            user = (
                await session.execute(
                    insert(User)
                    .values(username="growth", email="growth@bench.example.com", password_hash="-")  # noqa: S106 - no login
                    .returning(User.id)
                )
            ).scalar_one()
            rooms = []
            for name in ("fixed", "big"):
                room = await session.execute(insert(Room).values(name=name, administrator_id=user).returning(Room.id))
                rooms.append(room.scalar_one())
            await session.commit()
            fixed, big = rooms
            await fill(session, fixed, user, 0, FIXED_ROOM_TRACKS)

        async def queue(room: uuid.UUID) -> int:
            async with sessions() as session:
                return len(await queue_tracks(session, room))

        filled = 0
        for size in sizes:
            async with sessions() as session:
                await fill(session, big, user, filled, size)
                filled = size
            if postgres:  # the table as autovacuum leaves it, so that the worker does not run during the timing
                async with engine.connect() as connection:
                    autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
                    await autocommit.exec_driver_sql("VACUUM ANALYZE tracks")
            await queue(fixed)  # warm
            point: dict[str, Any] = {"tracks": size, "indexed": await timed(lambda: queue(fixed), repeats * 3)}
            point["plan_indexed"] = await explain(engine, capture, postgres)
            async with engine.begin() as connection:
                for index in room_indexes():
                    await connection.execute(text(f"DROP INDEX {index.name}"))
            await engine.dispose()  # SQLite's connections would reuse a prepared EXPLAIN and its old plan
            point["no_indexes"] = await timed(lambda: queue(fixed), repeats)
            point["plan_no_indexes"] = await explain(engine, capture, postgres)
            async with engine.begin() as connection:
                for index in room_indexes():
                    await connection.run_sync(index.create)
            await engine.dispose()
            result["fixed"].append(point)
            own = {"tracks": size, **await timed(lambda: queue(big), repeats)}
            tracemalloc.start()
            await queue(big)
            own["peak_bytes"] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            result["own"].append(own)
            say(
                f"[growth] {label}, {size:,} tracks: 10-track room {point['indexed']['median_ms']:.2f} ms with "
                f"indexes, {point['no_indexes']['median_ms']:.2f} ms without; the {size:,}-track room "
                f"{own['median_ms']:.1f} ms, {own['peak_bytes'] / 2**20:.1f} MiB"
            )
    finally:
        await engine.dispose()
    points = result["fixed"]
    base = next((p for p in points if p["tracks"] >= 1000), points[0] if points else None)
    if base and len(points) > 1:
        result["flat_ratio"] = round(points[-1]["indexed"]["median_ms"] / base["indexed"]["median_ms"], 3)
        result["flat_from"] = base["tracks"]
    return result


def migrate_database(database_url: str, storage: Path) -> None:
    from spotik.db.migrate import migrate
    from spotik.settings import Settings

    migrate(Settings(database_url=database_url, storage_path=storage, env="testing"))


async def run(databases: dict[str, str], sizes: list[int], repeats: int, workdir: Path) -> dict[str, Any]:
    """``databases``: label → a database URL (empty databases, migrated here)."""
    results: dict[str, Any] = {"sizes": sizes, "flat_target": FLAT_TARGET}
    for label, url in databases.items():
        await asyncio.to_thread(migrate_database, url, workdir)
        results[label] = await measure_database(url, sizes, repeats, label)
    return results
