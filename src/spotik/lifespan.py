"""Starts the app-scoped objects on start-up and stops them on shutdown (after in-flight requests have finished).

They are built by ``create_app``; this only runs them, in dependency order, and stops them in reverse.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import structlog
from fastapi import FastAPI

from spotik.state import AppState

log = structlog.get_logger("spotik.lifespan")


Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def build_lifespan(state: AppState) -> Lifespan:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        settings = state.settings
        for directory in (settings.audio_root, settings.public_root):
            directory.mkdir(parents=True, exist_ok=True)
        await state.monitoring.start()
        await state.cache.start()  # before anything that reads through it; an unreachable Redis only degrades it
        state.warmer.start()  # in the background, bounded by CACHE_WARMUP_SECONDS
        await state.realtime.start()
        # Started last and stopped first: its first pass catches up rooms whose track ended while we were down.
        await state.playback_scheduler.start()
        log.info("started", env=settings.env.value, database=state.engine.dialect.name)
        try:
            yield
        finally:
            await state.playback_scheduler.stop()
            await state.realtime.stop()  # flush queues, close every socket with 1001
            await state.warmer.stop()
            await state.cache.stop()  # after everything that reads through it
            await state.monitoring.stop()
            await state.engine.dispose()
            log.info("stopped", detail="connection pool closed")

    return lifespan
