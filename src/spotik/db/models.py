"""Imports every mapped class so that ``Base.metadata`` is complete (for Alembic and the schema tests)."""

from spotik.auth.models import JwtBlacklist, User
from spotik.db.base import Base
from spotik.genres.models import Genre
from spotik.playlists.models import Playlist, PlaylistTrack
from spotik.rooms.models import Room, RoomParticipant
from spotik.tracks.models import Track, TrackVote

__all__ = [
    "Base",
    "Genre",
    "JwtBlacklist",
    "Playlist",
    "PlaylistTrack",
    "Room",
    "RoomParticipant",
    "Track",
    "TrackVote",
    "User",
]
