"""Track shapes: Laravel's TrackResource (room current track, playlists) and the queue item of the track list.

Both carry ``room_id`` and ``filename`` too (the client falls back to guessing the room from its URL otherwise).
Relations (``uploader``, ``genre``) must have been loaded by the query; nothing here touches the database.
"""

from __future__ import annotations

from typing import Annotated, Any, NotRequired

from pydantic import Field
from typing_extensions import TypedDict

from spotik.auth.schemas import UserResource, user_full
from spotik.genres.schemas import GenreSummary, genre_brief
from spotik.http.openapi import (
    Binary,
    ErrorB,
    IntegerInput,
    Message,
    Responses,
    Timestamp,
    Uuid,
    ValidationErrorB,
    closed,
    error,
    open_ended,
)
from spotik.timefmt import iso
from spotik.tracks.models import Track


def formatted_duration(seconds: int) -> str:
    return f"{seconds // 60}:{seconds % 60:02d}"


def formatted_file_size(size: int) -> str:
    """Laravel's helper: 1024-based units, rounded to 2 decimals, no trailing zeros ("6.04 MB", "512 B")."""
    units = ("B", "KB", "MB", "GB", "TB")
    value = float(max(size, 0))
    unit = 0
    while value >= 1024 and unit < len(units) - 1:
        value /= 1024
        unit += 1
    text = f"{round(value, 2):.2f}".rstrip("0").rstrip(".")
    return f"{text} {units[unit]}"


def file_url(track: Track) -> str:
    return f"/api/tracks/{track.id}/stream"


def _identity(track: Track) -> dict[str, Any]:
    """What every track shape starts with: ids, names, duration."""
    return {
        "id": str(track.id),
        "room_id": str(track.room_id),
        "filename": track.filename,
        "original_name": track.original_name,
        "duration_seconds": track.duration_seconds,
    }


def track_brief(track: Track) -> dict[str, Any]:
    """The small track object of event payloads (id, names, duration, file path)."""
    return {
        **_identity(track),
        "file_path": track.file_path,
        "file_url": file_url(track),
        "vote_score": track.vote_score,
    }


def _file_fields(track: Track) -> dict[str, Any]:
    """What the resource and the queue item say about the track and its file."""
    return {
        **_identity(track),
        "formatted_duration": formatted_duration(track.duration_seconds),
        "file_size_bytes": track.file_size_bytes,
    }


def track_resource(track: Track, *, has_voted: bool = False, with_relations: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        **_file_fields(track),
        "mime_type": track.mime_type,
        "vote_score": track.vote_score,
        "file_path": track.file_path,
        "file_url": file_url(track),
        "has_voted": has_voted,
        "created_at": iso(track.created_at),
        "updated_at": iso(track.updated_at),
    }
    if with_relations:
        body["uploader"] = user_full(track.uploader)
        body["genre"] = genre_brief(track.genre)
    return body


def queue_item(track: Track, *, user_has_voted: bool, cover_url: str | None) -> dict[str, Any]:
    """An entry of ``GET /api/rooms/{room}/tracks`` and of the upload response (QueueItem in
    docs/api.md#resource-shapes)."""
    return {
        **_file_fields(track),
        "formatted_file_size": formatted_file_size(track.file_size_bytes),
        "mime_type": track.mime_type,
        "vote_score": track.vote_score,
        "votes_count": track.vote_score,
        "uploader": {"id": str(track.uploader.id), "username": track.uploader.username},
        "genre": genre_brief(track.genre),
        "user_has_voted": user_has_voted,
        "created_at": iso(track.created_at),
        "updated_at": iso(track.updated_at),
        "file_url": file_url(track),
        "cover_url": cover_url,
    }


# --- the OpenAPI document (shapes of the builders above; documentation only) -----------------------------------


