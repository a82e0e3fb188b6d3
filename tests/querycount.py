"""Counting the SQL statements an operation runs (the engine's own events), for the no-N+1 tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine


@contextmanager
def count_queries(engine: AsyncEngine) -> Iterator[list[str]]:
    """Collects the statements the *current task* sends through ``engine`` inside the block.

    Background tasks of the app (the playback scheduler's passes) share the engine; counting their statements too
    would make exact counts flaky. Connection pragmas are not statements and are not counted.
    """
    owner = asyncio.current_task()
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if asyncio.current_task() is owner:
            statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
