"""Timestamps as the API writes them (docs/api.md#conventions, docs/decisions.md#d2): ISO-8601 UTC with microseconds
and ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:  # naive: UTC already
        return moment.isoformat(timespec="microseconds") + "Z"
    return moment.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"  # without its "+00:00"


def from_iso(text: str | None) -> datetime | None:
    """The moment ``iso`` wrote (None for None): how a cached entry's times come back."""
    return None if text is None else datetime.fromisoformat(text)


def now_iso() -> str:
    return iso(datetime.now(UTC)) or ""
