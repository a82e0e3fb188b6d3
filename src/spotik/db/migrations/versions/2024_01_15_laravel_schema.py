"""The Laravel schema (its latest version): users, rooms, tracks, memberships, votes, JWT blacklist, genres, playlists.

Frozen copy of the Laravel migrations ``2024_01_15_*`` … ``2026_01_24_192025`` including the performance indexes of
``2024_01_16_120000``. Every table, index and foreign key is created only when it is missing, so pointing Spotik at a
database that Laravel created (fully or partly) adopts it: nothing that exists is touched, and only what is missing
— at least the later additive revisions — is applied.

Revision ID: 2024_01_15_laravel_schema
Revises:
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

revision = "2024_01_15_laravel_schema"
down_revision = None
branch_labels = None
depends_on = None

log = logging.getLogger("spotik.migrations")

LARAVEL_TABLES = ("users", "rooms", "tracks", "room_participants", "track_votes")

# The genres Laravel's GenreSeeder inserts, inserted here when absent (the one copy of this list).
GENRES = (
    ("Pop", "Popular music with catchy melodies and broad appeal", "#ff6b6b"),
    ("Rock", "Guitar-driven music with strong rhythms", "#4ecdc4"),
    ("Hip Hop", "Rhythmic music with rap vocals and beats", "#45b7d1"),
    ("Electronic", "Music produced with electronic instruments and technology", "#96ceb4"),
    ("Jazz", "Improvisational music with complex harmonies", "#feca57"),
    ("Classical", "Traditional orchestral and chamber music", "#ff9ff3"),
    ("R&B", "Rhythm and blues with soulful vocals", "#54a0ff"),
    ("Country", "American folk music with storytelling lyrics", "#5f27cd"),
    ("Reggae", "Jamaican music with offbeat rhythms", "#00d2d3"),
    ("Alternative", "Non-mainstream rock and indie music", "#ff6348"),
)


def _ts() -> sa.types.TypeEngine[Any]:
    return sa.DateTime().with_variant(postgresql.TIMESTAMP(precision=0), "postgresql")


def _bigint() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _tables(sqlite: bool) -> sa.MetaData:
    md = sa.MetaData()
    uuid = sa.Uuid(as_uuid=True)
    sa.Table(
        "users",
        md,
        sa.Column("id", uuid, primary_key=True),
        sa.Column("username", sa.String(50), nullable=False),
        sa.Column("email", sa.String(255), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created_at", _ts()),
        sa.Column("updated_at", _ts()),
        sa.UniqueConstraint("username", name="users_username_unique"),
        sa.UniqueConstraint("email", name="users_email_unique"),
        sa.Index("users_username_index", "username"),
        sa.Index("users_email_index", "email"),
    )
    room_fk = (
        [
            sa.ForeignKeyConstraint(
                ["current_track_id"], ["tracks.id"], ondelete="SET NULL", name="rooms_current_track_id_foreign"
            )
        ]
        if sqlite
        else []
    )
    sa.Table(
        "rooms",
        md,
        sa.Column("id", uuid, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("administrator_id", uuid, nullable=False),
        sa.Column("current_track_id", uuid, nullable=True),
        sa.Column("playback_started_at", _ts()),
        sa.Column("playback_paused_at", _ts()),
        sa.Column("is_playing", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", _ts()),
        sa.Column("updated_at", _ts()),
        sa.ForeignKeyConstraint(
            ["administrator_id"], ["users.id"], ondelete="CASCADE", name="rooms_administrator_id_foreign"
        ),
        *room_fk,
        sa.Index("rooms_name_index", "name"),
        sa.Index("rooms_administrator_id_index", "administrator_id"),
        sa.Index("rooms_current_track_id_index", "current_track_id"),
        sa.Index("rooms_is_playing_index", "is_playing"),
    )
    sa.Table(
        "genres",
        md,
        sa.Column("id", _bigint(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.String(500), nullable=True),
        sa.Column("color", sa.String(7), nullable=False, server_default=sa.text("'#6366f1'")),
        sa.Column("created_at", _ts()),
        sa.Column("updated_at", _ts()),
        sa.UniqueConstraint("name", name="genres_name_unique"),
    )
    sa.Table(
        "tracks",
        md,
        sa.Column("id", uuid, primary_key=True),
        sa.Column("room_id", uuid, nullable=False),
        sa.Column("uploader_id", uuid, nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("original_name", sa.String(255), nullable=False),
        sa.Column("file_path", sa.String(500), nullable=False),
        sa.Column("duration_seconds", sa.Integer(), nullable=False),
        sa.Column("file_size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("mime_type", sa.String(100), nullable=False),
        sa.Column("vote_score", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("created_at", _ts()),
        sa.Column("updated_at", _ts()),
        sa.Column("genre_id", _bigint(), nullable=True),
        sa.ForeignKeyConstraint(["room_id"], ["rooms.id"], ondelete="CASCADE", name="tracks_room_id_foreign"),
        sa.ForeignKeyConstraint(["uploader_id"], ["users.id"], ondelete="CASCADE", name="tracks_uploader_id_foreign"),
        sa.ForeignKeyConstraint(["genre_id"], ["genres.id"], ondelete="SET NULL", name="tracks_genre_id_foreign"),
        sa.Index("idx_tracks_room_score", "room_id", "vote_score", "created_at"),
        sa.Index("tracks_room_id_index", "room_id"),
        sa.Index("tracks_uploader_id_index", "uploader_id"),
        sa.Index("tracks_vote_score_index", "vote_score"),
        sa.Index("tracks_genre_id_index", "genre_id"),
    )
    sa.Table(
        "room_participants",
        md,
        sa.Column("id", uuid, primary_key=True),
        sa.Column("room_id", uuid, nullable=False),
        sa.Column("user_id", uuid, nullable=False),
        sa.Column("joined_at", _ts(), nullable=False, server_default=sa.func.current_timestamp()),
        sa.ForeignKeyConstraint(
            ["room_id"], ["rooms.id"], ondelete="CASCADE", name="room_participants_room_id_foreign"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], ondelete="CASCADE", name="room_participants_user_id_foreign"
        ),
        sa.UniqueConstraint("room_id", "user_id", name="room_participants_room_id_user_id_unique"),
        sa.Index("room_participants_room_id_index", "room_id"),
        sa.Index("room_participants_user_id_index", "user_id"),
    )
    sa.Table(
        "track_votes",
        md,
        sa.Column("id", uuid, primary_key=True),
        sa.Column("track_id", uuid, nullable=False),
        sa.Column("user_id", uuid, nullable=False),
        sa.Column("created_at", _ts(), nullable=False, server_default=sa.func.current_timestamp()),
        sa.ForeignKeyConstraint(["track_id"], ["tracks.id"], ondelete="CASCADE", name="track_votes_track_id_foreign"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE", name="track_votes_user_id_foreign"),
        sa.UniqueConstraint("track_id", "user_id", name="track_votes_track_id_user_id_unique"),
        sa.Index("track_votes_track_id_index", "track_id"),
        sa.Index("track_votes_user_id_index", "user_id"),
    )
    sa.Table(
        "jwt_blacklist",
        md,
        sa.Column("jti", sa.String(255), primary_key=True),
        sa.Column("expires_at", _ts(), nullable=False),
        sa.Column("created_at", _ts()),
        sa.Column("updated_at", _ts()),
        sa.Index("jwt_blacklist_expires_at_index", "expires_at"),
    )
    sa.Table(
        "playlists",
        md,
        sa.Column("id", _bigint(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("is_public", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("user_id", uuid, nullable=False),
        sa.Column("created_at", _ts()),
        sa.Column("updated_at", _ts()),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE", name="playlists_user_id_foreign"),
        sa.Index("playlists_user_id_created_at_index", "user_id", "created_at"),
    )
    sa.Table(
        "playlist_tracks",
        md,
        sa.Column("id", _bigint(), primary_key=True, autoincrement=True),
        sa.Column("playlist_id", sa.BigInteger(), nullable=False),
        sa.Column("track_id", uuid, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("created_at", _ts()),
        sa.Column("updated_at", _ts()),
        sa.ForeignKeyConstraint(
            ["playlist_id"], ["playlists.id"], ondelete="CASCADE", name="playlist_tracks_playlist_id_foreign"
        ),
        sa.ForeignKeyConstraint(
            ["track_id"], ["tracks.id"], ondelete="CASCADE", name="playlist_tracks_track_id_foreign"
        ),
        sa.UniqueConstraint("playlist_id", "track_id", name="playlist_tracks_playlist_id_track_id_unique"),
        sa.Index("playlist_tracks_playlist_id_position_index", "playlist_id", "position"),
    )
    return md


# (table, index name, columns) of 2024_01_16_120000_add_performance_indexes; PG partial indexes below.
PERFORMANCE_INDEXES = (
    ("tracks", "idx_tracks_queue_order", ("room_id", "vote_score", "created_at")),
    ("tracks", "idx_tracks_uploader_time", ("uploader_id", "created_at")),
    ("tracks", "idx_tracks_file_path", ("file_path",)),
    ("track_votes", "idx_votes_track_time", ("track_id", "created_at")),
    ("track_votes", "idx_votes_user_time", ("user_id", "created_at")),
    ("room_participants", "idx_participants_room_time", ("room_id", "joined_at")),
    ("room_participants", "idx_participants_user_time", ("user_id", "joined_at")),
    ("rooms", "idx_rooms_time_name", ("created_at", "name")),
    ("rooms", "idx_rooms_playing_updated", ("is_playing", "updated_at")),
    ("rooms", "idx_rooms_current_track", ("current_track_id",)),
    ("users", "idx_users_email", ("email",)),
    ("users", "idx_users_username", ("username",)),
    ("users", "idx_users_created", ("created_at",)),
)
PARTIAL_INDEXES = (
    ("idx_rooms_active", "rooms", "(updated_at DESC) WHERE is_playing = {true}"),
    ("idx_tracks_voted", "tracks", "(room_id, vote_score DESC, created_at ASC) WHERE vote_score > 0"),
)


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    inspector = sa.inspect(bind)
    existing = set(inspector.get_table_names())
    if existing.issuperset(LARAVEL_TABLES):
        log.info("existing Laravel schema found: adopting it, creating only what is missing")
        context.config.attributes["adopted_laravel_schema"] = True

    md = _tables(sqlite)
    for table in md.tables.values():  # declaration order; sorted_tables cannot order the rooms<->tracks cycle
        if table.name in existing:
            have = {ix["name"] for ix in inspector.get_indexes(table.name)}
            for index in table.indexes:
                if index.name not in have:
                    index.create(bind)
        else:
            table.create(bind)

    inspector = sa.inspect(bind)
    if not sqlite:
        room_fks = {fk["name"] for fk in inspector.get_foreign_keys("rooms")}
        if "rooms_current_track_id_foreign" not in room_fks:
            op.create_foreign_key(
                "rooms_current_track_id_foreign", "rooms", "tracks", ["current_track_id"], ["id"], ondelete="SET NULL"
            )

    for table_name, name, columns in PERFORMANCE_INDEXES:
        if name not in {ix["name"] for ix in inspector.get_indexes(table_name)}:
            op.create_index(name, table_name, list(columns))
    true = "1" if sqlite else "true"
    for name, table_name, definition in PARTIAL_INDEXES:
        if name not in {ix["name"] for ix in inspector.get_indexes(table_name)}:
            op.execute(f"CREATE INDEX {name} ON {table_name} {definition.format(true=true)}")

    genres = md.tables["genres"]
    have_names = set(bind.execute(sa.select(genres.c.name)).scalars())
    now = sa.func.current_timestamp()
    for name, description, color in GENRES:
        if name not in have_names:
            bind.execute(
                genres.insert().values(name=name, description=description, color=color, created_at=now, updated_at=now)
            )


def downgrade() -> None:
    raise RuntimeError("the Laravel baseline is not reversible: drop the database instead")
