"""Server-driven track ends (docs/decisions.md#d5): one supervised background task per process.

Each pass runs **one** query over the playing rooms, ordered by when their current track ends (S + duration),
advances the rooms whose track has ended (``service.advance_if_due``, a compare-and-set, so when several
instances share the database each track end is advanced exactly once whoever gets there first), and then sleeps
until the next track end — but never longer than ``max_poll`` seconds, because changes made by *other* instances
wake nobody here. Changes made by this process wake it at once: it listens to the event bus for playback events.

Start-up catch-up is simply the first pass: a room whose track ended while no server was running is due, and is
advanced **once** — the next track starts *now*, from its beginning. We do not replay the time the server was down
(which would silently mark as played tracks that nobody heard); the listeners come back to the next track.

Failure handling: a room that fails (or whose compare-and-set keeps losing) is retried after a growing per-room
delay, so one bad room never stalls the others nor spins the loop; a failing pass (database down) backs off
exponentially up to ``BACKOFF_CAP`` seconds and retries for ever. On shutdown the loop is told to stop and woken;
a pass in progress finishes its current room (bounded by ``STOP_GRACE_SECONDS``, then cancelled) and the task is
awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Protocol

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from spotik.events import DomainEvent, EventHandler
from spotik.playback import clock, repository, service

log = structlog.get_logger("spotik.playback.scheduler")

MAX_POLL_SECONDS = 5.0  # how stale this process may be about changes made by other instances
BATCH_SIZE = 100  # due rooms advanced per pass; a full batch makes the next pass start at once
BACKOFF_BASE = 0.5  # seconds; first retry after a failure
# Longest wait between retries (database outage, a failing room): no longer than a poll, so auto-advance resumes
# within MAX_POLL_SECONDS of the database's return (a pass is one query; retrying it every 5 s costs nothing).
BACKOFF_CAP = MAX_POLL_SECONDS
STOP_GRACE_SECONDS = 5.0  # shutdown lets a pass in progress finish for this long before cancelling it


class SubscribableBus(Protocol):
    def subscribe(self, handler: EventHandler) -> Callable[[], None]: ...

    async def publish(self, event: DomainEvent) -> None: ...


class PlaybackScheduler:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        bus: SubscribableBus,
        *,
        max_poll: float = MAX_POLL_SECONDS,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._bus = bus
        self._max_poll = max_poll
        self._batch_size = batch_size
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        # room id → (consecutive failures, retry not before this Unix time)
        self._penalties: dict[uuid.UUID, tuple[int, float]] = {}
        self._passes = 0
        self._pass_done = asyncio.Condition()
        self._stopping = False

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def passes(self) -> int:
        """Completed passes (successful or not) since start."""
        return self._passes

    async def start(self) -> None:
        if self._task is not None:
            return
        self._stopping = False
        self._unsubscribe = self._bus.subscribe(self._on_event)
        self._task = asyncio.create_task(self._run(), name="spotik-playback-scheduler")
        self._task.add_done_callback(self._on_task_done)

    async def stop(self, *, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop the loop and wait for it. A sleeping loop exits at once; a pass in progress may finish its current
        room (up to ``grace`` seconds) and is cancelled after that. Cancelling in the middle of a query is the last
        resort: with aiosqlite it strands the connection's worker thread, which later calls into a closed loop."""
        self._stopping = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        task, self._task = self._task, None
        if task is None:
            return
        self._wake.set()
        try:
            async with asyncio.timeout(grace):
                await asyncio.shield(task)
        except TimeoutError:
            log.warning("playback scheduler did not stop in time; cancelling it", grace=grace)
        finally:
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def wake(self) -> None:
        """Run a pass now (instead of at the next track end or poll)."""
        self._wake.set()

    async def wait_passes(self, count: int = 1) -> None:
        """Wait until ``count`` more passes have completed, waking the loop so that it does not idle meanwhile.

        Waiting for two passes guarantees that one full pass started after the call.
        """
        target = self._passes + count
        async with self._pass_done:
            while self._passes < target:
                self.wake()
                await self._pass_done.wait()

    async def _on_event(self, event: DomainEvent) -> None:
        if event.type in service.PLAYBACK_EVENT_TYPES:
            self._wake.set()

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._stopping:
            return
        # _run() returns only when stopping and catches everything but cancellation: getting here is a bug.
        log.error("playback scheduler died; restarting", exc_info=task.exception())
        self._task = None
        self._task = asyncio.get_running_loop().create_task(self._run(), name="spotik-playback-scheduler")
        self._task.add_done_callback(self._on_task_done)

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            self._wake.clear()
            try:
                delay = await self.run_pass()
                failures = 0
            except Exception:
                failures += 1
                delay = clock.backoff(failures, base=BACKOFF_BASE, cap=BACKOFF_CAP)
                log.warning(
                    "playback scheduler pass failed; backing off", failures=failures, delay=delay, exc_info=True
                )
            async with self._pass_done:
                self._passes += 1
                self._pass_done.notify_all()
            if delay > 0 and not self._stopping:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()

    async def run_pass(self) -> float:
        """Advance every room whose track has ended; return how long to sleep before the next pass."""
        now = time.time()
        penalised = frozenset(room for room, (_, retry_at) in self._penalties.items() if retry_at > now)
        async with self._sessionmaker() as session:
            rows = await repository.earliest_track_ends(session, limit=self._batch_size, skip=penalised)
        next_check: float | None = min((self._penalties[room][1] for room in penalised), default=None)
        due_rooms: set[uuid.UUID] = set()
        for room_id, ends_at in rows:
            if self._stopping:
                return 0.0
            if ends_at > time.time():
                next_check = ends_at if next_check is None else min(next_check, ends_at)
                break
            due_rooms.add(room_id)
            try:
                async with self._sessionmaker() as session:
                    outcome = await service.advance_if_due(session, self._bus, room_id=room_id)
            except Exception:
                log.exception("advancing a room failed; will retry", room_id=str(room_id))
                next_check = self._penalise(room_id, next_check)
                continue
            if outcome.advanced:
                self._penalties.pop(room_id, None)
            elif outcome.due_at is not None:
                # The database's rounding of S + duration ran a hair early: wake at the exact end.
                due = outcome.due_at.timestamp()
                next_check = due if next_check is None else min(next_check, due)
            else:
                # Lost a race (another process advanced it, or the room changed): normally it is no longer due at
                # the next pass; if it keeps coming back, the growing per-room delay keeps the loop from spinning.
                next_check = self._penalise(room_id, next_check)
        # Penalties of rooms that are neither waiting out their delay nor still due are history.
        for room_id in list(self._penalties):
            if room_id not in penalised and room_id not in due_rooms:
                del self._penalties[room_id]
        if len(due_rooms) == self._batch_size:
            return 0.0  # a full batch of due rooms: there may be more behind it
        return clock.sleep_for(next_check, time.time(), self._max_poll)

    def _penalise(self, room_id: uuid.UUID, next_check: float | None) -> float:
        failures = self._penalties.get(room_id, (0, 0.0))[0] + 1
        retry_at = time.time() + clock.backoff(failures, base=BACKOFF_BASE / 10, cap=BACKOFF_CAP)
        self._penalties[room_id] = (failures, retry_at)
        return retry_at if next_check is None else min(next_check, retry_at)
