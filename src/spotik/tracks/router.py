"""Tracks, votes and audio files over HTTP (docs/api.md#tracks, docs/api.md#votes, docs/api.md#audio-streaming,
docs/decisions.md#d8); envelope B throughout.

Authentication failures come from ``CurrentUser`` in envelope A (the auth family's), so ``CurrentUser`` is the
first parameter of every handler: an anonymous request is a 401 before any lookup can answer 404.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from spotik.auth.models import User
from spotik.deps import CurrentUser, RoomDep, RoomRefDep, SessionDep, StateDep
from spotik.errors import ApiError, Envelope, JSONResponse, NotFound
from spotik.http.openapi import (
    FILE_REQUEST_HEADERS,
    MULTIPART,
    ROOM_NOT_FOUND,
    UNAUTHENTICATED,
    ErrorB,
    error,
    file_responses,
    request_body,
    responses,
    returns,
)
from spotik.http.responses import Answer, bare
from spotik.reads import viewer_tags
from spotik.rooms.service import RoomRef
from spotik.tracks import service
from spotik.tracks.models import Track
from spotik.tracks.schemas import (
    AUDIO_NOT_FOUND,
    INVALID_SEARCH,
    INVALID_UPLOAD,
    NOT_A_MEMBER,
    TRACK_NOT_FOUND,
    AudioFileMetadata,
    TrackMessage,
    TrackQueue,
    TrackSearchResults,
    TrackUploaded,
    TrackUploadForm,
    VoteResult,
)
from spotik.tracks.streaming import DEFAULT_CACHE_CONTROL, audio_file_response
from spotik.tracks.uploads import StorageFull, UploadError, check_declared_length, receive_multipart

router = APIRouter(tags=["tracks"])

# /api/audio/{filename} is for stored files that never change: they may be cached for good.
IMMUTABLE_CACHE = "public, max-age=3600, immutable"


async def track_from_path(track: str, session: SessionDep) -> Track:
    """``{track}`` route binding: an unknown or malformed id is a 404 in envelope B."""
    return await service.find_track(session, track)


TrackDep = Annotated[Track, Depends(track_from_path)]


@router.get(
    "/api/rooms/{room}/tracks",
    summary="A room's queue",
    responses=responses(returns(TrackQueue), UNAUTHENTICATED, ROOM_NOT_FOUND, NOT_A_MEMBER),
)
async def list_tracks(user: CurrentUser, room: RoomRefDep, session: SessionDep, state: StateDep) -> JSONResponse:
    return (await queue_answer(state, session, user, room)).response


async def queue_answer(state: StateDep, session: AsyncSession, user: User, room: RoomRef) -> Answer:
    """``GET /api/rooms/{room}/tracks`` (also served by ``spotik.http.hot``): kept until the room, its queue, the
    viewer's votes or the viewer change."""
    queue = await service.list_queue(
        session, state.reads, room_id=room.id, user=user, public_root=state.settings.public_root
    )
    return Answer(bare(queue), viewer_tags(room.id, user.id))


@router.post(
    "/api/rooms/{room}/tracks",
    status_code=201,
    summary="Upload a track to a room's queue",
    responses=responses(
        returns(TrackUploaded, 201),
        {400: error("Not a valid multipart/form-data body, or the upload was interrupted (envelope B).", ErrorB)},
        UNAUTHENTICATED,
        ROOM_NOT_FOUND,
        NOT_A_MEMBER,
        {404: error("The room was deleted while the upload arrived (envelope B).", ErrorB)},
        {413: error("The audio file or the whole body is over the upload limit (envelope B).", ErrorB)},
        INVALID_UPLOAD,
        {507: error("No space left in the storage for the upload; nothing of it is kept (envelope B).", ErrorB)},
    ),
    openapi_extra=request_body(
        TrackUploadForm,
        MULTIPART,
        encoding={"audio_file": {"contentType": "audio/*"}, "cover_image": {"contentType": "image/*"}},
    ),
)
async def upload_track(
    user: CurrentUser, room: RoomDep, request: Request, session: SessionDep, state: StateDep
) -> JSONResponse:
    """Multipart ``audio_file`` (+ ``genre_id``, ``cover_image``), streamed to disk as it arrives.

    Membership and the declared ``Content-Length`` are checked before the body is read; the body's size is then
    counted as it streams in, and reading stops at the first byte over a limit.
    """
    limits = service.upload_limits(state.settings)
    await service.prepare_upload(session, room=room, user=user)
    try:
        check_declared_length(request, limits.max_body)
        async with receive_multipart(request, files=limits.files, max_body=limits.max_body) as form:
            item = await service.add_track(
                session, state.events, room=room, user=user, form=form, settings=state.settings
            )
    except StorageFull:
        raise ApiError(
            "There is no space left to store the upload.",
            error="Insufficient storage",
            status_code=507,
            envelope=Envelope.B,
        ) from None
    except UploadError as exc:
        raise service.upload_failure(exc, limits) from None
    except ClientDisconnect:
        # Nobody is left to read this answer; the temporary files are already gone.
        raise ApiError("The upload was interrupted", status_code=400, envelope=Envelope.B) from None
    return bare({"message": "Track uploaded successfully", "track": item}, status_code=201)


