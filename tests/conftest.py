"""Shared fixtures: the same suite runs on SQLite and on PostgreSQL (a fresh database created for the run).

PostgreSQL and Redis are the real servers on 127.0.0.1. Outside CI an unreachable server skips its tests with a loud
reason; with ``CI=true`` it fails the run instead.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx2
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from spotik.app import create_app
from spotik.db.migrate import migrate
from spotik.settings import Settings
from spotik.state import AppState, SpotikApp
from tests.openapi_contract import contract_hooks

# The genres the first migration seeds.
SEEDED_GENRES: tuple[tuple[str, str, str], ...] = importlib.import_module(
    "spotik.db.migrations.versions.2024_01_15_laravel_schema"
).GENRES
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_HOST = os.environ.get("SPOTIK_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("SPOTIK_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("SPOTIK_TEST_PG_USER", "postgres")
PG_ADMIN_DB = os.environ.get("SPOTIK_TEST_PG_ADMIN_DB", "test")
TEST_JWT_SECRET = "test-secret-long-enough-for-hs256-and-hs512-0123456789abcdefghijklmnop"
ALL_TABLES = (
    "playlist_tracks",
    "playlists",
    "track_votes",
    "room_participants",
    "tracks",
    "rooms",
    "jwt_blacklist",
    "genres",
    "users",
)


def unavailable(what: str, error: BaseException) -> None:
    message = f"{what} is not reachable ({type(error).__name__}: {error})"
    if IN_CI:
        pytest.fail(f"CI=true and {message}: the run fails instead of skipping", pytrace=False)
    pytest.skip(f"SKIPPED LOUDLY: {message}")


def pg_url(database: str, driver: str = "postgresql") -> str:
    return f"{driver}://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


async def _pg_admin(statement: str) -> None:
    connection = await asyncpg.connect(pg_url(PG_ADMIN_DB), timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def create_pg_database(prefix: str = "spotik_test") -> str:
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    return name


def drop_pg_database(name: str) -> None:
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def make_settings(database_url: str, storage: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "env": "testing",
        "database_url": database_url,
        "storage_path": storage,
        "audio_storage_path": None,
        "public_storage_path": None,
        "jwt_secret": TEST_JWT_SECRET,
        "bcrypt_cost": 4,
        "auto_migrate": False,
        "redis_url": None,
        "cors_origins": ["loopback", "http://client.example"],
        "rate_limiting_enabled": False,
        # The test process grows past the production thresholds (200/400 MB) after a few hundred tests: the level
        # would depend on the whole test run, and an app living past one monitor interval would run a full
        # collection. Tests of the levels set their own thresholds.
        "memory_warning_mb": 64 * 1024.0,
        "memory_critical_mb": 128 * 1024.0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def postgres_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database created for this run and migrated once; dropped at the end."""
    try:
        name = create_pg_database()
    except (OSError, asyncpg.PostgresError) as exc:
        unavailable(f"PostgreSQL at {PG_HOST}:{PG_PORT}", exc)
    try:
        migrate(make_settings(pg_url(name), tmp_path_factory.mktemp("pg-migrate")))
        yield name
    finally:
        drop_pg_database(name)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for every test (migrating is the slow part)."""
    folder = tmp_path_factory.mktemp("sqlite-template")
    path = folder / "template.sqlite3"
    migrate(make_settings(f"sqlite:///{path}", folder))
    return path


async def reset_postgres(name: str) -> None:
    engine = create_async_engine(pg_url(name, "postgresql+asyncpg"))
    try:
        async with engine.begin() as connection:
            await connection.execute(text(f"TRUNCATE {', '.join(ALL_TABLES)} RESTART IDENTITY CASCADE"))
            for genre_name, description, color in SEEDED_GENRES:
                await connection.execute(
                    text(
                        "INSERT INTO genres (name, description, color, created_at, updated_at) "
                        "VALUES (:n, :d, :c, now(), now())"
                    ),
                    {"n": genre_name, "d": description, "c": color},
                )
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every test that uses the database runs twice: on a SQLite file and on PostgreSQL."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        target = tmp_path / "spotik.sqlite3"
        shutil.copyfile(template, target)
        return f"sqlite:///{target}"
    name: str = request.getfixturevalue("postgres_database")
    asyncio.run(reset_postgres(name))
    return pg_url(name)


@pytest.fixture
def settings(request: pytest.FixtureRequest, database_url: str, tmp_path: Path) -> Settings:
    """The test settings; a test marked ``cache_off`` runs with the cache disabled."""
    overrides = {"cache_enabled": False} if request.node.get_closest_marker("cache_off") else {}
    return make_settings(database_url, tmp_path / "storage", **overrides)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[SpotikApp]:
    """The app, started (its lifespan runs around the test)."""
    built = create_app(settings)
    async with LifespanManager(built):
        yield built


@pytest.fixture
def state(app: SpotikApp) -> AppState:
    """The running app's state (engine, event bus, settings …), as its dependencies see it."""
    return app.services


@pytest.fixture
async def client(app: SpotikApp) -> AsyncIterator[httpx2.AsyncClient]:
    """A client of the app; every response it receives is checked against the app's /openapi.json."""
    transport = httpx2.ASGITransport(app=app)
    hooks = contract_hooks(app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://testserver", event_hooks=hooks) as http:
        yield http
