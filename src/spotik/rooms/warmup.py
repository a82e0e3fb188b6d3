"""Start-up warm-up of the cache (docs/cache.md#warm-up): the state and the queue of the active rooms — playing, or
changed within ``cache_warmup_window`` seconds, most recently changed first, at most ``cache_warmup_rooms`` — read
through the cache once, in a background task bounded by ``cache_warmup_seconds``. A failure or the time running out
is logged and never holds up start-up (a cold entry is only a miss)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from datetime import timedelta

import structlog
from sqlalchemy import or_, select

from spotik.db.base import utcnow
from spotik.errors import NotFound
from spotik.reads import Reads
from spotik.rooms.models import Room
from spotik.rooms.service import room_state
from spotik.settings import Settings
from spotik.tracks.service import shared_queue

log = structlog.get_logger("spotik.cache.warmup")


class CacheWarmer:
    def __init__(self, reads: Reads, settings: Settings) -> None:
        self.reads = reads
        self.settings = settings
        self.warmed: list[uuid.UUID] = []
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.reads.cache.enabled and self.settings.cache_warmup_rooms > 0:
            self.task = asyncio.get_running_loop().create_task(self._run(), name="spotik-cache-warmup")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def active_rooms(self) -> list[uuid.UUID]:
        since = utcnow() - timedelta(seconds=self.settings.cache_warmup_window)
        statement = (
            select(Room.id)
            .where(or_(Room.is_playing.is_(True), Room.updated_at >= since))
            .order_by(Room.is_playing.desc(), Room.updated_at.desc())
            .limit(self.settings.cache_warmup_rooms)
        )
        async with self.reads.sessionmaker() as session:
            return list((await session.scalars(statement)).all())

    async def _run(self) -> None:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.settings.cache_warmup_seconds):
                for room_id in await self.active_rooms():
                    async with self.reads.sessionmaker() as session:
                        try:
                            await room_state(session, self.reads, self.settings, room_id)
                        except NotFound:  # deleted meanwhile
                            continue
                        await shared_queue(session, self.reads, room_id, self.settings.public_root)
                    self.warmed.append(room_id)
        except TimeoutError:
            log.warning("cache warm-up cut short", rooms=len(self.warmed), seconds=self.settings.cache_warmup_seconds)
            return
        except Exception:
            log.exception("cache warm-up failed", rooms=len(self.warmed))
            return
        log.info("cache warmed up", rooms=len(self.warmed), ms=round((time.perf_counter() - started) * 1000, 1))