@router.delete(
    "/api/rooms/{room}/tracks/{track}",
    summary="Remove a track (its uploader or the room's administrator)",
    responses=responses(
        returns(TrackMessage),
        UNAUTHENTICATED,
        ROOM_NOT_FOUND,
        {403: error("Neither the track's uploader nor the room's administrator (envelope B).", ErrorB)},
        TRACK_NOT_FOUND,
    ),
)
async def delete_track(
    user: CurrentUser, room: RoomDep, track: TrackDep, session: SessionDep, state: StateDep
) -> JSONResponse:
    await service.delete_track(session, state.events, room=room, track=track, user=user, settings=state.settings)
    return bare({"message": "Track deleted successfully"})


@router.post(
    "/api/rooms/{room}/tracks/{track}/vote",
    summary="Vote for a track (idempotent)",
    responses=responses(returns(VoteResult), UNAUTHENTICATED, ROOM_NOT_FOUND, NOT_A_MEMBER, TRACK_NOT_FOUND),
)
async def vote_track(
    user: CurrentUser, room: RoomDep, track: TrackDep, session: SessionDep, state: StateDep
) -> JSONResponse:
    return _vote_answer(await service.vote(session, state.events, room=room, track=track, user=user))


@router.delete(
    "/api/rooms/{room}/tracks/{track}/vote",
    summary="Withdraw a vote (idempotent)",
    responses=responses(returns(VoteResult), UNAUTHENTICATED, ROOM_NOT_FOUND, NOT_A_MEMBER, TRACK_NOT_FOUND),
)
async def unvote_track(
    user: CurrentUser, room: RoomDep, track: TrackDep, session: SessionDep, state: StateDep
) -> JSONResponse:
    return _vote_answer(await service.unvote(session, state.events, room=room, track=track, user=user))


def _vote_answer(change: service.VoteChange) -> JSONResponse:
    return bare({"message": change.message, "vote_score": change.vote_score, "user_has_voted": change.user_has_voted})


@router.get(
    "/api/tracks",
    summary="Search the tracks of the caller's rooms by name",
    responses=responses(returns(TrackSearchResults), UNAUTHENTICATED, INVALID_SEARCH),
)
async def search_tracks(
    user: CurrentUser,
    session: SessionDep,
    state: StateDep,
    search: Annotated[str | None, Query()] = None,
) -> JSONResponse:
    items, total = await service.search(session, user=user, text=search, public_root=state.settings.public_root)
    # The client reads ``data`` (an array); ``tracks``/``total_count`` are the track family's usual shape.
    return bare({"tracks": items, "total_count": total, "data": items})


@router.api_route(
    "/api/tracks/{track}/stream",
    methods=["GET", "HEAD"],
    summary="Stream a track's audio (ranges, conditional requests)",
    response_class=Response,
    responses=responses(file_responses("audio/*", "audio file"), UNAUTHENTICATED, NOT_A_MEMBER, AUDIO_NOT_FOUND),
    openapi_extra=FILE_REQUEST_HEADERS,
)
async def stream_track(
    user: CurrentUser, track: TrackDep, request: Request, session: SessionDep, state: StateDep
) -> Response:
    path = await service.stream_path(session, track=track, user=user, settings=state.settings)
    await session.close()  # return the connection before a long transfer
    return _file_response(request, path, track)


@router.api_route(
    "/api/audio/{filename}",
    methods=["GET", "HEAD"],
    summary="A stored audio file by name (ranges, conditional requests)",
    response_class=Response,
    responses=responses(
        file_responses("audio/*", "audio file"),
        UNAUTHENTICATED,
        NOT_A_MEMBER,
        {403: error("The stored file is not audio (envelope B).", ErrorB)},
        AUDIO_NOT_FOUND,
    ),
    openapi_extra=FILE_REQUEST_HEADERS,
)
async def serve_audio(
    user: CurrentUser, filename: str, request: Request, session: SessionDep, state: StateDep
) -> Response:
    track, path = await service.audio_by_filename(session, filename=filename, user=user, settings=state.settings)
    await session.close()
    response = _file_response(request, path, track, cache_control=IMMUTABLE_CACHE)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@router.get(
    "/api/audio/{filename}/metadata",
    summary="A stored audio file's metadata",
    responses=responses(
        returns(AudioFileMetadata),
        UNAUTHENTICATED,
        NOT_A_MEMBER,
        {403: error("The stored file is not audio (envelope B).", ErrorB)},
        AUDIO_NOT_FOUND,
    ),
)
async def audio_metadata(user: CurrentUser, filename: str, session: SessionDep, state: StateDep) -> JSONResponse:
    track, path = await service.audio_by_filename(session, filename=filename, user=user, settings=state.settings)
    return bare(service.audio_metadata(track, path))


def _file_response(
    request: Request, path: Path, track: Track, *, cache_control: str = DEFAULT_CACHE_CONTROL
) -> Response:
    try:
        return audio_file_response(
            request, path, media_type=track.mime_type, download_name=track.original_name, cache_control=cache_control
        )
    except (FileNotFoundError, ValueError):  # removed or replaced since it was resolved
        raise NotFound("Audio file not found", envelope=Envelope.B) from None
