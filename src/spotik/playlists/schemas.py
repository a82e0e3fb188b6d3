"""Playlist shape (Laravel's PlaylistResource, docs/api.md#resource-shapes) plus ``creator``: the client reads
``playlist.creator`` (docs/decisions.md#b8), which the original never sent. Each track is a TrackResource with its
``position``."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from spotik.auth.models import User
from spotik.auth.schemas import user_full
from spotik.playlists.models import Playlist
from spotik.playlists.repository import Entry
from spotik.timefmt import iso
from spotik.tracks.schemas import track_resource


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
