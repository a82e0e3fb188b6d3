"""Alembic environment: async engine from Spotik's settings; one migrator at a time on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from alembic import context
from alembic.migration import MigrationContext, MigrationInfo
from sqlalchemy import text
from sqlalchemy.engine import Connection

from spotik.db.engine import create_engine
from spotik.db.models import Base
from spotik.settings import Settings

# Any constant works; it only has to be the same for every Spotik instance migrating the same database.
MIGRATION_LOCK_KEY = 0x5907_1C

config = context.config


def _record_applied(
    ctx: MigrationContext, step: MigrationInfo, heads: Collection[Any], run_args: Mapping[str, Any]
) -> None:
    config.attributes.setdefault("applied", []).append(step.up_revision_id)


def _run(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Several instances may start at once; the advisory lock makes them migrate one after another.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        on_version_apply=_record_applied,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _main(settings: Settings) -> None:
    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


def _run_to_completion(settings: Settings) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(_main(settings))
        return
    # Called from inside an event loop (a test, an embedding app): migrate on a loop of its own in a thread.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, _main(settings)).result()


_run_to_completion(config.attributes.get("settings") or Settings())
