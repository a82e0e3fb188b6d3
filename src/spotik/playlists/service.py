"""Playlists (docs/api.md#playlists): the viewer's own and public playlists, owner-only changes, ordered tracks.

Positions form a list: entries are numbered 0..n-1 in order. Adding at ``position`` p (clamped to 0..n) inserts
before the entry that was at p and moves the later ones down by one; without a position the track is appended
(p = n, the original's "current count"). Removing closes the gap. The original stored the number as given, so two
entries could share a position and their order depended on the database; a legacy playlist with gaps or ties still
works here (ties are ordered by insertion).

Any track of any room may be added, as in the original: a room's tracks are already visible to every
authenticated user (``GET /api/rooms/{room}`` lists its queue), and playing them still needs room membership.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from spotik.auth.models import User
from spotik.errors import Conflict, Forbidden, NotFound, ValidationFailed
from spotik.playlists import repository
from spotik.playlists.models import Playlist, PlaylistTrack
from spotik.playlists.repository import Entry
from spotik.validation import Field, boolean, integer, max_chars, min_value, string, uuid_rule, validate

PLAYLIST_FIELDS: Mapping[str, Field] = {
    "name": Field((string, max_chars(100))),
    "description": Field((string, max_chars(1000)), required=False),
    "is_public": Field((boolean,), required=False),
}
# Present with an empty value means "clear it" for these; for the others it is an error.
NULLABLE = frozenset({"description"})
ADD_TRACK_FIELDS: Mapping[str, Field] = {
    "track_id": Field((uuid_rule,)),
    "position": Field((integer, min_value(0)), required=False),
}
TRACK_ID_INVALID = "The selected track id is invalid."


@dataclass(frozen=True, slots=True)
class PlaylistView:
    playlist: Playlist
    owner: User
    entries: Sequence[Entry]


def playlist_not_found() -> NotFound:
    return NotFound("Playlist not found", error="Playlist not found")


def _forbidden(action: str) -> Forbidden:
    return Forbidden(f"Unauthorized to {action} this playlist", error="Access denied")


def _as_bool(value: Any) -> bool:
    return value in (True, 1, "1", "true")


async def list_playlists(session: AsyncSession, *, viewer: User) -> list[PlaylistView]:
    playlists = await repository.visible_playlists(session, viewer.id)
    if not playlists:
        return []
    by_playlist: dict[int, list[Entry]] = {}
    for entry in await repository.entries_of_visible(session, viewer.id):
        by_playlist.setdefault(entry.playlist_id, []).append(entry)
    return [PlaylistView(playlist, owner, by_playlist.get(playlist.id, [])) for playlist, owner in playlists]


async def show_playlist(session: AsyncSession, playlist_id: int, *, viewer: User) -> PlaylistView:
    found = await repository.playlist_with_owner(session, playlist_id)
    if found is None:
        raise playlist_not_found()
    playlist, owner = found
    if not playlist.is_public and playlist.user_id != viewer.id:
        raise _forbidden("view")
    return PlaylistView(playlist, owner, await repository.entries_of(session, playlist.id, viewer.id))


async def create_playlist(session: AsyncSession, *, owner: User, data: Mapping[str, Any]) -> PlaylistView:
    values = validate(data, _playlist_fields(data, partial=False))
    playlist = Playlist(
        name=values["name"],
        description=values["description"],
        is_public=_as_bool(values["is_public"]),
        user_id=owner.id,
    )
    session.add(playlist)
    await session.commit()
    await session.refresh(playlist)  # the stored timestamps (whole seconds in the Laravel schema), as a GET shows them
    return PlaylistView(playlist, owner, [])


async def update_playlist(
    session: AsyncSession, playlist_id: int, *, viewer: User, data: Mapping[str, Any]
) -> PlaylistView:
    playlist = await _owned(session, playlist_id, viewer, action="update")
    values = validate(data, _playlist_fields(data, partial=True))
    if "name" in data:
        playlist.name = values["name"]
    if "description" in data:
        playlist.description = values["description"]
    if "is_public" in data:
        playlist.is_public = _as_bool(values["is_public"])
    await session.commit()
    await session.refresh(playlist)
    return PlaylistView(playlist, viewer, await repository.entries_of(session, playlist.id, viewer.id))


async def delete_playlist(session: AsyncSession, playlist_id: int, *, viewer: User) -> None:
    await _owned(session, playlist_id, viewer, action="delete")
    await repository.delete_playlist(session, playlist_id)
    await session.commit()


async def add_track(
    session: AsyncSession, playlist_id: int, *, viewer: User, data: Mapping[str, Any]
) -> tuple[uuid.UUID, int]:
    """Insert a track at ``position`` (default: the end); return the track id and the position it got."""
    playlist = await _owned(session, playlist_id, viewer, action="modify", for_update=True)
    track_id, requested = await _validated_track_input(session, data)
    if await repository.contains_track(session, playlist.id, track_id):
        raise _duplicate_track()
    count = await repository.entry_count(session, playlist.id)
    position = count if requested is None else min(requested, count)
    await repository.shift_positions(session, playlist.id, from_position=position, by=1)
    session.add(PlaylistTrack(playlist_id=playlist.id, track_id=track_id, position=position))
    try:
        await session.commit()
    except IntegrityError:  # a concurrent request added the same track, or the track was deleted meanwhile
        await session.rollback()
        if await repository.contains_track(session, playlist.id, track_id):
            raise _duplicate_track() from None
        raise ValidationFailed({"track_id": [TRACK_ID_INVALID]}) from None
    return track_id, position


async def remove_track(session: AsyncSession, playlist_id: int, *, viewer: User, track_id: uuid.UUID | None) -> None:
    playlist = await _owned(session, playlist_id, viewer, action="modify", for_update=True)
    removed_at = await repository.remove_entry(session, playlist.id, track_id) if track_id else None
    if removed_at is None:
        raise NotFound("Track not found in playlist", error="Track not in playlist")
    await repository.shift_positions(session, playlist.id, from_position=removed_at + 1, by=-1)
    await session.commit()


async def _owned(
    session: AsyncSession, playlist_id: int, viewer: User, *, action: str, for_update: bool = False
) -> Playlist:
    playlist = await repository.get_playlist(session, playlist_id, for_update=for_update)
    if playlist is None:
        raise playlist_not_found()
    if playlist.user_id != viewer.id:
        raise _forbidden(action)
    return playlist


def _playlist_fields(data: Mapping[str, Any], *, partial: bool) -> dict[str, Field]:
    """The rules for this request. ``partial`` is Laravel's "sometimes" (update: only the fields sent are checked).
    A field that is sent must have a value unless it is nullable (``is_public: null`` is refused)."""
    return {
        name: Field(spec.rules, required=(spec.required and not partial) or (name in data and name not in NULLABLE))
        for name, spec in PLAYLIST_FIELDS.items()
    }


async def _validated_track_input(session: AsyncSession, data: Mapping[str, Any]) -> tuple[uuid.UUID, int | None]:
    """``track_id`` (a UUID of an existing track) and ``position`` (int >= 0), all errors reported together."""
    errors: dict[str, list[str]] = {}
    values: dict[str, Any] = {}
    for name, spec in ADD_TRACK_FIELDS.items():
        try:
            values.update(validate(data, {name: spec}))
        except ValidationFailed as exc:
            errors.update(exc.errors or {})
    track_id = None if "track_id" in errors else uuid.UUID(str(values["track_id"]))
    if track_id is not None and not await repository.track_exists(session, track_id):
        errors["track_id"] = [TRACK_ID_INVALID]
    if errors or track_id is None:
        raise ValidationFailed({field: errors[field] for field in ADD_TRACK_FIELDS if field in errors})
    position = values["position"]
    return track_id, None if position is None else int(position)


def _duplicate_track() -> Conflict:
    return Conflict("Track is already in playlist", error="Duplicate track")
