"""``/api/playlists`` (docs/api.md#playlists), envelope A, authenticated."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request

from spotik.deps import CurrentUser, SessionDep
from spotik.errors import JSONResponse
from spotik.http.input import read_input
from spotik.http.openapi import BAD_INPUT, INVALID_A, UNAUTHENTICATED, Done, error, request_body, responses, returns
from spotik.http.responses import ok
from spotik.playlists import service
from spotik.playlists.schemas import (
    PLAYLIST_NOT_FOUND,
    PlaylistCreateRequest,
    PlaylistListResponse,
    PlaylistResponse,
    PlaylistTrackAddedResponse,
    PlaylistTrackRequest,
    PlaylistUpdateRequest,
    playlist_resource,
)
from spotik.validation import parse_uuid

router = APIRouter(prefix="/api/playlists", tags=["playlists"])

_BIGINT_ID = re.compile(r"[0-9]{1,19}")
_BIGINT_MAX = 2**63 - 1


def playlist_id_from(value: str) -> int:
    """``{playlist}`` binding: anything but a positive bigint is a 404, before it can reach the database."""
    if _BIGINT_ID.fullmatch(value) and 0 < int(value) <= _BIGINT_MAX:
        return int(value)
    raise service.playlist_not_found()


def _resource(view: service.PlaylistView, viewer: CurrentUser) -> dict[str, object]:
    return playlist_resource(view.playlist, owner=view.owner, entries=view.entries, viewer_id=viewer.id)


@router.get(
    "",
    summary="The caller's playlists and the public ones",
    responses=responses(returns(PlaylistListResponse), UNAUTHENTICATED),
)
async def list_playlists(user: CurrentUser, session: SessionDep) -> JSONResponse:
    views = await service.list_playlists(session, viewer=user)
    return ok("Playlists retrieved successfully", [_resource(view, user) for view in views])


@router.post(
    "",
    status_code=201,
    summary="Create a playlist",
    responses=responses(returns(PlaylistResponse, 201), BAD_INPUT, UNAUTHENTICATED, INVALID_A),
    openapi_extra=request_body(PlaylistCreateRequest),
)
async def create_playlist(user: CurrentUser, request: Request, session: SessionDep) -> JSONResponse:
    view = await service.create_playlist(session, owner=user, data=await read_input(request))
    return ok("Playlist created successfully", _resource(view, user), status_code=201)


@router.get(
    "/{playlist}",
    summary="A playlist (the owner's, or a public one)",
    responses=responses(
        returns(PlaylistResponse),
        UNAUTHENTICATED,
        {403: error("A private playlist of another user (envelope A).")},
        PLAYLIST_NOT_FOUND,
    ),
)
async def show_playlist(user: CurrentUser, playlist: str, session: SessionDep) -> JSONResponse:
    view = await service.show_playlist(session, playlist_id_from(playlist), viewer=user)
    return ok("Playlist retrieved successfully", _resource(view, user))


@router.put(
    "/{playlist}",
    summary="Change a playlist (its owner)",
    responses=responses(
        returns(PlaylistResponse),
        BAD_INPUT,
        UNAUTHENTICATED,
        {403: error("Not the playlist's owner (envelope A).")},
        PLAYLIST_NOT_FOUND,
        INVALID_A,
    ),
    openapi_extra=request_body(PlaylistUpdateRequest, required=False),
)
async def update_playlist(user: CurrentUser, playlist: str, request: Request, session: SessionDep) -> JSONResponse:
    playlist_id = playlist_id_from(playlist)
    view = await service.update_playlist(session, playlist_id, viewer=user, data=await read_input(request))
    return ok("Playlist updated successfully", _resource(view, user))


@router.delete(
    "/{playlist}",
    summary="Delete a playlist (its owner)",
    responses=responses(
        returns(Done), UNAUTHENTICATED, {403: error("Not the playlist's owner (envelope A).")}, PLAYLIST_NOT_FOUND
    ),
)
async def delete_playlist(user: CurrentUser, playlist: str, session: SessionDep) -> JSONResponse:
    await service.delete_playlist(session, playlist_id_from(playlist), viewer=user)
    return ok("Playlist deleted successfully")


@router.post(
    "/{playlist}/tracks",
    summary="Add a track to a playlist (its owner)",
    responses=responses(
        returns(PlaylistTrackAddedResponse),
        BAD_INPUT,
        UNAUTHENTICATED,
        {403: error("Not the playlist's owner (envelope A).")},
        PLAYLIST_NOT_FOUND,
        {409: error("The track is already in the playlist (envelope A).")},
        INVALID_A,
    ),
    openapi_extra=request_body(PlaylistTrackRequest),
)
async def add_playlist_track(user: CurrentUser, playlist: str, request: Request, session: SessionDep) -> JSONResponse:
    playlist_id = playlist_id_from(playlist)
    track_id, position = await service.add_track(session, playlist_id, viewer=user, data=await read_input(request))
    # ``data`` is an addition: the original answered without it.
    return ok(
        "Track added to playlist successfully",
        {"playlist_id": playlist_id, "track_id": str(track_id), "position": position},
    )


@router.delete(
    "/{playlist}/tracks/{track}",
    summary="Remove a track from a playlist (its owner)",
    responses=responses(
        returns(Done),
        UNAUTHENTICATED,
        {403: error("Not the playlist's owner (envelope A).")},
        PLAYLIST_NOT_FOUND,
        {404: error("The track is not in the playlist (envelope A).")},
    ),
)
async def remove_playlist_track(user: CurrentUser, playlist: str, track: str, session: SessionDep) -> JSONResponse:
    await service.remove_track(session, playlist_id_from(playlist), viewer=user, track_id=parse_uuid(track))
    return ok("Track removed from playlist successfully")
