"""Playlist shape (Laravel's PlaylistResource, docs/api.md#resource-shapes) plus ``creator``: the client reads
``playlist.creator`` (docs/decisions.md#b8), which the original never sent. Each track is a TrackResource with its
``position``."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Annotated, Any, Literal, NotRequired

from pydantic import Field
from typing_extensions import TypedDict

from spotik.auth.models import User
from spotik.auth.schemas import UserResource, user_full
from spotik.http.openapi import (
    BooleanInput,
    IntegerInput,
    Message,
    Responses,
    Timestamp,
    Uuid,
    closed,
    error,
    open_ended,
)
from spotik.playlists.models import Playlist
from spotik.playlists.repository import Entry
from spotik.timefmt import iso
from spotik.tracks.schemas import TrackResource, track_resource


def entry_resource(entry: Entry) -> dict[str, Any]:
    return {**track_resource(entry.track, has_voted=entry.has_voted), "position": entry.position}


def playlist_resource(
    playlist: Playlist, *, owner: User, entries: Sequence[Entry], viewer_id: uuid.UUID
) -> dict[str, Any]:
    user = user_full(owner)
    return {
        "id": playlist.id,
        "name": playlist.name,
        "description": playlist.description,
        "is_public": playlist.is_public,
        "is_owner": playlist.user_id == viewer_id,
        "user": user,
        "creator": user,
        "tracks_count": len(entries),
        "total_duration": sum(entry.track.duration_seconds for entry in entries),
        "tracks": [entry_resource(entry) for entry in entries],
        "created_at": iso(playlist.created_at),
        "updated_at": iso(playlist.updated_at),
    }


# --- the OpenAPI document (shapes of the builders above; documentation only) -----------------------------------


@closed
class PlaylistEntry(TrackResource):
    """A track of a playlist (a TrackResource with its place)."""

    position: Annotated[int, Field(description="0-based place in the playlist.")]


@closed
class PlaylistResource(TypedDict):
    """A playlist with its tracks in order (Laravel's PlaylistResource plus ``creator``)."""

    id: int
    name: str
    description: str | None
    is_public: bool
    is_owner: Annotated[bool, Field(description="Whether the requesting user owns it.")]
    user: Annotated[UserResource, Field(description="Its owner.")]
    creator: Annotated[UserResource, Field(description="Its owner (the same as `user`).")]
    tracks_count: int
    total_duration: Annotated[int, Field(description="Seconds.")]
    tracks: list[PlaylistEntry]
    created_at: Timestamp | None
    updated_at: Timestamp | None


@closed
class PlaylistTrackAdded(TypedDict):
    playlist_id: int
    track_id: Uuid
    position: Annotated[int, Field(description="Where the track went (0-based).")]


@closed
class PlaylistListResponse(TypedDict):
    """The caller's playlists and the public ones (envelope A)."""

    success: Literal[True]
    message: Message
    data: list[PlaylistResource]


@closed
class PlaylistResponse(TypedDict):
    """A playlist (envelope A)."""

    success: Literal[True]
    message: Message
    data: PlaylistResource


@closed
class PlaylistTrackAddedResponse(TypedDict):
    """The track is in the playlist (envelope A)."""

    success: Literal[True]
    message: Message
    data: PlaylistTrackAdded


@open_ended
class PlaylistCreateRequest(TypedDict):
    """A new playlist. Unknown fields are ignored."""

    name: Annotated[str, Field(max_length=100)]
    description: NotRequired[Annotated[str, Field(max_length=1000)] | None]
    is_public: NotRequired[BooleanInput]


@open_ended
class PlaylistUpdateRequest(TypedDict, total=False):
    """The fields to change (only those sent). Unknown fields are ignored."""

    name: Annotated[str, Field(max_length=100, description="May not be empty.")]
    description: Annotated[str | None, Field(max_length=1000, description="Empty or null clears it.")]
    is_public: BooleanInput


@open_ended
class PlaylistTrackRequest(TypedDict):
    """A track to add. Unknown fields are ignored."""

    track_id: Annotated[Uuid, Field(description="Any existing track.")]
    position: NotRequired[
        Annotated[IntegerInput, Field(description="0-based place (clamped to the end); the end when absent.")]
    ]


PLAYLIST_NOT_FOUND: Responses = {404: error("No playlist has this id (envelope A).")}
