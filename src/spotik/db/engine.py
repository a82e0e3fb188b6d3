"""Engine construction: per-environment pool on PostgreSQL (asyncpg), WAL and friends on SQLite."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from spotik.settings import Settings

SQLITE_BUSY_TIMEOUT_MS = 5000


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in (
        "journal_mode=WAL",
        "synchronous=NORMAL",
        "foreign_keys=ON",
        f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
    ):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def create_engine(settings: Settings) -> AsyncEngine:
    url = settings.sqlalchemy_url
    if url.startswith("sqlite"):
        engine = create_async_engine(
            url,
            connect_args={"timeout": 15},
            pool_size=min(settings.db_pool_max, 5),
            max_overflow=0,
            pool_timeout=settings.db_pool_timeout,
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        url,
        # DB_POOL_MAX ("max connections") is a hard ceiling: the whole pool, no overflow beyond it.
        pool_size=settings.db_pool_max,
        max_overflow=0,
        pool_timeout=settings.db_pool_timeout,
        pool_recycle=settings.db_pool_recycle,
        pool_pre_ping=True,
        connect_args={
            "timeout": settings.db_connect_timeout,
            "command_timeout": max(settings.db_statement_timeout_ms / 1000, 1),
            "server_settings": {
                "application_name": "spotik",
                "statement_timeout": str(settings.db_statement_timeout_ms),
                "timezone": "UTC",
            },
        },
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
