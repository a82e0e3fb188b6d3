"""Tracks, votes and audio files (docs/api.md#tracks, docs/api.md#votes, docs/api.md#audio-streaming,
docs/api.md#queue-order, docs/decisions.md#d4, docs/decisions.md#d8).

Rules live here; queries in ``spotik.tracks.repository``; the HTTP surface (parsing, status codes, the streaming
multipart reader) in the router and ``spotik.tracks.uploads``. Every error is in envelope B, the track family's.
Events are published on the bus after the change is committed, never before.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import anyio
import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from spotik.auth.models import User
from spotik.auth.schemas import user_full
from spotik.covers.storage import (
    ACCEPTED_IMAGE_TYPES,
    COVER_EXTENSIONS,
    MAX_COVER_BYTES,
    ROOM_COVERS,
    TRACK_COVERS,
    cover_urls,
    delete_covers,
    image_type,
)
from spotik.db.base import utcnow, uuid7
from spotik.errors import ApiError, Envelope, Forbidden, NotFound, ValidationFailed
from spotik.events import DomainEvent, EventBus
from spotik.genres.models import Genre
from spotik.playback.service import start_if_idle, stop_for_removed_track
from spotik.reads import TRACK_QUEUE, Reads, room_tag, shared_tag, voter_tag
from spotik.rooms.models import Room
from spotik.rooms.repository import get_room, is_member
from spotik.settings import Settings
from spotik.timefmt import iso, now_iso
from spotik.tracks import repository
from spotik.tracks.audio import AudioInfo, InvalidAudio, probe
from spotik.tracks.models import Track
from spotik.tracks.repository import StoredFiles
from spotik.tracks.schemas import formatted_file_size, queue_item, track_brief
from spotik.tracks.streaming import resolve_inside
from spotik.tracks.uploads import BodyTooLarge, FileRule, FileTooLarge, ReceivedFile, ReceivedForm, UploadError
from spotik.validation import integer, parse_uuid

VIEW_FORBIDDEN: Final = "You must be a participant of this room to view tracks"
UPLOAD_FORBIDDEN: Final = "You must be a participant of this room to upload tracks"
VOTE_FORBIDDEN: Final = "You must be a participant of this room to vote"
UNVOTE_FORBIDDEN: Final = "You must be a participant of this room to remove votes"
STREAM_FORBIDDEN: Final = "You must be a participant of this room to stream tracks"
DELETE_FORBIDDEN: Final = "You can only delete tracks you uploaded or be a room administrator"
NOT_IN_ROOM: Final = "Track does not belong to this room"
INVALID_AUDIO: Final = "Invalid audio file format or corrupted file"

TRACKS_DIR: Final = "tracks"
FORM_OVERHEAD: Final = 1024 * 1024  # multipart headers, boundaries and the small text fields
MAX_NAME_LENGTH: Final = 255  # tracks.original_name is varchar(255)
MAX_SEARCH_LENGTH: Final = 255
SEARCH_LIMIT: Final = 50
MAX_BIGINT: Final = 2**63 - 1
NOT_AN_IMAGE: Final = "The cover image field must be an image."
WRONG_IMAGE_TYPE: Final = f"The cover image field must be a file of type: {', '.join(COVER_EXTENSIONS)}."

log = structlog.get_logger("spotik.tracks")


def _not_found(message: str) -> NotFound:
    return NotFound(message, envelope=Envelope.B)


def _forbidden(message: str) -> Forbidden:
    return Forbidden(message, envelope=Envelope.B)


async def require_member(session: AsyncSession, room_id: uuid.UUID, user_id: uuid.UUID, message: str) -> None:
    if not await is_member(session, room_id, user_id):
        raise _forbidden(message)


async def find_track(session: AsyncSession, track_id: object) -> Track:
    """A track by its id as a client wrote it: an unknown or malformed id is a 404."""
    parsed = parse_uuid(track_id)
    found = await repository.get_track(session, parsed) if parsed else None
    if found is None:
        raise _not_found("Track not found")
    return found


def ensure_in_room(track: Track, room: Room) -> None:
    if track.room_id != room.id:
        raise _not_found(NOT_IN_ROOM)


def voter(user: User) -> dict[str, Any]:
    return {"id": str(user.id), "username": user.username}


async def _track_cover_urls(public_root: Path, track_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str]:
    ids = list(track_ids)
    if not ids:
        return {}
    return await anyio.to_thread.run_sync(cover_urls, public_root, TRACK_COVERS, ids)


# --- the queue -------------------------------------------------------------------------------------------------


async def list_queue(
    session: AsyncSession, reads: Reads, *, room_id: uuid.UUID, user: User, public_root: Path
) -> dict[str, Any]:
    """``GET /api/rooms/{room}/tracks``: one cached queue per room for every member, with the caller's
    ``user_has_voted`` laid over it from their own cached vote set; a fixed number of queries on a miss."""
    member, voted = await standing(session, reads, room_id, user.id)
    if not member:
        raise _forbidden(VIEW_FORBIDDEN)
    items = await shared_queue(session, reads, room_id, public_root)
    for item in items:
        item["user_has_voted"] = item["id"] in voted
    return {"tracks": items, "total_count": len(items)}


async def shared_queue(
    session: AsyncSession, reads: Reads, room_id: uuid.UUID, public_root: Path
) -> list[dict[str, Any]]:
    """The room's queue items as nobody in particular sees them (``user_has_voted`` false); a fresh copy."""

    async def build(own: AsyncSession) -> list[dict[str, Any]]:
        tracks = await repository.queue_tracks(own, room_id)
        covers = await _track_cover_urls(public_root, (track.id for track in tracks))
        return [queue_item(t, user_has_voted=False, cover_url=covers.get(t.id)) for t in tracks]

    tags = (room_tag(room_id), shared_tag(room_id))
    return await reads.through(TRACK_QUEUE, str(room_id), build, session=session, tags=tags)


