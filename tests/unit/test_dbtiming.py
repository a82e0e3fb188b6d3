"""Statement timing on a real SQLite engine: per-context counters, slow queries, N+1 shapes, EXPLAIN."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from structlog.testing import capture_logs

from spotik.performance.dbtiming import (
    QueryMonitor,
    current_request_queries,
    is_explainable,
    normalise_sql,
    operation_of,
    track_request,
)
from spotik.performance.metrics import Metrics


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'timing.sqlite3'}")
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE songs (id INTEGER PRIMARY KEY, title TEXT, room INTEGER)"))
        await connection.execute(text("CREATE INDEX songs_room ON songs (room)"))
        await connection.execute(
            text("INSERT INTO songs (title, room) VALUES (:t, :r)"), [{"t": f"s{n}", "r": n % 3} for n in range(9)]
        )
    yield engine
    await engine.dispose()


def monitor(slow_ms: float = 60_000, threshold: int = 5, explain: bool = False) -> QueryMonitor:
    metrics = Metrics(environment="testing", version="0", pool=lambda: None, process=psutil.Process())
    return QueryMonitor(slow_ms=slow_ms, n_plus_one_threshold=threshold, explain=explain, metrics=metrics)


async def run(engine: AsyncEngine, statement: str, **params: object) -> None:
    async with engine.connect() as connection:
        await connection.execute(text(statement), params)


def test_normalise_sql_keeps_the_shape_only() -> None:
    assert normalise_sql("SELECT *\n  FROM songs\tWHERE id = 42 AND title = 'it''s'") == (
        "SELECT * FROM songs WHERE id = ? AND title = ?"
    )
    assert normalise_sql("SELECT * FROM t WHERE id IN (?, ?, ?)") == normalise_sql("SELECT * FROM t WHERE id IN (?)")
    assert normalise_sql("SELECT * FROM t WHERE a = $1 AND b IN ($2, $3)") == "SELECT * FROM t WHERE a = ? AND b IN (?)"
    assert normalise_sql("SELECT t1.c2 FROM t1 LIMIT 10") == "SELECT t1.c2 FROM t1 LIMIT ?"


def test_operation_labels_are_bounded() -> None:
    assert [operation_of(s) for s in ("select 1", " INSERT INTO t", "UPDATE t", "delete from t", "WITH x AS (…)")] == [
        "select",
        "insert",
        "update",
        "delete",
        "with",
    ]
    assert operation_of("PRAGMA foo") == "other" and operation_of("") == "other"
    assert is_explainable("  select 1") and not is_explainable("UPDATE t SET a = 1")


async def test_statements_inside_a_tracked_request_are_counted(engine: AsyncEngine) -> None:
    queries = monitor()
    queries.attach(engine)
    await run(engine, "SELECT 1")  # outside a request: only the histogram sees it
    with track_request() as stats:
        assert current_request_queries() is stats
        for room in range(3):
            await run(engine, "SELECT title FROM songs WHERE room = :room", room=room)
    assert current_request_queries() is None
    assert stats.count == 3 and stats.total_seconds > 0
    assert queries.statements_total == 4
    assert stats.shapes == {"SELECT title FROM songs WHERE room = ?": 3}


async def test_concurrent_requests_keep_separate_counts(engine: AsyncEngine) -> None:
    queries = monitor()
    queries.attach(engine)

    async def request(statements: int) -> int:
        with track_request() as stats:
            for _ in range(statements):
                await run(engine, "SELECT count(*) FROM songs")
                await asyncio.sleep(0)  # interleave with the other request
        return stats.count

    assert list(await asyncio.gather(request(2), request(5), request(3))) == [2, 5, 3]


async def test_repeated_shapes_are_reported_as_n_plus_one(engine: AsyncEngine) -> None:
    queries = monitor(threshold=3)
    queries.attach(engine)
    in_list = text("SELECT title FROM songs WHERE id IN :ids").bindparams(bindparam("ids", expanding=True))
    with track_request() as stats:
        async with engine.connect() as connection:
            for size in (1, 2, 3):  # IN lists of different lengths: one shape
                await connection.execute(in_list, {"ids": list(range(size))})
            await connection.execute(text("SELECT count(*) FROM songs"))
    with capture_logs() as logs:
        repeated = queries.finish_request(stats, route="/r/{id}", method="GET")
    assert repeated == [("SELECT title FROM songs WHERE id IN (?)", 3)]
    (warning,) = [entry for entry in logs if entry["event"] == "possible n+1 query"]
    assert warning["count"] == 3 and warning["route"] == "/r/{id}"


async def test_slow_statements_are_logged_and_counted(engine: AsyncEngine) -> None:
    queries = monitor(slow_ms=0.001)
    queries.attach(engine)
    with capture_logs() as logs:
        await run(engine, "SELECT title FROM songs WHERE room = :room", room=1)
    (entry,) = [e for e in logs if e["event"] == "slow query"]
    assert entry["statement"] == "SELECT title FROM songs WHERE room = ?" and entry["operation"] == "select"
    assert queries.recent_slow[-1].statement == entry["statement"]
    assert queries.metrics is not None
    assert queries.metrics.registry.get_sample_value("spotik_db_slow_queries_total", {"operation": "select"}) == 1


async def test_fast_statements_are_not_slow(engine: AsyncEngine) -> None:
    queries = monitor(slow_ms=60_000)
    queries.attach(engine)
    with capture_logs() as logs:
        await run(engine, "SELECT 1")
    assert not logs and not queries.recent_slow


async def test_explain_returns_the_sqlite_query_plan(engine: AsyncEngine) -> None:
    queries = monitor()
    queries.attach(engine)
    indexed = await queries.explain("SELECT title FROM songs WHERE room = ?", (1,))
    scan = await queries.explain("SELECT title FROM songs WHERE title = ?", ("s1",))
    assert indexed == ["SEARCH songs USING INDEX songs_room (room=?)"]
    assert scan == ["SCAN songs"]
    with pytest.raises(ValueError, match="only SELECT"):
        await queries.explain("DELETE FROM songs")


async def test_slow_selects_are_explained_once_in_the_background(engine: AsyncEngine) -> None:
    queries = monitor(slow_ms=0.001, explain=True)
    queries.attach(engine)
    await queries.start()
    try:
        with capture_logs() as logs:
            for room in range(3):  # the same shape three times: one plan
                await run(engine, "SELECT title FROM songs WHERE room = :room", room=room)
            await run(engine, "UPDATE songs SET title = title WHERE room = :room", room=1)
            await queries.drain()
    finally:
        await queries.stop()
    plans = [entry for entry in logs if entry["event"] == "slow query plan"]
    assert [(p["statement"], p["plan"]) for p in plans] == [
        ("SELECT title FROM songs WHERE room = ?", ["SEARCH songs USING INDEX songs_room (room=?)"])
    ]
    # the plan's own EXPLAIN statement was neither counted nor logged as slow
    assert not [e for e in logs if e["event"] == "slow query" and e["statement"].startswith("EXPLAIN")]
    assert queries.statements_total == 4


async def test_detach_stops_counting(engine: AsyncEngine) -> None:
    queries = monitor()
    queries.attach(engine)
    queries.detach()
    with track_request() as stats:
        await run(engine, "SELECT 1")
    assert stats.count == 0 and queries.engine is None
