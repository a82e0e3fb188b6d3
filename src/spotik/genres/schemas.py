from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from pydantic import Field
from typing_extensions import TypedDict

from spotik.genres.models import Genre
from spotik.http.openapi import Message, Timestamp, closed, open_ended
from spotik.timefmt import iso

COLOR_PATTERN = r"^#[0-9A-Fa-f]{6}$"


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


# --- the OpenAPI document (shapes of the builders above; documentation only) -----------------------------------

Color = Annotated[str, Field(pattern=COLOR_PATTERN, examples=["#1DB954"])]


@closed
class GenreSummary(TypedDict):
    """A track's genre (``genre_brief``)."""

    id: int
    name: str
    color: str


@closed
class GenreResource(TypedDict):
    """A genre with its number of tracks (``genre_resource``)."""

    id: int
    name: str
    description: str | None
    color: str
    tracks_count: int
    created_at: Timestamp | None
    updated_at: Timestamp | None


@closed
class GenreListResponse(TypedDict):
    """Genres (envelope A)."""

    success: Literal[True]
    message: Message
    data: list[GenreResource]


@closed
class GenreResponse(TypedDict):
    """One genre (envelope A)."""

    success: Literal[True]
    message: Message
    data: GenreResource


@open_ended
class GenreCreateRequest(TypedDict):
    """A new genre. Unknown fields are ignored."""

    name: Annotated[str, Field(max_length=100, description="Unique.")]
    description: NotRequired[Annotated[str, Field(max_length=500)] | None]
    color: NotRequired[Annotated[Color | None, Field(description="`#RRGGBB`; absent or null keeps the default.")]]


@open_ended
class GenreUpdateRequest(TypedDict, total=False):
    """The fields to change (only those sent are checked and changed). Unknown fields are ignored."""

    name: Annotated[str, Field(max_length=100, description="Unique; may not be empty.")]
    description: Annotated[str | None, Field(max_length=500, description="Empty or null clears it.")]
    color: Annotated[Color | None, Field(description="`#RRGGBB`; empty or null leaves it unchanged.")]
