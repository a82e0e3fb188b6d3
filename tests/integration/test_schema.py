"""The migrated schema is the Laravel one (plus the additions of docs/decisions.md#d7) and matches the ORM models, on
both databases."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, delete, inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from spotik.db.base import utcnow
from spotik.db.models import Base, Room, RoomParticipant, Track, TrackVote, User
from spotik.settings import Settings

EXPECTED_COLUMNS = {
    "users": {"id", "username", "email", "password_hash", "created_at", "updated_at"},
    "rooms": {
        "id",
        "name",
        "administrator_id",
        "current_track_id",
        "playback_started_at",
        "playback_paused_at",
        "is_playing",
        "created_at",
        "updated_at",
    },
    "tracks": {
        "id",
        "room_id",
        "uploader_id",
        "filename",
        "original_name",
        "file_path",
        "duration_seconds",
        "file_size_bytes",
        "mime_type",
        "vote_score",
        "genre_id",
        "played_at",
        "created_at",
        "updated_at",
    },
    "room_participants": {"id", "room_id", "user_id", "joined_at"},
    "track_votes": {"id", "track_id", "user_id", "created_at"},
    "jwt_blacklist": {"jti", "expires_at", "created_at", "updated_at"},
    "genres": {"id", "name", "description", "color", "created_at", "updated_at"},
    "playlists": {"id", "name", "description", "is_public", "user_id", "created_at", "updated_at"},
    "playlist_tracks": {"id", "playlist_id", "track_id", "position", "created_at", "updated_at"},
}
PERFORMANCE_INDEXES = {
    "tracks": {
        "idx_tracks_room_score",
        "idx_tracks_queue_order",
        "idx_tracks_uploader_time",
        "idx_tracks_file_path",
        "idx_tracks_voted",
        "tracks_filename_unique",
    },
    "track_votes": {"idx_votes_track_time", "idx_votes_user_time"},
    "room_participants": {"idx_participants_room_time", "idx_participants_user_time"},
    "rooms": {"idx_rooms_time_name", "idx_rooms_playing_updated", "idx_rooms_current_track", "idx_rooms_active"},
    "users": {"idx_users_email", "idx_users_username", "idx_users_created"},
}


@pytest.fixture
async def engine(settings: Settings) -> Any:
    engine = create_async_engine(settings.sqlalchemy_url)
    if settings.is_sqlite:
        from sqlalchemy import event

        from spotik.db.engine import _sqlite_pragmas

        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    yield engine
    await engine.dispose()


def _describe(connection: Connection) -> dict[str, Any]:
    inspector = inspect(connection)
    return {
        table: {
            "columns": {c["name"] for c in inspector.get_columns(table)},
            "indexes": {i["name"] for i in inspector.get_indexes(table)},
            "uniques": {tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)}
            | {tuple(i["column_names"]) for i in inspector.get_indexes(table) if i["unique"]},
            "fks": {
                (tuple(f["constrained_columns"]), f["referred_table"], (f.get("options") or {}).get("ondelete"))
                for f in inspector.get_foreign_keys(table)
            },
        }
        for table in inspector.get_table_names()
        if table != "alembic_version"
    }


async def test_tables_columns_and_indexes(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        schema = await connection.run_sync(_describe)
    assert {table: info["columns"] for table, info in schema.items()} == EXPECTED_COLUMNS
    for table, names in PERFORMANCE_INDEXES.items():
        assert names <= schema[table]["indexes"], (table, names - schema[table]["indexes"])
    assert ("username",) in schema["users"]["uniques"] and ("email",) in schema["users"]["uniques"]
    assert ("room_id", "user_id") in schema["room_participants"]["uniques"]
    assert ("track_id", "user_id") in schema["track_votes"]["uniques"]
    assert ("playlist_id", "track_id") in schema["playlist_tracks"]["uniques"]
    fks = {
        (t, cols, ref, (ondelete or "").upper()) for t, info in schema.items() for cols, ref, ondelete in info["fks"]
    }
    assert {
        ("rooms", ("administrator_id",), "users", "CASCADE"),
        ("rooms", ("current_track_id",), "tracks", "SET NULL"),
        ("tracks", ("room_id",), "rooms", "CASCADE"),
        ("tracks", ("uploader_id",), "users", "CASCADE"),
        ("tracks", ("genre_id",), "genres", "SET NULL"),
        ("room_participants", ("room_id",), "rooms", "CASCADE"),
        ("room_participants", ("user_id",), "users", "CASCADE"),
        ("track_votes", ("track_id",), "tracks", "CASCADE"),
        ("track_votes", ("user_id",), "users", "CASCADE"),
        ("playlists", ("user_id",), "users", "CASCADE"),
        ("playlist_tracks", ("playlist_id",), "playlists", "CASCADE"),
        ("playlist_tracks", ("track_id",), "tracks", "CASCADE"),
    } <= fks


async def test_models_match_the_migrations(engine: AsyncEngine) -> None:
    def diff(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        return compare_metadata(context, Base.metadata)

    async with engine.connect() as connection:
        differences = await connection.run_sync(diff)
        if connection.dialect.name == "sqlite":
            # SQLite cannot reflect expression indexes (DESC / partial), so those two show up as add+remove there.
            differences = [d for d in differences if d[1].name not in ("idx_rooms_active", "idx_tracks_voted")]
    assert differences == []


async def test_seeded_genres(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        names = (await connection.execute(text("SELECT name FROM genres ORDER BY name"))).scalars().all()
    assert names == sorted(
        ["Pop", "Rock", "Hip Hop", "Electronic", "Jazz", "Classical", "R&B", "Country", "Reggae", "Alternative"]
    )


async def test_unique_constraints_and_cascades(engine: AsyncEngine) -> None:
    from sqlalchemy.ext.asyncio import async_sessionmaker

    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions() as session:
        admin = User(username="admin", email="admin@example.com", password_hash="x")
        voter = User(username="voter", email="voter@example.com", password_hash="x")
        session.add_all([admin, voter])
        await session.flush()
        room = Room(name="Room", administrator_id=admin.id)
        session.add(room)
        await session.flush()
        track = Track(
            room_id=room.id,
            uploader_id=admin.id,
            filename=f"{uuid.uuid4()}.mp3",
            original_name="a.mp3",
            file_path="tracks/a.mp3",
            duration_seconds=3,
            file_size_bytes=10,
            mime_type="audio/mpeg",
        )
        session.add(track)
        await session.flush()
        room.current_track_id = track.id
        session.add_all(
            [RoomParticipant(room_id=room.id, user_id=voter.id), TrackVote(track_id=track.id, user_id=voter.id)]
        )
        await session.commit()
        room_id, track_id, admin_id, voter_id = room.id, track.id, admin.id, voter.id

        session.add(TrackVote(track_id=track_id, user_id=voter_id))
        with pytest.raises(IntegrityError):
            await session.commit()
        await session.rollback()
        session.add(RoomParticipant(room_id=room_id, user_id=voter_id, joined_at=utcnow()))
        with pytest.raises(IntegrityError):
            await session.commit()
        await session.rollback()

        await session.execute(delete(Track).where(Track.id == track_id))
        await session.commit()
        assert (await session.scalar(select(Room.current_track_id).where(Room.id == room_id))) is None
        assert (await session.scalar(select(TrackVote.id))) is None

        await session.execute(delete(User).where(User.id == admin_id))
        await session.commit()
        assert (await session.scalar(select(Room.id))) is None
        assert (await session.scalar(select(RoomParticipant.id))) is None