@closed
class TrackResource(TypedDict):
    """A track (Laravel's TrackResource, ``track_resource``): a room's current track and queue, playlist entries."""

    id: Uuid
    room_id: Uuid
    filename: Annotated[str, Field(description="The stored file's name (`/api/audio/{filename}`).")]
    original_name: Annotated[str, Field(description="The uploaded file's name.")]
    duration_seconds: int
    formatted_duration: Annotated[str, Field(examples=["3:07"])]
    file_size_bytes: int
    mime_type: Annotated[str, Field(examples=["audio/mpeg"])]
    vote_score: int
    file_path: str
    file_url: Annotated[str, Field(description="Where to stream it (`/api/tracks/{id}/stream`).")]
    has_voted: Annotated[bool, Field(description="Whether the requesting user voted for it.")]
    created_at: Timestamp | None
    updated_at: Timestamp | None
    uploader: UserResource
    genre: GenreSummary | None


@closed
class TrackUploader(TypedDict):
    id: Uuid
    username: str


@closed
class QueueItem(TypedDict):
    """An entry of a room's queue (``queue_item``, contract §2.12 QueueItem)."""

    id: Uuid
    room_id: Uuid
    filename: str
    original_name: str
    duration_seconds: int
    formatted_duration: str
    file_size_bytes: int
    formatted_file_size: Annotated[str, Field(examples=["6.04 MB"])]
    mime_type: str
    vote_score: int
    votes_count: Annotated[int, Field(description="The same as `vote_score`.")]
    uploader: TrackUploader
    genre: GenreSummary | None
    user_has_voted: bool
    created_at: Timestamp | None
    updated_at: Timestamp | None
    file_url: str
    cover_url: Annotated[str | None, Field(description="The track's cover (`/api/storage/…`), if it has one.")]


@closed
class TrackQueue(TypedDict):
    """A room's queue, in play order (envelope B)."""

    tracks: list[QueueItem]
    total_count: int


@closed
class TrackSearchResults(TypedDict):
    """Tracks of the caller's rooms whose name matches (envelope B); ``data`` repeats ``tracks``."""

    tracks: list[QueueItem]
    total_count: Annotated[int, Field(description="Every match, beyond the 50 listed.")]
    data: list[QueueItem]


@closed
class TrackUploaded(TypedDict):
    """The new track, queued (envelope B)."""

    message: Message
    track: QueueItem


@closed
class TrackMessage(TypedDict):
    """Done (envelope B)."""

    message: Message


@closed
class VoteResult(TypedDict):
    """The track's score after the vote (envelope B)."""

    message: Message
    vote_score: int
    user_has_voted: bool


@closed
class AudioFileMetadata(TypedDict):
    """A stored audio file (envelope B)."""

    filename: str
    size: Annotated[int, Field(description="Bytes on disk.")]
    mime_type: str
    last_modified: Timestamp
    formatted_size: str
    duration_seconds: int
    original_name: str
    track_id: Uuid


@open_ended
class TrackUploadForm(TypedDict):
    """A track to add to the queue (multipart/form-data)."""

    audio_file: Annotated[
        Binary, Field(description="MP3, WAV, M4A, OGG/Opus or FLAC; the type is read from the content, not the name.")
    ]
    genre_id: NotRequired[Annotated[IntegerInput, Field(description="An existing genre's id.")]]
    cover_image: NotRequired[Annotated[Binary, Field(description="JPEG, PNG or WebP, at most 5 MB.")]]


NOT_A_MEMBER: Responses = {403: error("The user is not a participant of the room (envelope B).", ErrorB)}
TRACK_NOT_FOUND: Responses = {404: error("No such track in this room (envelope B).", ErrorB)}
AUDIO_NOT_FOUND: Responses = {404: error("No such track, or its file is missing (envelope B).", ErrorB)}
INVALID_UPLOAD: Responses = {
    422: error(
        "The form breaks Laravel's rules, or the audio is not a supported format (envelope B).", ValidationErrorB
    )
}
INVALID_SEARCH: Responses = {422: error("`search` is longer than 255 characters (envelope B).", ValidationErrorB)}
