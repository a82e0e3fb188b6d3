"""Genres (docs/api.md#genres): listing with track counts, popular genres, and CRUD with Laravel's validation.

Who may write: any authenticated user, as in the original. The schema has no roles and genres have no owner, the
web client offers genre management to every user, and the damage one user can do is bounded: a genre that tracks
use cannot be deleted (409), and a rename changes a label, not data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from spotik.errors import Conflict, NotFound, ValidationFailed
from spotik.events import DomainEvent, EventBus
from spotik.genres import repository
from spotik.genres.models import Genre
from spotik.timefmt import now_iso
from spotik.validation import Field, integer, max_chars, regex, string, unique_taken, validate

DEFAULT_POPULAR_LIMIT = 10
MAX_POPULAR_LIMIT = 100
COLOR_PATTERN = r"#[0-9A-Fa-f]{6}"
GENRE_FIELDS: Mapping[str, Field] = {
    "name": Field((string, max_chars(100))),
    "description": Field((string, max_chars(500)), required=False),
    "color": Field((string, regex(COLOR_PATTERN)), required=False),
}
# Present with an empty value means "clear it" for these; for the others it is an error.
NULLABLE = frozenset({"description", "color"})


def genre_not_found() -> NotFound:
    # A fresh exception per raise: a shared instance would accumulate tracebacks across requests.
    return NotFound("Genre not found", error="Genre not found")


async def list_genres(session: AsyncSession) -> Sequence[tuple[Genre, int]]:
    return await repository.genres_by_name(session)


def popular_limit(raw: str | None) -> int:
    """``?limit=``: 10 when absent or empty, clamped to 1..100, 422 when it is not an integer."""
    if raw is None or not raw.strip():
        return DEFAULT_POPULAR_LIMIT
    values = validate({"limit": raw}, {"limit": Field((integer,))})
    return max(1, min(int(values["limit"]), MAX_POPULAR_LIMIT))


async def popular_genres(session: AsyncSession, *, limit: int) -> Sequence[tuple[Genre, int]]:
    return await repository.popular_genres(session, limit)


async def show_genre(session: AsyncSession, genre_id: int) -> tuple[Genre, int]:
    found = await repository.genre_with_track_count(session, genre_id)
    if found is None:
        raise genre_not_found()
    return found


async def create_genre(session: AsyncSession, *, data: Mapping[str, Any]) -> Genre:
    values = await _validated(session, data, GENRE_FIELDS, except_id=None)
    genre = Genre(name=values["name"], description=values["description"])
    if values["color"] is not None:  # an explicit null keeps the column default
        genre.color = values["color"]
    session.add(genre)
    await _commit_or_name_taken(session, genre)
    return genre


async def update_genre(
    session: AsyncSession, bus: EventBus, genre_id: int, *, data: Mapping[str, Any]
) -> tuple[Genre, int]:
    """Change the fields sent; ``genre_updated`` (no room: tracks of every room show their genre) after the commit."""
    genre = await repository.get_genre(session, genre_id)
    if genre is None:
        raise genre_not_found()
    # Laravel's "sometimes": only the fields sent are checked and changed; a present-but-empty name is refused.
    fields = {
        name: Field(spec.rules, required=name in data and name not in NULLABLE) for name, spec in GENRE_FIELDS.items()
    }
    values = await _validated(session, data, fields, except_id=genre.id)
    if "name" in data:
        genre.name = values["name"]
    if "description" in data:
        genre.description = values["description"]
    if "color" in data and values["color"] is not None:  # color is NOT NULL: an empty color leaves it as it is
        genre.color = values["color"]
    await _commit_or_name_taken(session, genre)
    await bus.publish(DomainEvent("genre_updated", None, {"genre_id": genre.id, "timestamp": now_iso()}))
    return genre, await repository.track_count(session, genre.id)


async def delete_genre(session: AsyncSession, genre_id: int) -> None:
    if await repository.delete_unless_used(session, genre_id):
        await session.commit()
        return
    await session.rollback()
    if await repository.get_genre(session, genre_id) is None:
        raise genre_not_found()
    raise Conflict("Cannot delete genre with existing tracks", error="Genre has associated tracks")


async def _validated(
    session: AsyncSession, data: Mapping[str, Any], fields: Mapping[str, Field], *, except_id: int | None
) -> dict[str, Any]:
    """Field rules, then uniqueness of a valid name; all failures reported together, as Laravel does."""
    errors: dict[str, list[str]] = {}
    values: dict[str, Any] = {}
    try:
        values = validate(data, fields)
    except ValidationFailed as exc:
        errors = dict(exc.errors or {})
    name = data.get("name")
    if "name" not in errors and isinstance(name, str) and name.strip():
        if await repository.name_taken(session, name.strip(), except_id=except_id):
            errors["name"] = [unique_taken("name")]
    if errors:
        raise ValidationFailed({field: errors[field] for field in fields if field in errors})
    return values


async def _commit_or_name_taken(session: AsyncSession, genre: Genre) -> None:
    try:
        await session.commit()
    except IntegrityError:  # lost a race with a genre of the same name
        await session.rollback()
        raise ValidationFailed({"name": [unique_taken("name")]}) from None
    # Read back what was stored: the Laravel columns keep whole seconds (PostgreSQL rounds), and the response must
    # show the same timestamps as a later GET.
    await session.refresh(genre)