async def voted_ids(session: AsyncSession, reads: Reads, room_id: uuid.UUID, user_id: uuid.UUID) -> frozenset[str]:
    """Ids of the room's tracks ``user_id`` voted for (cached per room and user, with their membership)."""
    if not reads.cache.enabled:  # uncached, the membership is not worth a query here
        return frozenset(str(track_id) for track_id in await repository.voted_track_ids(session, user_id, room_id))
    return (await standing(session, reads, room_id, user_id))[1]


async def is_viewer(session: AsyncSession, reads: Reads, room_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    """Whether ``user_id`` is a member of the room: from their cached standing, or one query with the cache off."""
    if not reads.cache.enabled:
        return await is_member(session, room_id, user_id)
    return (await standing(session, reads, room_id, user_id))[0]


async def standing(
    session: AsyncSession, reads: Reads, room_id: uuid.UUID, user_id: uuid.UUID
) -> tuple[bool, frozenset[str]]:
    """Whether ``user_id`` is a member of the room, and the ids of its tracks they voted for: one entry per room and
    user, so that a cached queue read asks the database nothing about the room's members. Tagged with the room, it
    goes with every join, leave and deletion of the room; with the voter, with their votes."""

    async def build(own: AsyncSession) -> dict[str, Any]:
        member = await is_member(own, room_id, user_id)
        voted = await repository.voted_track_ids(own, user_id, room_id)
        return {"member": member, "voted": sorted(str(track_id) for track_id in voted)}

    key = f"{room_id}:standing:{user_id}"
    tags = (room_tag(room_id), voter_tag(room_id, user_id))
    entry = await reads.through(TRACK_QUEUE, key, build, session=session, tags=tags)
    return bool(entry["member"]), frozenset(entry["voted"])


async def search(
    session: AsyncSession, *, user: User, text: str | None, public_root: Path
) -> tuple[list[dict[str, Any]], int]:
    """``GET /api/tracks?search=``: tracks of the caller's rooms by name (the client's TrackSearch), at most
    ``SEARCH_LIMIT`` of them, and how many matched. Nothing is listed without a search text (the client never asks
    with fewer than 2 characters).
    """
    query = (text or "").replace("\x00", "").strip()  # PostgreSQL refuses NUL in text
    if len(query) > MAX_SEARCH_LENGTH:
        raise ValidationFailed(
            {"search": [f"The search field must not be greater than {MAX_SEARCH_LENGTH} characters."]},
            envelope=Envelope.B,
        )
    if not query:
        return [], 0
    tracks, total = await repository.search_member_tracks(session, user.id, query, limit=SEARCH_LIMIT)
    voted = await repository.voted_among(session, user.id, [track.id for track in tracks])
    covers = await _track_cover_urls(public_root, (track.id for track in tracks))
    items = [queue_item(t, user_has_voted=t.id in voted, cover_url=covers.get(t.id)) for t in tracks]
    return items, total


# --- upload ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UploadLimits:
    files: Mapping[str, FileRule]
    max_body: int
    max_upload_mb: int


def upload_limits(settings: Settings) -> UploadLimits:
    """Where the upload's files are written while they arrive, and the size limits (from settings)."""
    return UploadLimits(
        files={
            "audio_file": FileRule(settings.audio_root / TRACKS_DIR, settings.max_upload_bytes),
            "cover_image": FileRule(settings.public_root / TRACK_COVERS, MAX_COVER_BYTES),
        },
        max_body=settings.max_upload_bytes + MAX_COVER_BYTES + FORM_OVERHEAD,
        max_upload_mb=settings.max_upload_mb,
    )


def upload_failure(error: UploadError, limits: UploadLimits) -> ApiError:
    """The response to an upload body that was refused while it was being read."""
    if isinstance(error, FileTooLarge) and error.field_name == "cover_image":
        return ValidationFailed(
            {"cover_image": [f"The cover image field must not be greater than {MAX_COVER_BYTES // 1024} kilobytes."]},
            envelope=Envelope.B,
        )
    if isinstance(error, FileTooLarge | BodyTooLarge):
        return ApiError(
            f"The audio file may not be greater than {limits.max_upload_mb} MB.",
            error="File too large",
            status_code=413,
            envelope=Envelope.B,
        )
    return ApiError(
        "The request body is not valid multipart/form-data.",
        error="Malformed upload",
        status_code=400,
        envelope=Envelope.B,
    )


async def prepare_upload(session: AsyncSession, *, room: Room, user: User) -> None:
    """Check membership before a byte of the body is read, then end the read transaction.

    Ending it returns the database connection to the pool while the (possibly slow, up to 50 MB) body arrives.
    """
    await require_member(session, room.id, user.id, UPLOAD_FORBIDDEN)
    await session.commit()


def client_file_name(raw: str, extension: str) -> str:
    """The client's file name reduced to a safe basename of at most 255 characters."""
    base = raw.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(char for char in base if char.isprintable()).strip()
    if not base or base in (".", ".."):
        base = f"track.{extension}"
    return base[:MAX_NAME_LENGTH]


def _absent(upload: ReceivedFile | None) -> bool:
    # A browser sends an empty file input as a part with filename="" and no content: that is "no file".
    return upload is None or (upload.size == 0 and upload.client_name == "")


async def _validate_form(session: AsyncSession, form: ReceivedForm) -> tuple[ReceivedFile, Genre | None, str | None]:
    """Laravel's rules for the upload form, all fields at once: ``(audio, genre, cover extension)`` or 422."""
    errors: dict[str, list[str]] = {}
    audio = form.files.get("audio_file")
    if audio is None or _absent(audio):
        if form.fields.get("audio_file", "").strip():
            errors["audio_file"] = ["The audio file field must be a file."]
        else:
            errors["audio_file"] = ["The audio file field is required."]

    genre: Genre | None = None
    raw_genre = form.fields.get("genre_id", "").strip()
    if raw_genre:
        message = integer("genre_id", raw_genre, {})
        if message:
            errors["genre_id"] = [message]
        else:
            value = int(raw_genre)
            genre = await repository.get_genre(session, value) if 0 < value <= MAX_BIGINT else None
            if genre is None:
                errors["genre_id"] = ["The selected genre id is invalid."]

    cover_extension: str | None = None
    cover = form.files.get("cover_image")
    if cover is not None and not _absent(cover):
        # Decided by magic bytes (never by the client's name or type), as for room covers.
        kind = image_type(cover.head)
        if kind is None:
            errors["cover_image"] = [NOT_AN_IMAGE]
        elif kind not in ACCEPTED_IMAGE_TYPES:
            errors["cover_image"] = [WRONG_IMAGE_TYPE]
        else:
            cover_extension = kind
    elif form.fields.get("cover_image", "").strip():
        errors["cover_image"] = [NOT_AN_IMAGE]

    if errors:
        raise ValidationFailed(errors, envelope=Envelope.B)
    assert audio is not None
    return audio, genre, cover_extension


def _publish_files(moves: list[tuple[Path, Path]]) -> None:
    done: list[Path] = []
    try:
        for source, target in moves:
            os.replace(source, target)  # same directory: atomic
            done.append(target)
    except BaseException:
        _remove_files(done)
        raise


def _remove_files(paths: Iterable[Path]) -> None:
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass


async def _remove_files_shielded(paths: list[Path]) -> None:
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(_remove_files, paths)


def track_added_event(track: Track, item: dict[str, Any], uploader: User, *, position: int, total: int) -> DomainEvent:
    data = {
        "room_id": str(track.room_id),
        "track": {**item, "filename": track.filename, "file_path": track.file_path},
        "uploader": user_full(uploader),
        "queue_position": position,
        "total_tracks": total,
        "message": f"{uploader.username} added {track.original_name}",
        "timestamp": now_iso(),
    }
    return DomainEvent("track_added", track.room_id, data)


async def add_track(
    session: AsyncSession,
    bus: EventBus,
    *,
    room: Room,
    user: User,
    form: ReceivedForm,
    settings: Settings,
) -> dict[str, Any]:
    """The new track's queue item: validate, probe and publish an upload whose files sit in temporary files (the
    caller deletes leftovers).

    Order: validate the form → probe the audio (in a thread) → rename the files into place → insert and commit
    the row → publish ``track_added`` → start playback if the room is idle. A failure before the commit removes
    the renamed files, so no file and no row outlive a failed upload.
    """
    audio, genre, cover_extension = await _validate_form(session, form)
    await session.commit()  # no pooled connection held while the probe reads the file
    try:
        info: AudioInfo = await anyio.to_thread.run_sync(probe, audio.path)
    except InvalidAudio:
        raise ValidationFailed({"audio_file": [INVALID_AUDIO]}, envelope=Envelope.B) from None

    track_id = uuid7()
    stored_name = f"{uuid.uuid4()}.{info.extension}"
    audio_target = audio.path.parent / stored_name
    moves = [(audio.path, audio_target)]
    cover = form.files.get("cover_image")
    if cover is not None and cover_extension is not None:
        moves.append((cover.path, cover.path.parent / f"{track_id}.{cover_extension}"))

    now = utcnow().replace(microsecond=0)  # the Laravel columns hold whole seconds; answer what is stored
    track = Track(
        id=track_id,
        room_id=room.id,
        uploader_id=user.id,
        filename=stored_name,
        original_name=client_file_name(audio.client_name, info.extension),
        file_path=f"{TRACKS_DIR}/{stored_name}",
        duration_seconds=max(1, round(info.duration_seconds)),
        file_size_bytes=audio.size,
        mime_type=info.mime_type,
        vote_score=0,
        genre_id=genre.id if genre is not None else None,
        played_at=None,
        created_at=now,
        updated_at=now,
    )
    try:
        await anyio.to_thread.run_sync(_publish_files, moves)
        session.add(track)
        await session.commit()
    except BaseException as exc:
        # Files first: a rollback on a broken connection may fail too, and must not leave them behind.
        await _remove_files_shielded([target for _source, target in moves])
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await session.rollback()
        # (After a rollback every loaded object is expired: use the plain values kept on the new row.)
        if isinstance(exc, IntegrityError) and await get_room(session, track.room_id) is None:
            # The room was deleted while its upload was arriving (the foreign key refused the row).
            raise _not_found("Room not found") from None
        raise
    set_committed_value(track, "uploader", user)
    set_committed_value(track, "genre", genre)

    cover_url = f"/api/storage/{TRACK_COVERS}/{moves[1][1].name}" if len(moves) > 1 else None
    item = queue_item(track, user_has_voted=False, cover_url=cover_url)
    position, total = await repository.queue_position(session, track)
    await bus.publish(track_added_event(track, item, user, position=position, total=total))
    await start_if_idle(session, bus, room_id=room.id, track=track)
    return item


# --- delete ----------------------------------------------------------------------------------------------------


def remove_stored_files(settings: Settings, tracks: Iterable[StoredFiles], *, room_id: uuid.UUID | None = None) -> None:
    """Delete the audio files and covers of tracks whose rows are gone (and the room's cover, for a room's deletion).

    Blocking: run it in a thread. Only files inside the storage roots are touched: a row's ``file_path`` is resolved
    like a client path (no ``..``, no absolute path, no symlink out of the root), whatever the database holds.
    """
    for track in tracks:
        try:
            audio = _audio_path(settings, track)
            if audio is not None:
                audio.unlink(missing_ok=True)
            delete_covers(settings.public_root, TRACK_COVERS, track.id)
        except OSError as exc:  # the row is gone already; a stray file is not worth failing the request
            log.warning("track file removal failed", track_id=str(track.id), error=repr(exc))
    if room_id is not None:
        try:
            delete_covers(settings.public_root, ROOM_COVERS, room_id)
        except OSError as exc:
            log.warning("room cover removal failed", room_id=str(room_id), error=repr(exc))


async def delete_track(
    session: AsyncSession, bus: EventBus, *, room: Room, track: Track, user: User, settings: Settings
) -> None:
    ensure_in_room(track, room)
    if user.id not in (room.administrator_id, track.uploader_id):
        raise _forbidden(DELETE_FORBIDDEN)
    stopped = await stop_for_removed_track(session, room_id=room.id, track=track)
    if not await repository.delete_track(session, track.id):
        await session.rollback()
        raise _not_found("Track not found")
    await session.commit()

    await bus.publish(
        DomainEvent(
            "track_removed",
            room.id,
            {
                "room_id": str(room.id),
                "track_id": str(track.id),
                "track": track_brief(track),
                "removed_by": voter(user),
                "message": f"{track.original_name} was removed from the queue",
                "timestamp": now_iso(),
            },
        )
    )
    if stopped is not None:
        await bus.publish(stopped)
    await anyio.to_thread.run_sync(
        remove_stored_files, settings, [StoredFiles(track.id, track.file_path, track.filename)]
    )


# --- votes -----------------------------------------------------------------------------------------------------


async def _queue_if_moved(
    session: AsyncSession, track: Track, score: int, *, previous: int
) -> list[tuple[uuid.UUID, int]] | None:
    """The queue in its new order if the vote moved ``track`` (its place with ``previous`` votes ≠ with ``score``).

    Decided by the database in one query (how many tracks come before it with either score); the new order is
    loaded only when it changed. Played tracks are not in the queue, so they never move it.
    """
    if track.played_at is not None:
        return None
    now_ahead, before_ahead = await repository.tracks_ahead(session, track, [score, previous])
    if now_ahead == before_ahead:
        return None
    return await repository.queue_scores(session, track.room_id)


async def _publish_vote_events(
    bus: EventBus,
    *,
    room: Room,
    track: Track,
    user: User,
    score: int,
    added: bool,
    queue: list[tuple[uuid.UUID, int]] | None,
) -> None:
    now = now_iso()
    brief = {**track_brief(track), "vote_score": score}
    who = voter(user)
    verb = "voted for" if added else "removed their vote for"
    data = {
        "room_id": str(room.id),
        "track": brief,
        "user": who,
        "voter": who,
        "vote_added": added,
        "new_vote_score": score,
        "vote_score": score,
        "message": f"{user.username} {verb} {track.original_name}",
        "timestamp": now,
    }
    await bus.publish(DomainEvent("track_voted", room.id, data))
    if not added:
        await bus.publish(DomainEvent("track_unvoted", room.id, dict(data)))
    if queue is not None:
        reason = "vote_added" if added else "vote_removed"
        await bus.publish(
            DomainEvent(
                "queue_reordered",
                room.id,
                {
                    "room_id": str(room.id),
                    "updated_queue": [{"id": str(tid), "vote_score": s} for tid, s in queue],
                    "reason": reason,
                    "reorder_reason": reason,
                    "affected_track": brief,
                    "message": "The queue order changed",
                    "timestamp": now,
                },
            )
        )


@dataclass(frozen=True, slots=True)
class VoteChange:
    """The outcome of a vote or of its removal: whether it changed anything, and the track's score after it."""

    user_has_voted: bool
    changed: bool
    vote_score: int

    @property
    def message(self) -> str:
        if self.user_has_voted:
            return "Vote added successfully" if self.changed else "Vote already exists"
        return "Vote removed successfully" if self.changed else "No vote to remove"


async def vote(session: AsyncSession, bus: EventBus, *, room: Room, track: Track, user: User) -> VoteChange:
    """One vote per (track, user): the insert and the score update commit together or not at all."""
    await require_member(session, room.id, user.id, VOTE_FORBIDDEN)
    ensure_in_room(track, room)
    try:
        added = await repository.add_vote(session, track.id, user.id)
        score = await repository.change_vote_score(session, track.id, +1) if added else None
        if score is None:
            score = await repository.vote_score(session, track.id)
        queue = (
            await _queue_if_moved(session, track, score, previous=score - 1) if added and score is not None else None
        )
        await session.commit()
    except IntegrityError:  # the track was deleted meanwhile (foreign key)
        await session.rollback()
        raise _not_found("Track not found") from None
    if score is None:
        raise _not_found("Track not found")
    if added:
        await _publish_vote_events(bus, room=room, track=track, user=user, score=score, added=True, queue=queue)
    return VoteChange(user_has_voted=True, changed=added, vote_score=score)


async def unvote(session: AsyncSession, bus: EventBus, *, room: Room, track: Track, user: User) -> VoteChange:
    await require_member(session, room.id, user.id, UNVOTE_FORBIDDEN)
    ensure_in_room(track, room)
    removed = await repository.remove_vote(session, track.id, user.id)
    score = await repository.change_vote_score(session, track.id, -1) if removed else None
    if score is None:
        score = await repository.vote_score(session, track.id)
    queue = await _queue_if_moved(session, track, score, previous=score + 1) if removed and score is not None else None
    await session.commit()
    if score is None:
        raise _not_found("Track not found")
    if removed:
        await _publish_vote_events(bus, room=room, track=track, user=user, score=score, added=False, queue=queue)
    return VoteChange(user_has_voted=False, changed=removed, vote_score=score)


# --- audio files -----------------------------------------------------------------------------------------------


def _audio_path(settings: Settings, track: Track | StoredFiles) -> Path | None:
    path = resolve_inside(settings.audio_root, track.file_path)
    if path is None:
        # Rows written by the Ruby backend store "./storage/tracks/<name>"; the file itself is tracks/<name>.
        path = resolve_inside(settings.audio_root, f"{TRACKS_DIR}/{track.filename}")
    return path


async def stream_path(session: AsyncSession, *, track: Track, user: User, settings: Settings) -> Path:
    """The file to stream for ``GET /api/tracks/{track}/stream``: members of the track's room only."""
    await require_member(session, track.room_id, user.id, STREAM_FORBIDDEN)
    path = _audio_path(settings, track)
    if path is None:
        raise _not_found("Audio file not found")
    return path


async def audio_by_filename(
    session: AsyncSession, *, filename: str, user: User, settings: Settings
) -> tuple[Track, Path]:
    """``GET /api/audio/{filename}``: the track that owns the stored file, for members of its room only
    (docs/decisions.md#b17)."""
    plausible = 0 < len(filename) <= MAX_NAME_LENGTH and "\x00" not in filename  # PostgreSQL refuses NUL in text
    track = await repository.track_by_filename(session, filename) if plausible else None
    if track is None:
        raise _not_found("Audio file not found")
    await require_member(session, track.room_id, user.id, STREAM_FORBIDDEN)
    if not track.mime_type.startswith("audio/"):
        raise _forbidden("Invalid file type")
    path = _audio_path(settings, track)
    if path is None:
        raise _not_found("Audio file not found")
    return track, path


def audio_metadata(track: Track, path: Path) -> dict[str, Any]:
    info = path.stat()
    return {
        "filename": track.filename,
        "size": info.st_size,
        "mime_type": track.mime_type,
        "last_modified": iso(datetime.fromtimestamp(info.st_mtime, UTC)),
        "formatted_size": formatted_file_size(info.st_size),
        "duration_seconds": track.duration_seconds,
        "original_name": track.original_name,
        "track_id": str(track.id),
    }
