"""``/api/genres`` (docs/api.md#genres), envelope A. Listing is public; the rest needs an authenticated user."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request

from spotik.deps import CurrentUser, SessionDep, StateDep
from spotik.errors import JSONResponse
from spotik.genres import service
from spotik.genres.schemas import (
    GenreCreateRequest,
    GenreListResponse,
    GenreResponse,
    GenreUpdateRequest,
    genre_resource,
)
from spotik.http.input import read_input
from spotik.http.openapi import (
    BAD_INPUT,
    INVALID_A,
    UNAUTHENTICATED,
    Done,
    ValidationErrorA,
    error,
    request_body,
    responses,
    returns,
)
from spotik.http.responses import ok

router = APIRouter(prefix="/api/genres", tags=["genres"])

_BIGINT_ID = re.compile(r"[0-9]{1,19}")
_BIGINT_MAX = 2**63 - 1
GENRE_NOT_FOUND = {404: error("No genre has this id (envelope A).")}


def genre_id_from(value: str) -> int:
    """``{genre}`` binding: anything but a positive bigint is a 404, before it can reach the database."""
    if _BIGINT_ID.fullmatch(value) and 0 < int(value) <= _BIGINT_MAX:
        return int(value)
    raise service.genre_not_found()


@router.get(
    "",
    summary="All genres, by name",
    responses=returns(GenreListResponse),
)
async def list_genres(session: SessionDep) -> JSONResponse:
    rows = await service.list_genres(session)
    data = [genre_resource(genre, tracks_count=count) for genre, count in rows]
    return ok("Genres retrieved successfully", data)


# Declared before "/{genre}" so that "popular" is never taken for an id.
@router.get(
    "/popular",
    summary="The genres with the most tracks",
    responses=responses(
        returns(GenreListResponse), {422: error("`limit` is not an integer (envelope A).", ValidationErrorA)}
    ),
)
async def list_popular_genres(session: SessionDep, limit: str | None = None) -> JSONResponse:
    rows = await service.popular_genres(session, limit=service.popular_limit(limit))
    data = [genre_resource(genre, tracks_count=count) for genre, count in rows]
    return ok("Popular genres retrieved successfully", data)


@router.post(
    "",
    status_code=201,
    summary="Create a genre",
    responses=responses(returns(GenreResponse, 201), BAD_INPUT, UNAUTHENTICATED, INVALID_A),
    openapi_extra=request_body(GenreCreateRequest),
)
async def create_genre(_user: CurrentUser, request: Request, session: SessionDep) -> JSONResponse:
    genre = await service.create_genre(session, data=await read_input(request))
    return ok("Genre created successfully", genre_resource(genre, tracks_count=0), status_code=201)


@router.get(
    "/{genre}", summary="A genre", responses=responses(returns(GenreResponse), UNAUTHENTICATED, GENRE_NOT_FOUND)
)
async def show_genre(_user: CurrentUser, genre: str, session: SessionDep) -> JSONResponse:
    found, count = await service.show_genre(session, genre_id_from(genre))
    return ok("Genre retrieved successfully", genre_resource(found, tracks_count=count))


@router.put(
    "/{genre}",
    summary="Change a genre",
    responses=responses(returns(GenreResponse), BAD_INPUT, UNAUTHENTICATED, GENRE_NOT_FOUND, INVALID_A),
    openapi_extra=request_body(GenreUpdateRequest, required=False),
)
async def update_genre(
    _user: CurrentUser, genre: str, request: Request, session: SessionDep, state: StateDep
) -> JSONResponse:
    genre_id = genre_id_from(genre)
    updated, count = await service.update_genre(session, state.events, genre_id, data=await read_input(request))
    return ok("Genre updated successfully", genre_resource(updated, tracks_count=count))


@router.delete(
    "/{genre}",
    summary="Delete a genre that no track uses",
    responses=responses(
        returns(Done), UNAUTHENTICATED, GENRE_NOT_FOUND, {409: error("Tracks still use this genre (envelope A).")}
    ),
)
async def delete_genre(_user: CurrentUser, genre: str, session: SessionDep) -> JSONResponse:
    await service.delete_genre(session, genre_id_from(genre))
    return ok("Genre deleted successfully")
