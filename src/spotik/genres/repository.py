"""Genre queries. ``tracks_count`` always comes from one grouped subquery joined to the genres, never per genre."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Select, and_, delete, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from spotik.genres.models import Genre
from spotik.tracks.models import Track


def _with_track_counts() -> Select[Genre, int]:
    counts = (
        select(Track.genre_id.label("genre_id"), func.count().label("tracks_count"))
        .where(Track.genre_id.is_not(None))
        .group_by(Track.genre_id)
        .subquery("genre_track_counts")
    )
    tracks_count = func.coalesce(counts.c.tracks_count, 0).label("tracks_count")
    return select(Genre, tracks_count).outerjoin(counts, counts.c.genre_id == Genre.id)


async def genres_by_name(session: AsyncSession) -> Sequence[tuple[Genre, int]]:
    statement = _with_track_counts().order_by(Genre.name, Genre.id)
    return (await session.execute(statement)).all()


async def popular_genres(session: AsyncSession, limit: int) -> Sequence[tuple[Genre, int]]:
    statement = _with_track_counts()
    tracks_count = statement.selected_columns.tracks_count
    statement = statement.order_by(tracks_count.desc(), Genre.name, Genre.id).limit(limit)
    return (await session.execute(statement)).all()


async def genre_with_track_count(session: AsyncSession, genre_id: int) -> tuple[Genre, int] | None:
    row = (await session.execute(_with_track_counts().where(Genre.id == genre_id))).first()
    return None if row is None else (row[0], int(row[1]))


async def get_genre(session: AsyncSession, genre_id: int) -> Genre | None:
    return await session.get(Genre, genre_id)


async def name_taken(session: AsyncSession, name: str, *, except_id: int | None = None) -> bool:
    condition = Genre.name == name
    if except_id is not None:
        condition = and_(condition, Genre.id != except_id)
    return bool(await session.scalar(select(exists().where(condition))))


async def track_count(session: AsyncSession, genre_id: int) -> int:
    return int(await session.scalar(select(func.count()).select_from(Track).where(Track.genre_id == genre_id)) or 0)


async def delete_unless_used(session: AsyncSession, genre_id: int) -> bool:
    """Delete the genre only if no track refers to it, in one statement (no check-then-delete window)."""
    in_use = exists().where(Track.genre_id == genre_id)
    result = await session.execute(delete(Genre).where(Genre.id == genre_id, ~in_use))
    return bool(getattr(result, "rowcount", 0))
