"""The check every fault scenario ends with (docs/reliability.md#the-consistency-check).

1. Every acknowledged write is there: a track row (and its audio file) for each 201 upload, a vote row for each 200
   vote, a membership for each 200 join or 201 room.
2. ``tracks.vote_score`` equals the number of its vote rows, for every track.
3. Storage and rows agree: no audio file (temporary ``.upload-*.part`` files included) without a row, no row without
   its file; no track cover without its track.
4. Every room's playback state is one of idle / playing / paused, with its current track in the room and unplayed;
   a playing room's track has not ended more than ``stale_after`` seconds ago (the scheduler keeps up).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from spotik.settings import normalise_database_url
from tests.faults.load import Acknowledged


@dataclass(frozen=True)
class Consistency:
    tracks: int
    votes: int
    memberships: int
    rooms: int
    files: int
    acknowledged: int

    def describe(self) -> str:
        return (
            f"{self.acknowledged} acknowledged writes all found; {self.tracks} tracks, {self.votes} votes, "
            f"{self.memberships} memberships, {self.rooms} rooms, {self.files} audio files"
        )


def _uuid(value: Any) -> str:
    return str(uuid.UUID(str(value)))  # SQLite keeps 32 hex digits, PostgreSQL a uuid


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite returns text
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


async def check_consistency(
    database_url: str,
    audio_root: Path,
    public_root: Path,
    acknowledged: Acknowledged,
    *,
    stale_after: float = 15.0,
) -> Consistency:
    engine = create_async_engine(normalise_database_url(database_url))
    try:
        async with engine.connect() as connection:
            tracks = (
                await connection.execute(
                    text("SELECT id, room_id, file_path, vote_score, played_at, duration_seconds FROM tracks")
                )
            ).all()
            votes = (await connection.execute(text("SELECT track_id, user_id FROM track_votes"))).all()
            members = (await connection.execute(text("SELECT room_id, user_id FROM room_participants"))).all()
            rooms = (
                await connection.execute(
                    text("SELECT id, current_track_id, is_playing, playback_started_at, playback_paused_at FROM rooms")
                )
            ).all()
    finally:
        await engine.dispose()

    problems: list[str] = []
    by_id = {_uuid(row.id): row for row in tracks}
    vote_rows = {(_uuid(row.track_id), _uuid(row.user_id)) for row in votes}
    member_rows = {(_uuid(row.room_id), _uuid(row.user_id)) for row in members}

    # 1. acknowledged writes
    for track_id, room_id in acknowledged.tracks.items():
        row = by_id.get(track_id)
        if row is None:
            problems.append(f"acknowledged upload {track_id} has no row")
        elif _uuid(row.room_id) != room_id:
            problems.append(f"track {track_id} is in room {row.room_id}, not {room_id}")
    problems += [f"acknowledged vote {vote} has no row" for vote in sorted(acknowledged.votes - vote_rows)]
    problems += [
        f"acknowledged membership {member} has no row" for member in sorted(acknowledged.memberships - member_rows)
    ]

    # 2. scores
    counts: dict[str, int] = {}
    for track_id, _user in vote_rows:
        counts[track_id] = counts.get(track_id, 0) + 1
    for track_id, row in by_id.items():
        if row.vote_score != counts.get(track_id, 0):
            problems.append(f"track {track_id}: vote_score {row.vote_score} but {counts.get(track_id, 0)} vote rows")

    # 3. files and rows
    on_disk = {
        path.relative_to(audio_root).as_posix() for path in audio_root.rglob("*") if path.is_file() or path.is_symlink()
    }
    expected = {row.file_path for row in tracks}
    problems += [f"audio file without a row: {name}" for name in sorted(on_disk - expected)]
    problems += [f"row without its audio file: {name}" for name in sorted(expected - on_disk)]
    covers = public_root / "track_covers"
    if covers.is_dir():
        for cover in covers.iterdir():
            if cover.stem not in by_id:
                problems.append(f"track cover without a track: {cover.name}")

    # 4. playback states
    now = datetime.now(UTC)
    for room in rooms:
        room_id = _uuid(room.id)
        current = _uuid(room.current_track_id) if room.current_track_id is not None else None
        started, paused = _utc(room.playback_started_at), _utc(room.playback_paused_at)
        playing = bool(room.is_playing)
        if current is None:
            if playing or started is not None or paused is not None:
                problems.append(f"room {room_id}: no current track but playing={playing} started={started}")
            continue
        row = by_id.get(current)
        if row is None or _uuid(row.room_id) != room_id:
            problems.append(f"room {room_id}: current track {current} is not a track of the room")
            continue
        if row.played_at is not None:
            problems.append(f"room {room_id}: current track {current} is marked played")
        if started is None:
            problems.append(f"room {room_id}: a current track without a start instant")
        elif playing:
            if paused is not None:
                problems.append(f"room {room_id}: playing and paused at once")
            overdue = (now - started).total_seconds() - row.duration_seconds
            if overdue > stale_after:
                problems.append(f"room {room_id}: its track ended {overdue:.1f}s ago and was not advanced")
        elif paused is None:
            problems.append(f"room {room_id}: neither playing nor paused, yet a current track")

    assert not problems, "inconsistent after the fault:\n" + "\n".join(problems)
    return Consistency(
        tracks=len(tracks),
        votes=len(vote_rows),
        memberships=len(member_rows),
        rooms=len(rooms),
        files=len(on_disk),
        acknowledged=acknowledged.count,
    )
