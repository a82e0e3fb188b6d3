from __future__ import annotations

from typing import Any

from spotik.genres.models import Genre
from spotik.timefmt import iso


def genre_brief(genre: Genre | None) -> dict[str, Any] | None:
    return None if genre is None else {"id": genre.id, "name": genre.name, "color": genre.color}


def genre_resource(genre: Genre, *, tracks_count: int) -> dict[str, Any]:
    return {
        "id": genre.id,
        "name": genre.name,
        "description": genre.description,
        "color": genre.color,
        "tracks_count": tracks_count,
        "created_at": iso(genre.created_at),
        "updated_at": iso(genre.updated_at),
    }
