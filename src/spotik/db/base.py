"""Declarative base, column types shared by every table, and id generation."""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, MetaData, Uuid
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator


class _MonotonicUuid7:
    """Time-ordered UUIDs (RFC 9562 v7), strictly increasing within this process.

    Python 3.11 has no uuid7. Order matters: Laravel's HasUuids also writes time-ordered ids, and
    ``ORDER BY created_at, id`` must give the upload order although ``created_at`` has whole-second precision in
    the Laravel schema — so ids made within the same millisecond must still increase (RFC 9562 §6.2, method 2:
    the random part is incremented instead of redrawn when the clock has not moved past the last id).
    """

    def __init__(self) -> None:
        self._millis = 0
        self._counter = 0
        self._lock = threading.Lock()

    def __call__(self) -> uuid.UUID:
        now = time.time_ns() // 1_000_000
        with self._lock:
            if now > self._millis:
                self._millis, self._counter = now, int.from_bytes(os.urandom(2), "big") & 0x7FF
            else:  # same millisecond (or the clock went back): count up, spilling into the next millisecond
                self._counter += 1
                if self._counter > 0xFFF:
                    self._millis, self._counter = self._millis + 1, 0
            millis, counter = self._millis, self._counter
        random_tail = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
        # 48-bit ms timestamp | version 7 | 12-bit counter | variant 0b10 | 62 random bits
        value = (millis & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | counter << 64 | 0x2 << 62 | random_tail
        return uuid.UUID(int=value)


uuid7 = _MonotonicUuid7()


def utcnow() -> datetime:
    return datetime.now(UTC)


def utcnow_seconds() -> datetime:
    """Now, truncated to the whole second: what a Laravel ``timestamp(0)`` column keeps (PostgreSQL would round),
    so a value returned right after a write is the value every later read returns."""
    return datetime.now(UTC).replace(microsecond=0)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in Python, naive UTC values in the database (Laravel's ``timestamp without time zone``).

    ``precision`` is the PostgreSQL fractional-second precision: 0 for the Laravel columns, 6 for the sub-second
    playback instants Spotik adds (docs/decisions.md#d7).
    """

    impl = DateTime
    cache_ok = True

    def __init__(self, precision: int = 0) -> None:
        super().__init__()
        self.precision = precision

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.TIMESTAMP(timezone=False, precision=self.precision))
        return dialect.type_descriptor(DateTime(timezone=False))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


UUID = Uuid(as_uuid=True)


class Base(DeclarativeBase):
    metadata = MetaData()
