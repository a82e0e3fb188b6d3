"""Builds the app state on start-up and tears it down on shutdown (after in-flight requests have finished)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import structlog
from fastapi import FastAPI

from spotik.auth.tokens import TokenService
from spotik.db.engine import create_engine, create_sessionmaker
from spotik.playback.scheduler import PlaybackScheduler
from spotik.realtime.gateway import Realtime
from spotik.settings import Settings
from spotik.state import AppState

log = structlog.get_logger("spotik.lifespan")


Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[dict[str, AppState]]]


def build_lifespan(settings: Settings) -> Lifespan:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[dict[str, AppState]]:
        for directory in (settings.audio_root, settings.public_root):
            directory.mkdir(parents=True, exist_ok=True)
        engine = create_engine(settings)
        state = AppState(
            settings=settings,
            engine=engine,
            sessionmaker=create_sessionmaker(engine),
            tokens=TokenService(
                secret=settings.jwt_secret,
                ttl_minutes=settings.jwt_ttl,
                refresh_ttl_minutes=settings.jwt_refresh_ttl,
                leeway_seconds=settings.jwt_leeway,
                blacklist_enabled=settings.jwt_blacklist_enabled,
                blacklist_grace_seconds=settings.jwt_blacklist_grace_period,
            ),
        )
        state.realtime = Realtime(
            settings=settings, sessionmaker=state.sessionmaker, tokens=state.tokens, events=state.events
        )
        await state.realtime.start()
        # Started last and stopped first: its first pass catches up rooms whose track ended while we were down.
        state.playback_scheduler = PlaybackScheduler(state.sessionmaker, state.events)
        await state.playback_scheduler.start()
        log.info("started", env=settings.env.value, database=engine.dialect.name)
        try:
            yield {"spotik": state}
        finally:
            await state.playback_scheduler.stop()
            await state.realtime.stop()  # flush queues, close every socket with 1001
            await engine.dispose()
            log.info("stopped", detail="connection pool closed")

    return lifespan
