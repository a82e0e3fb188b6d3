"""Spotik's additive changes to the Laravel schema (docs/decisions.md#d7).

* ``tracks.played_at``: a played track leaves the queue (docs/decisions.md#d5).
* ``rooms.playback_started_at`` / ``playback_paused_at`` at microsecond precision (PostgreSQL; SQLite already
  stores what it is given).
* a unique index on ``tracks.filename``.

Revision ID: 2026_11_25_spotik_additions
Revises: 2024_01_15_laravel_schema
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "2026_11_25_spotik_additions"
down_revision = "2024_01_15_laravel_schema"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    precise = sa.DateTime().with_variant(postgresql.TIMESTAMP(precision=6), "postgresql")
    if "played_at" not in {column["name"] for column in inspector.get_columns("tracks")}:
        op.add_column("tracks", sa.Column("played_at", precise, nullable=True))
    if bind.dialect.name == "postgresql":
        for column in ("playback_started_at", "playback_paused_at"):
            op.alter_column("rooms", column, type_=postgresql.TIMESTAMP(precision=6), existing_nullable=True)
    if "tracks_filename_unique" not in {ix["name"] for ix in inspector.get_indexes("tracks")}:
        op.create_index("tracks_filename_unique", "tracks", ["filename"], unique=True)


def downgrade() -> None:
    op.drop_index("tracks_filename_unique", table_name="tracks")
    if op.get_bind().dialect.name == "postgresql":
        for column in ("playback_started_at", "playback_paused_at"):
            op.alter_column("rooms", column, type_=postgresql.TIMESTAMP(precision=0), existing_nullable=True)
    with op.batch_alter_table("tracks") as batch:
        batch.drop_column("played_at")
