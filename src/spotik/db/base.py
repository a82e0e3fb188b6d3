"""Declarative base, column types shared by every table, and id generation."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, MetaData, Uuid
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 v7).

    Python 3.11 has no uuid7, and this is eight lines. Time order matters: Laravel's HasUuids also writes
    time-ordered ids, so ``ORDER BY created_at, id`` gives a stable upload order even though ``created_at`` has
    whole-second precision in the Laravel schema.
    """
    millis = time.time_ns() // 1_000_000
    value = (millis & 0xFFFF_FFFF_FFFF) << 80
    value |= int.from_bytes(os.urandom(10), "big") & ((1 << 80) - 1)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return uuid.UUID(int=value)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in Python, naive UTC values in the database (Laravel's ``timestamp without time zone``).

    ``precision`` is the PostgreSQL fractional-second precision: 0 for the Laravel columns, 6 where the contract
    allows sub-second playback instants.
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
