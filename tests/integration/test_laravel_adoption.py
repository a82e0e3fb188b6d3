"""Pointed at a database that Laravel created, `spotik migrate` adopts it and applies only the additive changes."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import bcrypt
import httpx2
import pytest
from asgi_lifespan import LifespanManager

from spotik.app import create_app
from tests.conftest import TEST_JWT_SECRET, create_pg_database, drop_pg_database, make_settings, pg_url, unavailable
from tests.openapi_contract import contract_hooks

pytestmark = pytest.mark.postgres
LARAVEL_DDL = Path(__file__).resolve().parents[1] / "fixtures" / "laravel_schema.sql"


@pytest.fixture
def laravel_database() -> Iterator[str]:
    try:
        name = create_pg_database("spotik_laravel")
    except (OSError, asyncpg.PostgresError) as exc:
        unavailable("PostgreSQL", exc)
    try:
        yield name
    finally:
        drop_pg_database(name)


async def _execute_script(url: str, script: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        for statement in filter(None, (part.strip() for part in script.split(";\n"))):
            await connection.execute(statement)  # one by one: CREATE INDEX CONCURRENTLY refuses a transaction
    finally:
        await connection.close()


async def _fetch(url: str, query: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetch(query)
    finally:
        await connection.close()


async def test_spotik_migrate_adopts_a_laravel_database(laravel_database: str, tmp_path: Path) -> None:
    url = pg_url(laravel_database)
    await _execute_script(url, LARAVEL_DDL.read_text())
    user_id = uuid.uuid4()
    laravel_hash = "$2y$12$" + bcrypt.hashpw(b"laravel-secret", bcrypt.gensalt(12)).decode()[7:]
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(
            "INSERT INTO users (id, username, email, password_hash, created_at, updated_at) "
            "VALUES ($1, 'legacy', 'legacy@example.com', $2, now(), now())",
            user_id,
            laravel_hash,
        )
        await connection.execute(
            "INSERT INTO genres (name, color, created_at, updated_at) VALUES ('Pop', '#ff6b6b', now(), now())"
        )
        before = await connection.fetch("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")
    finally:
        await connection.close()

    env = {
        **os.environ,
        "SPOTIK_ENV": "testing",
        "DATABASE_URL": url,
        "JWT_SECRET": TEST_JWT_SECRET,
        "STORAGE_PATH": str(tmp_path / "storage"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "spotik", "migrate"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "adopted the existing Laravel schema" in result.stderr

    columns = await _fetch(
        url,
        "SELECT table_name, column_name, datetime_precision FROM information_schema.columns "
        "WHERE table_schema = 'public' AND column_name IN ('played_at', 'playback_started_at', 'playback_paused_at')",
    )
    precision = {(row["table_name"], row["column_name"]): row["datetime_precision"] for row in columns}
    assert precision == {
        ("tracks", "played_at"): 6,
        ("rooms", "playback_started_at"): 6,
        ("rooms", "playback_paused_at"): 6,
    }
    after = {
        row["indexname"] for row in await _fetch(url, "SELECT indexname FROM pg_indexes WHERE schemaname='public'")
    }
    assert after - {row["indexname"] for row in before} == {"tracks_filename_unique", "alembic_version_pkc"}
    users = await _fetch(url, "SELECT id, password_hash FROM users")
    assert [(row["id"], row["password_hash"]) for row in users] == [(user_id, laravel_hash)]
    genres = await _fetch(url, "SELECT name FROM genres ORDER BY id")
    assert genres[0]["name"] == "Pop" and len(genres) == 10  # the missing seeded genres were added, Pop kept

    settings = make_settings(url, tmp_path / "storage")
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx2.ASGITransport(app=manager.app)
        hooks = contract_hooks(app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://testserver", event_hooks=hooks) as client:
            login = await client.post(
                "/api/auth/login", json={"email": "legacy@example.com", "password": "laravel-secret"}
            )
            assert login.status_code == 200, login.text
            assert login.json()["data"]["user"]["id"] == str(user_id)
            me = await client.get("/api/auth/me", headers={"Authorization": f"Bearer {login.json()['data']['token']}"})
            assert me.status_code == 200

    again = subprocess.run(
        [sys.executable, "-m", "spotik", "migrate"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert again.returncode == 0, again.stderr
    assert "database is up to date" in again.stderr
