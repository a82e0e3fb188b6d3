"""Playlist queries. A list of playlists costs two statements whatever the number of playlists and tracks: the
playlists with their owners, then every entry of those playlists with its track, uploader, genre and the viewer's
vote flag."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Select, delete, exists, func, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload

from spotik.auth.models import User
from spotik.playlists.models import Playlist, PlaylistTrack
from spotik.tracks.models import Track, TrackVote


@dataclass(frozen=True, slots=True)
class Entry:
    """One track of a playlist, as shown to one viewer."""

    playlist_id: int
    position: int
    track: Track
    has_voted: bool


def visible_to(viewer_id: uuid.UUID) -> ColumnElement[bool]:
    return or_(Playlist.user_id == viewer_id, Playlist.is_public == true())


async def visible_playlists(session: AsyncSession, viewer_id: uuid.UUID) -> Sequence[tuple[Playlist, User]]:
    """The viewer's own playlists and every public one, newest first."""
    statement = (
        select(Playlist, User)
        .join(User, User.id == Playlist.user_id)
        .where(visible_to(viewer_id))
        .order_by(Playlist.created_at.desc(), Playlist.id.desc())
    )
    return (await session.execute(statement)).all()


async def playlist_with_owner(session: AsyncSession, playlist_id: int) -> tuple[Playlist, User] | None:
    statement = select(Playlist, User).join(User, User.id == Playlist.user_id).where(Playlist.id == playlist_id)
    row = (await session.execute(statement)).first()
    return None if row is None else (row[0], row[1])


async def get_playlist(session: AsyncSession, playlist_id: int, *, for_update: bool = False) -> Playlist | None:
    statement = select(Playlist).where(Playlist.id == playlist_id)
    if for_update:  # serialises concurrent edits of one playlist's positions (a no-op on SQLite, which has one writer)
        statement = statement.with_for_update()
    return await session.scalar(statement)


def _entries(viewer_id: uuid.UUID) -> Select[int, int, Track, bool]:
    voted = (
        exists()
        .where(TrackVote.track_id == Track.id, TrackVote.user_id == viewer_id)
        .correlate(Track)
        .label("has_voted")
    )
    return (
        select(PlaylistTrack.playlist_id, PlaylistTrack.position, Track, voted)
        .join(Track, Track.id == PlaylistTrack.track_id)
        .options(joinedload(Track.uploader), joinedload(Track.genre))
        .order_by(PlaylistTrack.playlist_id, PlaylistTrack.position, PlaylistTrack.id)
    )


async def entries_of_visible(session: AsyncSession, viewer_id: uuid.UUID) -> Sequence[Entry]:
    """Entries of every playlist the viewer can see (same filter as ``visible_playlists``, as a subquery)."""
    visible_ids = select(Playlist.id).where(visible_to(viewer_id))
    statement = _entries(viewer_id).where(PlaylistTrack.playlist_id.in_(visible_ids))
    return [Entry(*row) for row in (await session.execute(statement))]


async def entries_of(session: AsyncSession, playlist_id: int, viewer_id: uuid.UUID) -> Sequence[Entry]:
    statement = _entries(viewer_id).where(PlaylistTrack.playlist_id == playlist_id)
    return [Entry(*row) for row in (await session.execute(statement))]


async def track_exists(session: AsyncSession, track_id: uuid.UUID) -> bool:
    return bool(await session.scalar(select(exists().where(Track.id == track_id))))


async def contains_track(session: AsyncSession, playlist_id: int, track_id: uuid.UUID) -> bool:
    condition = exists().where(PlaylistTrack.playlist_id == playlist_id, PlaylistTrack.track_id == track_id)
    return bool(await session.scalar(select(condition)))


async def entry_count(session: AsyncSession, playlist_id: int) -> int:
    statement = select(func.count()).select_from(PlaylistTrack).where(PlaylistTrack.playlist_id == playlist_id)
    return int(await session.scalar(statement) or 0)


async def shift_positions(session: AsyncSession, playlist_id: int, *, from_position: int, by: int) -> None:
    """Move every entry at ``from_position`` or later by ``by`` places."""
    await session.execute(
        update(PlaylistTrack)
        .where(PlaylistTrack.playlist_id == playlist_id, PlaylistTrack.position >= from_position)
        .values(position=PlaylistTrack.position + by)
    )


async def remove_entry(session: AsyncSession, playlist_id: int, track_id: uuid.UUID) -> int | None:
    """Delete the entry; return the position it had, or None when the track was not in the playlist."""
    entry = await session.scalar(
        select(PlaylistTrack).where(PlaylistTrack.playlist_id == playlist_id, PlaylistTrack.track_id == track_id)
    )
    if entry is None:
        return None
    await session.execute(delete(PlaylistTrack).where(PlaylistTrack.id == entry.id))
    return entry.position


async def delete_playlist(session: AsyncSession, playlist_id: int) -> None:
    # Entries go with it (ON DELETE CASCADE); deleting them explicitly keeps that true on a database without FKs.
    await session.execute(delete(PlaylistTrack).where(PlaylistTrack.playlist_id == playlist_id))
    await session.execute(delete(Playlist).where(Playlist.id == playlist_id))
