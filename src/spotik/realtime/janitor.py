"""Stale-connection cleanup: close and forget connections from which nothing has arrived for too long.

"Nothing has arrived" means no message *and* no keepalive pong (see ``Connection.last_activity``): a browser that
only listens answers the server's protocol pings, so it is never closed for being old or quiet (the Ruby rewrite
muted connections older than five minutes — docs/decisions.md#b30). Under uvicorn a peer that stops answering pings
is already dropped by uvicorn's own keepalive (``ws_ping_interval`` + ``ws_ping_timeout``); the sweep is the
backstop for servers without keepalive and for sockets that stay open without traffic in either direction.

A sweep is bounded in time: it checks connections in slices, yields to the loop between slices, and stops when its
time budget is spent; the next sweep resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from spotik.realtime.connection import Connection
from spotik.realtime.protocol import CloseCode
from spotik.realtime.registry import Registry

log = structlog.get_logger("spotik.realtime.janitor")


@dataclass(frozen=True, slots=True)
class SweepResult:
    checked: int
    closed: int
    remaining: int  # connections left for the next sweep because the budget was spent
    seconds: float


class Janitor:
    def __init__(
        self,
        registry: Registry,
        *,
        activity_timeout: float,
        interval: float,
        budget_seconds: float = 0.1,
        slice_size: int = 500,
    ) -> None:
        self.registry = registry
        self.activity_timeout = activity_timeout
        self.interval = interval
        self.budget_seconds = budget_seconds
        self.slice_size = slice_size
        self._pending: list[Connection] = []
        self.sweeps = 0
        self.closed_total = 0
        self.last: SweepResult | None = None

    def is_stale(self, connection: Connection, now: float) -> bool:
        return now - connection.last_activity() > self.activity_timeout

    async def sweep(self) -> SweepResult:
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        candidates = self._pending or list(self.registry)
        self._pending = []
        checked = closed = 0
        for index in range(0, len(candidates), self.slice_size):
            now = loop.time()
            for connection in candidates[index : index + self.slice_size]:
                checked += 1
                if connection.closing or connection.dead or self.registry.get(connection.id) is None:
                    continue
                if self.is_stale(connection, now):
                    closed += 1
                    log.info(
                        "websocket inactive: closing",
                        connection_id=connection.id,
                        user_id=connection.user_id,
                        idle_seconds=round(now - connection.last_activity(), 3),
                    )
                    connection.close(CloseCode.INACTIVE, "inactivity timeout")
            if time.perf_counter() - started > self.budget_seconds:
                self._pending = candidates[index + self.slice_size :]
                break
            await asyncio.sleep(0)  # one slice at a time
        self.sweeps += 1
        self.closed_total += closed
        self.last = SweepResult(checked, closed, len(self._pending), time.perf_counter() - started)
        return self.last

    async def run(self, stopping: asyncio.Event) -> None:
        await every(self.interval, stopping, self.sweep, name="sweep")


async def every(interval: float, stopping: asyncio.Event, job: Callable[[], Awaitable[object]], *, name: str) -> None:
    """Run ``job`` every ``interval`` seconds until ``stopping`` is set; a failing run is logged, never fatal."""
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), interval)
        if stopping.is_set():
            return
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("periodic job failed", job=name)
