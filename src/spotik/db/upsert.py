"""INSERT … ON CONFLICT DO NOTHING for both dialects."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession


async def insert_ignore(session: AsyncSession, table: Table, values: dict[str, Any]) -> bool:
    """Insert one row unless it conflicts with a unique key; return whether a row was inserted."""
    dialect = session.get_bind().dialect.name
    builder = pg_insert if dialect == "postgresql" else sqlite_insert
    result = await session.execute(builder(table).values(**values).on_conflict_do_nothing())
    return bool(getattr(result, "rowcount", 0))
