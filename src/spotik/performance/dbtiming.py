"""Database statement timing through SQLAlchemy engine events: per-request counters, slow queries, N+1, EXPLAIN.

``QueryMonitor.attach(engine)`` listens to ``before_cursor_execute`` / ``after_cursor_execute`` on
``engine.sync_engine``. Every statement feeds the query histogram; a statement run while a request is being
served (``track_request()``, entered by the timing middleware) is also added to that request's
:class:`RequestQueries`, which lives in a context variable (SQLAlchemy runs the events in a greenlet that
shares the request task's context).

Slow statements (> ``slow_ms``) are logged at once. When EXPLAIN is on (development by default), a slow
``SELECT`` is queued and explained by a background task on its own pooled connection — never on the request's
connection, never inline, never for anything but a SELECT — and each distinct statement at most once a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextvars import ContextVar, Token
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
import structlog
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from spotik.performance.metrics import Metrics

log = structlog.get_logger("spotik.performance.db")

MAX_LOGGED_STATEMENT = 2000
EXPLAIN_QUEUE_SIZE = 64
EXPLAIN_REPEAT_SECONDS = 60.0
EXPLAIN_STOP_TIMEOUT = 5.0
RECENT_EVENTS = 50
_START_KEY = "spotik_query_started"
OPERATIONS = frozenset({"select", "insert", "update", "delete", "with"})

_WHITESPACE = re.compile(r"\s+")
_STRING_LITERAL = re.compile(r"'(?:[^']|'')*'")
_NUMBER_LITERAL = re.compile(r"(?<![\w$.])-?\d+(?:\.\d+)?\b")
_PLACEHOLDER_LIST = re.compile(r"\(\s*(?:\?|\$\d+|%s|:\w+)(?:\s*,\s*(?:\?|\$\d+|%s|:\w+))*\s*\)")
_NUMBERED_PLACEHOLDER = re.compile(r"\$\d+")


def normalise_sql(statement: str) -> str:
    """The shape of a statement: literals and placeholders become ``?``, ``IN (?, ?, …)`` one ``(?)``, one space."""
    text = _STRING_LITERAL.sub("?", statement)
    text = _NUMBERED_PLACEHOLDER.sub("?", text)
    text = _NUMBER_LITERAL.sub("?", text)
    text = _PLACEHOLDER_LIST.sub("(?)", text)
    return _WHITESPACE.sub(" ", text).strip()


def operation_of(statement: str) -> str:
    """``select`` / ``insert`` / ``update`` / ``delete`` / ``with`` / ``other`` (a bounded metric label)."""
    head = statement.lstrip()[:7].split(None, 1)
    first = head[0].lower() if head else ""
    return first if first in OPERATIONS else "other"


def is_explainable(statement: str) -> bool:
    """Only plain reads are explained (EXPLAIN never runs, nor plans, a write)."""
    return statement.lstrip()[:6].lower() == "select"


@dataclass(slots=True)
class RequestQueries:
    """Statements one request ran (filled by the engine events, read by the timing middleware)."""

    count: int = 0
    total_seconds: float = 0.0
    shapes: Counter[str] | None = None  # normalised statement -> runs; created by the first statement

    @property
    def total_ms(self) -> float:
        return self.total_seconds * 1000

    def add(self, shape: str, seconds: float) -> None:
        self.count += 1
        self.total_seconds += seconds
        if self.shapes is None:
            self.shapes = Counter()
        self.shapes[shape] += 1

    def repeated(self, threshold: int) -> list[tuple[str, int]]:
        """Statement shapes run ``threshold`` times or more, most frequent first (suspected N+1)."""
        if self.shapes is None:
            return []
        return [(shape, n) for shape, n in self.shapes.most_common() if n >= threshold]


# The statements of the request being served in this context. The timing middleware sets it per request.
REQUEST_QUERIES: ContextVar[RequestQueries | None] = ContextVar("spotik_request_queries", default=None)
_current = REQUEST_QUERIES


def current_request_queries() -> RequestQueries | None:
    """The statements of the request being served in this context (``None`` outside a tracked request)."""
    return _current.get()


def begin_request() -> tuple[RequestQueries, Token[RequestQueries | None]]:
    """Start counting this context's statements (the timing middleware's per-request hot path)."""
    stats = RequestQueries()
    return stats, _current.set(stats)


def end_request(token: Token[RequestQueries | None]) -> None:
    _current.reset(token)


@contextlib.contextmanager
def track_request() -> Iterator[RequestQueries]:
    """Count the statements run inside the block."""
    stats, token = begin_request()
    try:
        yield stats
    finally:
        end_request(token)


@contextlib.contextmanager
def untracked() -> Iterator[None]:
    """Leave the block's statements out of the request's count (totals, timings and slow queries still see them): for
    deliberate loops over the schema, such as the index inventory, which are not the n+1 the detector is there for."""
    token = _current.set(None)
    try:
        yield
    finally:
        _current.reset(token)


@dataclass(frozen=True)
class SlowQuery:
    statement: str
    duration_ms: float
    operation: str
    at: float


class QueryMonitor:
    """Statement timing for one app: attach it to that app's engine."""

    def __init__(
        self,
        *,
        slow_ms: float,
        n_plus_one_threshold: int,
        explain: bool,
        metrics: Metrics | None = None,
    ) -> None:
        self.slow_ms = slow_ms
        self.n_plus_one_threshold = n_plus_one_threshold
        self.explain_enabled = explain
        self.metrics = metrics
        self.engine: AsyncEngine | None = None
        self.recent_slow: deque[SlowQuery] = deque(maxlen=RECENT_EVENTS)
        self.recent_plans: deque[dict[str, Any]] = deque(maxlen=RECENT_EVENTS)
        self.recent_n_plus_one: deque[dict[str, Any]] = deque(maxlen=RECENT_EVENTS)
        self.statements_total = 0
        self._normalise = lru_cache(maxsize=2048)(normalise_sql)
        self._explain_queue: asyncio.Queue[tuple[str, Any]] | None = None
        self._explained_at: dict[str, float] = {}
        self._worker: asyncio.Task[None] | None = None

    # -- engine events -------------------------------------------------------------------------------------------

    def attach(self, engine: AsyncEngine) -> None:
        """Listen to ``engine``'s statement events (idempotent; a new engine replaces the previous one)."""
        if self.engine is engine:
            return
        self.detach()
        event.listen(engine.sync_engine, "before_cursor_execute", self._before)
        event.listen(engine.sync_engine, "after_cursor_execute", self._after)
        self.engine = engine

    def detach(self) -> None:
        if self.engine is None:
            return
        sync_engine = self.engine.sync_engine
        for name, listener in (("before_cursor_execute", self._before), ("after_cursor_execute", self._after)):
            if event.contains(sync_engine, name, listener):
                event.remove(sync_engine, name, listener)
        self.engine = None

    def _before(self, conn: Any, _cursor: Any, _statement: str, _params: Any, _context: Any, _many: bool) -> None:
        conn.info.setdefault(_START_KEY, []).append(time.perf_counter())

    def _after(self, conn: Any, _cursor: Any, statement: str, params: Any, _context: Any, executemany: bool) -> None:
        starts: list[float] = conn.info.get(_START_KEY) or []
        if not starts:
            return
        elapsed = time.perf_counter() - starts.pop()
        if statement.startswith("EXPLAIN"):  # our own plans: neither counted nor explained again
            return
        self.statements_total += 1
        operation = operation_of(statement)
        if self.metrics is not None:
            self.metrics.db_query_duration.observe(elapsed, (operation,))
        stats = _current.get()
        if stats is not None:
            stats.add(self._normalise(statement), elapsed)
        elapsed_ms = elapsed * 1000
        if elapsed_ms > self.slow_ms:
            self._slow(statement, params, elapsed_ms, operation, executemany)

    def _slow(self, statement: str, params: Any, elapsed_ms: float, operation: str, executemany: bool) -> None:
        self.recent_slow.append(SlowQuery(statement[:MAX_LOGGED_STATEMENT], elapsed_ms, operation, time.time()))
        if self.metrics is not None:
            self.metrics.db_slow_queries.labels(operation).inc()
        log.warning(
            "slow query",
            duration_ms=round(elapsed_ms, 3),
            threshold_ms=self.slow_ms,
            operation=operation,
            statement=statement[:MAX_LOGGED_STATEMENT],
        )
        if self.explain_enabled and not executemany and is_explainable(statement):
            self._queue_explain(statement, params)

    def finish_request(self, stats: RequestQueries, *, route: str, method: str) -> list[tuple[str, int]]:
        """Close a request's books: the queries-per-request histogram and the N+1 check (logged, counted)."""
        if stats.count == 0:
            return []
        if self.metrics is not None:
            self.metrics.db_queries_per_request.observe(stats.count)
        if stats.count < self.n_plus_one_threshold:
            return []
        repeated = stats.repeated(self.n_plus_one_threshold)
        if repeated:
            if self.metrics is not None:
                self.metrics.db_n_plus_one.labels(route).inc()
            for shape, count in repeated:
                self.recent_n_plus_one.append(
                    {"route": route, "method": method, "statement": shape, "count": count, "at": time.time()}
                )
                log.warning(
                    "possible n+1 query",
                    route=route,
                    method=method,
                    count=count,
                    threshold=self.n_plus_one_threshold,
                    statement=shape[:MAX_LOGGED_STATEMENT],
                )
        return repeated

    # -- EXPLAIN, off the request path ---------------------------------------------------------------------------

    def _queue_explain(self, statement: str, params: Any) -> None:
        if self._explain_queue is None:  # not started (no running app): nothing can run the plan
            return
        shape = self._normalise(statement)
        now = time.monotonic()
        if now - self._explained_at.get(shape, -EXPLAIN_REPEAT_SECONDS) < EXPLAIN_REPEAT_SECONDS:
            return
        try:
            self._explain_queue.put_nowait((statement, params))
        except asyncio.QueueFull:
            return
        self._explained_at[shape] = now
        if len(self._explained_at) > 4 * EXPLAIN_QUEUE_SIZE:
            cutoff = now - EXPLAIN_REPEAT_SECONDS
            self._explained_at = {k: t for k, t in self._explained_at.items() if t >= cutoff}

    async def start(self) -> None:
        """Start the EXPLAIN worker (when EXPLAIN is on); idempotent."""
        if not self.explain_enabled or self._worker is not None:
            return
        self._explain_queue = asyncio.Queue(maxsize=EXPLAIN_QUEUE_SIZE)
        self._worker = asyncio.create_task(self._explain_worker(self._explain_queue), name="spotik-explain")

    async def stop(self) -> None:
        """Drop queued EXPLAINs, let the one running finish (a driver call cut short would outlive the loop)."""
        worker, queue = self._worker, self._explain_queue
        self._worker = self._explain_queue = None
        if worker is not None and queue is not None:
            while not queue.empty():
                queue.get_nowait()
                queue.task_done()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(queue.join(), EXPLAIN_STOP_TIMEOUT)
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self.detach()

    async def drain(self) -> None:
        """Wait until every queued EXPLAIN has been run and logged (tests; graceful shutdown)."""
        if self._explain_queue is not None:
            await self._explain_queue.join()

    async def _explain_worker(self, queue: asyncio.Queue[tuple[str, Any]]) -> None:
        while True:
            statement, params = await queue.get()
            try:
                plan = await self.explain(statement, params)
            except Exception as exc:  # a plan is diagnostics: failing to get one must never hurt the app
                log.warning("explain failed", statement=statement[:MAX_LOGGED_STATEMENT], error=repr(exc))
            else:
                entry = {"statement": statement[:MAX_LOGGED_STATEMENT], "plan": plan, "at": time.time()}
                self.recent_plans.append(entry)
                log.info("slow query plan", statement=entry["statement"], plan=plan)
            finally:
                queue.task_done()

    async def explain(self, statement: str, params: Any = None) -> list[str] | Any:
        """The plan of a SELECT on a connection of its own: SQLite's ``EXPLAIN QUERY PLAN`` detail lines, or
        PostgreSQL's ``EXPLAIN (FORMAT JSON)`` document."""
        if self.engine is None:
            raise RuntimeError("no engine attached")
        if not is_explainable(statement):
            raise ValueError("only SELECT statements are explained")
        dialect = self.engine.dialect.name
        arguments = tuple(params) if isinstance(params, list | tuple) else params
        async with self.engine.connect() as connection:
            if dialect == "sqlite":
                result = await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", arguments)
                return [str(row.detail) for row in result.all()]
            if dialect == "postgresql":
                result = await connection.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", arguments)
                document = result.scalar_one()
                return orjson.loads(document) if isinstance(document, str | bytes) else document
            result = await connection.exec_driver_sql(f"EXPLAIN {statement}", arguments)
            return [" ".join(str(value) for value in row) for row in result.all()]
