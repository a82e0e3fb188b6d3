"""Track shapes: Laravel's TrackResource (room current track, playlists) and the queue item of the track list.

Both carry ``room_id`` and ``filename`` too (the client falls back to guessing the room from its URL otherwise).
Relations (``uploader``, ``genre``) must have been loaded by the query; nothing here touches the database.
"""

from __future__ import annotations

from typing import Any

from spotik.auth.schemas import user_full
from spotik.genres.schemas import genre_brief
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
