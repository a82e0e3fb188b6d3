"""Track list, upload and deletion (docs/api.md#tracks, docs/api.md#queue-order, docs/decisions.md#d4,
docs/decisions.md#d5, docs/decisions.md#d8), on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
from sqlalchemy import func, select, text

from spotik.db.base import utcnow
from spotik.state import AppState
from spotik.tracks.models import Track, TrackVote
from tests.conftest import make_settings
from tests.events import capture_events
from tests.fixtures.audio_files import (
    make_flac,
    make_m4a,
    make_mp3,
    make_ogg,
    make_png,
    make_truncated_mp3,
    make_wav,
)
from tests.helpers import Account, register
from tests.integration.tracks_helpers import (
    app_client,
    count_rows,
    create_room,
    join_room,
    long_wav,
    multipart,
    raw_post,
    room_row,
    room_with_members,
    set_current_track,
    stored_files,
    upload,
    upload_ok,
)
from tests.querycount import count_queries

ISO_MICROS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
QUEUE_ITEM_KEYS = {
    "id",
    "room_id",
    "filename",
    "original_name",
    "duration_seconds",
    "formatted_duration",
    "file_size_bytes",
    "formatted_file_size",
    "mime_type",
    "vote_score",
    "votes_count",
    "uploader",
    "genre",
    "user_has_voted",
    "created_at",
    "updated_at",
    "file_url",
    "cover_url",
}
INVALID_AUDIO = {
    "error": "Validation failed",
    "errors": {"audio_file": ["Invalid audio file format or corrupted file"]},
}


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audio")


def tracks_root(state: AppState) -> Path:
    return state.settings.audio_root


# --- upload: real audio of every format ---------------------------------------------------------------------------

FORMATS: list[tuple[str, Callable[[Path], Path], str, str, int]] = [
    ("wav", lambda d: make_wav(d, 3.0), "wav", "audio/wav", 3),
    ("mp3-cbr", lambda d: make_mp3(d, 3.0), "mp3", "audio/mpeg", 3),
    ("mp3-vbr-no-xing", lambda d: make_mp3(d, 3.0, vbr=True, xing=False), "mp3", "audio/mpeg", 3),
    ("mp3-mpeg2", lambda d: make_mp3(d, 3.0, sample_rate=22050), "mp3", "audio/mpeg", 3),
    ("m4a", lambda d: make_m4a(d, 3.0), "m4a", "audio/mp4", 3),
    ("ogg", lambda d: make_ogg(d, 3.0), "ogg", "audio/ogg", 3),
    ("flac", lambda d: make_flac(d, 3.0), "flac", "audio/flac", 3),
    ("mp3-long-vbr", lambda d: make_mp3(d, 8.0, vbr=True, xing=False, id3=False), "mp3", "audio/mpeg", 8),
]


@pytest.mark.parametrize(
    ("maker", "extension", "mime", "duration"),
    [pytest.param(m, e, t, s, id=name) for name, m, e, t, s in FORMATS],
)
async def test_upload_probes_and_stores_real_audio(
    client: httpx2.AsyncClient,
    state: AppState,
    audio_dir: Path,
    maker: Callable[[Path], Path],
    extension: str,
    mime: str,
    duration: int,
) -> None:
    room_id, (ana,) = await room_with_members(client, "ana")
    source = maker(audio_dir)
    # The client's name and MIME type lie; the content decides.
    response = await upload(client, ana, room_id, source.read_bytes(), "my song.txt")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["message"] == "Track uploaded successfully"
    track = body["track"]
    assert set(track) == QUEUE_ITEM_KEYS
    assert track["mime_type"] == mime
    assert track["duration_seconds"] == duration
    assert track["formatted_duration"] == f"0:{duration:02d}"
    assert track["file_size_bytes"] == source.stat().st_size
    assert track["original_name"] == "my song.txt"
    assert track["user_has_voted"] is False and track["vote_score"] == 0
    assert track["uploader"] == {"id": ana.id, "username": "ana"}
    assert track["genre"] is None and track["cover_url"] is None
    assert track["file_url"] == f"/api/tracks/{track['id']}/stream"
    assert ISO_MICROS_Z.match(track["created_at"])
    stem, _, ext = track["filename"].partition(".")
    assert ext == extension
    uuid.UUID(stem)

    stored = tracks_root(state) / "tracks" / track["filename"]
    assert stored.read_bytes() == source.read_bytes()
    assert stored_files(tracks_root(state)) == [f"tracks/{track['filename']}"]
    async with state.sessionmaker() as session:
        row = await session.get(Track, uuid.UUID(track["id"]))
        assert row is not None
        assert row.filename == track["filename"]
        assert row.file_path == f"tracks/{track['filename']}"
        assert (row.mime_type, row.duration_seconds, row.file_size_bytes) == (mime, duration, stored.stat().st_size)
        assert str(row.room_id) == room_id and str(row.uploader_id) == ana.id


async def test_original_name_is_a_bounded_basename(
    client: httpx2.AsyncClient, state: AppState, audio_dir: Path
) -> None:
    room_id, (ana,) = await room_with_members(client, "ana")
    data = long_wav(audio_dir).read_bytes()
    response = await upload(client, ana, room_id, data, "C:\\music\\" + "x" * 300 + ".wav")
    assert response.status_code == 201
    assert response.json()["track"]["original_name"] == "x" * 255
    response = await upload(client, ana, room_id, data, "../../etc/passwd")
    assert response.json()["track"]["original_name"] == "passwd"
    # The stored name never comes from the client.
    assert all(re.fullmatch(r"tracks/[0-9a-f-]{36}\.wav", name) for name in stored_files(tracks_root(state)))


async def test_upload_into_idle_room_starts_playback_and_publishes(
    client: httpx2.AsyncClient, state: AppState, audio_dir: Path
) -> None:
    room_id, (ana, ben) = await room_with_members(client, "ana", "ben")
    with capture_events(state) as events:
        first = await upload_ok(client, ana, room_id, long_wav(audio_dir), "first.wav")
    assert [event.type for event in events] == ["track_added", "playback_started"]
    added = events[0]
    assert added.room_id == uuid.UUID(room_id)
    data = added.data
    assert data["room_id"] == room_id
    assert data["queue_position"] == 1 and data["total_tracks"] == 1
    assert data["uploader"]["id"] == ana.id and data["uploader"]["username"] == "ana"
    assert ISO_MICROS_Z.match(data["timestamp"]) and data["message"]
    for key in ("id", "vote_score", "created_at", "original_name", "duration_seconds", "filename", "file_url"):
        assert data["track"][key] == first[key]
    assert data["track"]["uploader"] == {"id": ana.id, "username": "ana"}
    started = events[1].data
    assert started["track"]["id"] == first["id"] and started["auto_started"] is True

    room = await room_row(state, room_id)
    assert str(room.current_track_id) == first["id"] and room.is_playing is True
    assert room.playback_started_at is not None and room.playback_paused_at is None

    # A second upload only joins the queue: the room keeps playing the first track.
    with capture_events(state) as events:
        second = await upload_ok(client, ben, room_id, long_wav(audio_dir), "second.wav")
    assert [event.type for event in events] == ["track_added"]
    assert events[0].data["queue_position"] == 2 and events[0].data["total_tracks"] == 2
    assert events[0].data["track"]["id"] == second["id"]
    room = await room_row(state, room_id)
    assert str(room.current_track_id) == first["id"]


async def test_upload_with_genre_and_cover(client: httpx2.AsyncClient, state: AppState, audio_dir: Path) -> None:
    room_id, (ana,) = await room_with_members(client, "ana")
    png = make_png(audio_dir, 16, 16).read_bytes()
    async with state.sessionmaker() as session:
        rock_id = await session.scalar(text("SELECT id FROM genres WHERE name = 'Rock'"))
    response = await upload(
        client,
        ana,
        room_id,
        long_wav(audio_dir).read_bytes(),
        "tone.wav",
        fields={"genre_id": str(rock_id)},
        cover=("cover.jpg", png),  # named .jpg, but it is a PNG: stored as what it is
    )
    assert response.status_code == 201, response.text
    track = response.json()["track"]
    assert track["genre"] == {"id": rock_id, "name": "Rock", "color": "#4ecdc4"}
    assert track["cover_url"] == f"/api/storage/track_covers/{track['id']}.png"
    cover_path = state.settings.public_root / "track_covers" / f"{track['id']}.png"
    assert cover_path.read_bytes() == png
    assert stored_files(state.settings.public_root) == [f"track_covers/{track['id']}.png"]

    listed = await client.get(f"/api/rooms/{room_id}/tracks", headers=ana.headers)
    assert listed.json()["tracks"][0]["cover_url"] == track["cover_url"]
    assert listed.json()["tracks"][0]["genre"]["name"] == "Rock"


# --- upload: refusals leave nothing behind ------------------------------------------------------------------------


async def assert_nothing_stored(state: AppState) -> None:
    assert stored_files(state.settings.audio_root) == []
    assert stored_files(state.settings.public_root) == []
    assert await count_rows(state, Track) == 0


BAD_AUDIO: list[tuple[str, Callable[[Path], bytes]]] = [
    ("text-named-mp3", lambda d: b"This is not music at all, only a text file with an .mp3 name.\n" * 40),
    ("empty", lambda d: b""),
    ("truncated-head200", lambda d: make_truncated_mp3(d, "head200").read_bytes()),
    ("truncated-one-frame", lambda d: make_truncated_mp3(d, "one_frame").read_bytes()),
    ("truncated-two-frames", lambda d: make_truncated_mp3(d, "two_frames").read_bytes()),
    ("id3-only", lambda d: make_truncated_mp3(d, "id3_only").read_bytes()),
    ("png-image", lambda d: make_png(d).read_bytes()),
    ("wav-cut-in-header", lambda d: make_wav(d, 1.0).read_bytes()[:30]),
]


@pytest.mark.parametrize("content", [pytest.param(make, id=name) for name, make in BAD_AUDIO])
async def test_content_that_is_not_audio_is_refused_without_leftovers(
    client: httpx2.AsyncClient, state: AppState, audio_dir: Path, content: Callable[[Path], bytes]
) -> None:
    room_id, (ana,) = await room_with_members(client, "ana")
    with capture_events(state) as events:
        response = await upload(client, ana, room_id, content(audio_dir), "song.mp3")
    assert response.status_code == 422
    assert response.json() == INVALID_AUDIO
    assert events == []
    await assert_nothing_stored(state)
    assert (await room_row(state, room_id)).current_track_id is None


async def test_missing_audio_file_is_required(client: httpx2.AsyncClient, state: AppState) -> None:
    room_id, (ana,) = await room_with_members(client, "ana")
    required = {"error": "Validation failed", "errors": {"audio_file": ["The audio file field is required."]}}
    url = f"/api/rooms/{room_id}/tracks"
    # No body, a JSON body, a multipart body without the file, a browser's empty file input.
    assert (await client.post(url, headers=ana.headers)).json() == required
    response = await client.post(url, headers=ana.headers, json={"audio_file": None})
    assert response.status_code == 422 and response.json() == required
    response = await client.post(url, headers=ana.headers, data={"note": "hi"}, files={"other": ("a.txt", b"x")})
    assert response.status_code == 422 and response.json() == required
    body, content_type = multipart(files=[("audio_file", "", b"")])
    response = await client.post(url, headers={**ana.headers, "Content-Type": content_type}, content=body)
    assert response.status_code == 422 and response.json() == required
    # A text field named audio_file is not a file.
    response = await client.post(url, headers=ana.headers, data={"audio_file": "song.mp3"}, files={"x": ("x", b"")})
    assert response.json() == {
        "error": "Validation failed",
        "errors": {"audio_file": ["The audio file field must be a file."]},
    }
    await assert_nothing_stored(state)


async def test_genre_id_is_validated(client: httpx2.AsyncClient, state: AppState, audio_dir: Path) -> None:
    room_id, (ana,) = await room_with_members(client, "ana")
    wav = long_wav(audio_dir).read_bytes()
    cases = {
        "abc": "The genre id field must be an integer.",
        "1.5": "The genre id field must be an integer.",
        "987654": "The selected genre id is invalid.",
        "0": "The selected genre id is invalid.",
        "99999999999999999999999": "The selected genre id is invalid.",
    }
    for value, message in cases.items():
        response = await upload(client, ana, room_id, wav, "a.wav", fields={"genre_id": value})
        assert response.status_code == 422, value
        assert response.json() == {"error": "Validation failed", "errors": {"genre_id": [message]}}
    # Every field's errors at once, as Laravel reports them.
    response = await client.post(
        f"/api/rooms/{room_id}/tracks", headers=ana.headers, data={"genre_id": "x"}, files={"z": ("z", b"")}
    )
    assert response.json()["errors"] == {
        "audio_file": ["The audio file field is required."],
        "genre_id": ["The genre id field must be an integer."],
    }
    # An empty genre_id is "no genre" (Laravel turns empty strings into null).
    response = await upload(client, ana, room_id, wav, "a.wav", fields={"genre_id": ""})
    assert response.status_code == 201 and response.json()["track"]["genre"] is None
    assert await count_rows(state, Track) == 1


async def test_invalid_cover_refuses_the_whole_upload(
    client: httpx2.AsyncClient, state: AppState, audio_dir: Path
) -> None:
    room_id, (ana,) = await room_with_members(client, "ana")
    wav = long_wav(audio_dir).read_bytes()
    cases = [
        (b"plain text, not an image" * 10, "The cover image field must be an image."),
        (b"GIF89a" + bytes(64), "The cover image field must be a file of type: jpg, jpeg, png, webp."),
        (
            b"\x89PNG\r\n\x1a\n" + bytes(5 * 1024 * 1024),
            "The cover image field must not be greater than 5120 kilobytes.",
        ),
    ]
    for cover, message in cases:
        response = await upload(client, ana, room_id, wav, "a.wav", cover=("cover.png", cover))
        assert response.status_code == 422
        assert response.json() == {"error": "Validation failed", "errors": {"cover_image": [message]}}
        await assert_nothing_stored(state)


async def test_database_failure_leaves_no_file(client: httpx2.AsyncClient, state: AppState, audio_dir: Path) -> None:
    """A real database error at insert time (a trigger refusing the row): the renamed file is removed again."""
    room_id, (ana,) = await room_with_members(client, "ana")
    async with state.engine.begin() as connection:
        if state.engine.dialect.name == "sqlite":
            await connection.execute(
                text(
                    "CREATE TRIGGER refuse_tracks BEFORE INSERT ON tracks "
                    "BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
                )
            )
        else:
            await connection.execute(
                text(
                    "CREATE FUNCTION refuse_tracks() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'refused by test'; END $$"
                )
            )
            await connection.execute(
                text(
                    "CREATE TRIGGER refuse_tracks BEFORE INSERT ON tracks FOR EACH ROW EXECUTE FUNCTION refuse_tracks()"
                )
            )
    try:
        response = await upload(
            client,
            ana,
            room_id,
            long_wav(audio_dir).read_bytes(),
            cover=("c.png", make_png(audio_dir).read_bytes()),
        )
        assert response.status_code == 500
        assert response.json()["success"] is False
        await assert_nothing_stored(state)
    finally:
        async with state.engine.begin() as connection:
            await connection.execute(
                text("DROP TRIGGER refuse_tracks" + (" ON tracks" if state.engine.dialect.name == "postgresql" else ""))
            )
            if state.engine.dialect.name == "postgresql":
                await connection.execute(text("DROP FUNCTION refuse_tracks()"))


async def test_malformed_multipart_is_a_400(client: httpx2.AsyncClient, state: AppState, audio_dir: Path) -> None:
    room_id, (ana,) = await room_with_members(client, "ana")
    url = f"/api/rooms/{room_id}/tracks"
    body, content_type = multipart(files=[("audio_file", "a.wav", long_wav(audio_dir).read_bytes())])
    cut = body[: len(body) // 2]
    many_parts, many_type = multipart(fields=[(f"f{i}", "x") for i in range(40)])
    nameless = body.replace(b'name="audio_file"; ', b"")
    for payload, ctype in (
        (cut, content_type),  # the closing boundary never arrives
        (body, "multipart/form-data"),  # no boundary
        (many_parts, many_type),  # more parts than any upload form has
        (nameless, content_type),  # a part without a name
    ):
        response = await client.post(url, headers={**ana.headers, "Content-Type": ctype}, content=payload)
        assert response.status_code == 400
        assert response.json() == {
            "error": "Malformed upload",
            "message": "The request body is not valid multipart/form-data.",
        }
    # A text field is small by nature: a huge one ends the upload at once.
    huge, huge_type = multipart(fields=[("genre_id", "1" * 100_000)])
    response = await client.post(url, headers={**ana.headers, "Content-Type": huge_type}, content=huge)
    assert response.status_code == 413
    await assert_nothing_stored(state)


async def test_only_the_first_audio_file_counts(client: httpx2.AsyncClient, state: AppState, audio_dir: Path) -> None:
    room_id, (ana,) = await room_with_members(client, "ana")
    first, second = make_wav(audio_dir, 3.0).read_bytes(), make_mp3(audio_dir, 3.0).read_bytes()
    body, content_type = multipart(
        files=[("audio_file", "one.wav", first), ("audio_file", "two.mp3", second), ("extra", "x.bin", b"zz")]
    )
    response = await client.post(
        f"/api/rooms/{room_id}/tracks", headers={**ana.headers, "Content-Type": content_type}, content=body
    )
    assert response.status_code == 201
    track = response.json()["track"]
    assert track["original_name"] == "one.wav" and track["mime_type"] == "audio/wav"
    assert stored_files(state.settings.audio_root) == [f"tracks/{track['filename']}"]


# --- upload: size limits ------------------------------------------------------------------------------------------


@pytest.fixture
async def small(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[httpx2.AsyncClient, AppState]]:
    """An app whose upload limit is 1 MB."""
    async with app_client(make_settings(database_url, tmp_path / "small", max_upload_mb=1)) as pair:
        yield pair


class CountingBody:
    """A request body produced chunk by chunk, recording how much of it the server pulled."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.pulled += 1
            yield chunk


def chunked(data: bytes, size: int = 64 * 1024) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


TOO_LARGE = {"error": "File too large", "message": "The audio file may not be greater than 1 MB."}


async def test_declared_oversized_body_is_refused_before_reading(
    small: tuple[httpx2.AsyncClient, AppState], audio_dir: Path
) -> None:
    client, state = small
    room_id, (ana,) = await room_with_members(client, "ana")
    body, content_type = multipart(files=[("audio_file", "big.wav", bytes(8 * 1024 * 1024))])
    stream = CountingBody(chunked(body))
    headers = {**ana.headers, "Content-Type": content_type, "Content-Length": str(len(body))}
    response = await client.post(f"/api/rooms/{room_id}/tracks", headers=headers, content=stream)
    assert response.status_code == 413
    assert response.json() == TOO_LARGE
    assert stream.pulled == 0
    await assert_nothing_stored(state)


async def test_streamed_oversized_audio_stops_at_the_limit(
    small: tuple[httpx2.AsyncClient, AppState], audio_dir: Path
) -> None:
    client, state = small
    room_id, (ana,) = await room_with_members(client, "ana")
    wav = make_wav(audio_dir, 30.0)  # ~5 MB of real audio, over the 1 MB limit
    body, content_type = multipart(files=[("audio_file", "long.wav", wav.read_bytes())])
    stream = CountingBody(chunked(body))
    # No Content-Length: a chunked body can only be counted while it streams in.
    headers = {**ana.headers, "Content-Type": content_type}
    response = await client.post(f"/api/rooms/{room_id}/tracks", headers=headers, content=stream)
    assert response.status_code == 413
    assert response.json() == TOO_LARGE
    # Reading stopped just past 1 MB, far from the end of the body.
    assert 16 <= stream.pulled <= 18 < len(stream.chunks)
    await assert_nothing_stored(state)
    # Just under the limit is fine.
    fits = make_wav(audio_dir, 5.0)  # ~0.84 MB
    assert fits.stat().st_size < 1024 * 1024
    ok = await upload(client, ana, room_id, fits.read_bytes(), "fits.wav")
    assert ok.status_code == 201, ok.text


async def test_client_disconnect_mid_upload_leaves_nothing(
    small: tuple[httpx2.AsyncClient, AppState], audio_dir: Path
) -> None:
    """A raw ASGI request whose client goes away after a few chunks (``http.disconnect``)."""
    client, state = small
    room_id, (ana,) = await room_with_members(client, "ana")
    body, content_type = multipart(files=[("audio_file", "a.wav", make_wav(audio_dir, 5.0).read_bytes())])
    chunks = chunked(body, 32 * 1024)[:12]  # 384 KiB: past the first 256 KiB write to disk
    messages: list[dict[str, Any]] = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
    messages.append({"type": "http.disconnect"})
    seen_partial_file: list[bool] = []

    async def receive() -> dict[str, Any]:
        if len(messages) == 1:  # about to disconnect: the partial upload is on disk, under a temporary name
            seen_partial_file.append(any(".upload-" in n for n in stored_files(state.settings.audio_root)))
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    headers = {**ana.headers, "Content-Type": content_type}
    sent = await raw_post(client, f"/api/rooms/{room_id}/tracks", headers, receive)
    assert seen_partial_file == [True]
    assert sent[0]["status"] == 400
    await assert_nothing_stored(state)


async def test_room_deleted_during_the_upload(client: httpx2.AsyncClient, state: AppState, audio_dir: Path) -> None:
    """The administrator deletes the room while a member's upload is arriving: 404, no file, no row."""
    room_id, (admin, ben) = await room_with_members(client, "admin", "ben")
    body, content_type = multipart(files=[("audio_file", "a.wav", long_wav(audio_dir).read_bytes())])
    chunks = chunked(body)
    deleted: list[int] = []

    async def receive() -> dict[str, Any]:
        if len(chunks) == 1:  # all but the last chunk are in: the room goes away now
            response = await client.delete(f"/api/rooms/{room_id}", headers=admin.headers)
            deleted.append(response.status_code)
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    headers = {**ben.headers, "Content-Type": content_type}
    sent = await raw_post(client, f"/api/rooms/{room_id}/tracks", headers, receive)
    assert deleted == [200]
    assert sent[0]["status"] == 404
    assert orjson.loads(sent[1]["body"]) == {"error": "Room not found"}
    await assert_nothing_stored(state)


# --- list: membership, order, user_has_voted ----------------------------------------------------------------------


async def test_anonymous_and_unknown_rooms(client: httpx2.AsyncClient, state: AppState, audio_dir: Path) -> None:
    room_id, (ana,) = await room_with_members(client, "ana")
    for method in ("GET", "POST"):
        response = await client.request(method, f"/api/rooms/{room_id}/tracks")
        assert response.status_code == 401
        assert response.json() == {"success": False, "message": "Token not provided", "error": "Token absent"}
        for bad in (str(uuid.uuid4()), "not-a-uuid", "1"):
            response = await client.request(method, f"/api/rooms/{bad}/tracks", headers=ana.headers)
            assert response.status_code == 404
    await assert_nothing_stored(state)


async def test_non_members_can_neither_list_nor_upload(
    client: httpx2.AsyncClient, state: AppState, audio_dir: Path
) -> None:
    room_id, (_ana, eve) = await _room_and_outsider(client, state)
    response = await client.get(f"/api/rooms/{room_id}/tracks", headers=eve.headers)
    assert response.status_code == 403
    assert response.json() == {"error": "You must be a participant of this room to view tracks"}

    body, content_type = multipart(files=[("audio_file", "a.wav", long_wav(audio_dir).read_bytes())])
    stream = CountingBody(chunked(body))
    headers = {**eve.headers, "Content-Type": content_type}
    response = await client.post(f"/api/rooms/{room_id}/tracks", headers=headers, content=stream)
    assert response.status_code == 403
    assert response.json() == {"error": "You must be a participant of this room to upload tracks"}
    assert stream.pulled == 0  # refused before a byte of the body was read
    await assert_nothing_stored(state)
    # Once a member, the same user may upload and list.
    await join_room(client, room_id, eve)
    await upload_ok(client, eve, room_id, long_wav(audio_dir))
    assert (await client.get(f"/api/rooms/{room_id}/tracks", headers=eve.headers)).json()["total_count"] == 1


async def _room_and_outsider(client: httpx2.AsyncClient, state: AppState) -> tuple[str, tuple[Account, Account]]:
    ana = await register(client, "ana")
    eve = await register(client, "eve")
    return await create_room(client, ana), (ana, eve)


async def _vote(client: httpx2.AsyncClient, account: Account, room_id: str, track_id: str) -> None:
    response = await client.post(f"/api/rooms/{room_id}/tracks/{track_id}/vote", headers=account.headers)
    assert response.status_code == 200, response.text


async def test_queue_order_and_user_has_voted(client: httpx2.AsyncClient, state: AppState, audio_dir: Path) -> None:
    room_id, (ana, ben, cat) = await room_with_members(client, "ana", "ben", "cat")
    wav = long_wav(audio_dir)
    first = await upload_ok(client, ana, room_id, wav, "first.wav")
    second = await upload_ok(client, ben, room_id, wav, "second.wav")
    third = await upload_ok(client, cat, room_id, wav, "third.wav")
    fourth = await upload_ok(client, ana, room_id, wav, "fourth.wav")
    # third: 2 votes; fourth and second: 1 vote each (second uploaded earlier); first: none.
    await _vote(client, ana, room_id, third["id"])
    await _vote(client, ben, room_id, third["id"])
    await _vote(client, cat, room_id, fourth["id"])
    await _vote(client, ana, room_id, second["id"])

    listed = await client.get(f"/api/rooms/{room_id}/tracks", headers=ana.headers)
    assert listed.status_code == 200
    body = listed.json()
    assert set(body) == {"tracks", "total_count"}
    assert body["total_count"] == 4
    order = [t["original_name"] for t in body["tracks"]]
    assert order == ["third.wav", "second.wav", "fourth.wav", "first.wav"]
    assert [t["vote_score"] for t in body["tracks"]] == [2, 1, 1, 0]
    assert [t["votes_count"] for t in body["tracks"]] == [2, 1, 1, 0]
    assert all(set(t) == QUEUE_ITEM_KEYS for t in body["tracks"])

    def voted(response: httpx2.Response) -> dict[str, bool]:
        return {t["original_name"]: t["user_has_voted"] for t in response.json()["tracks"]}

    assert voted(listed) == {"third.wav": True, "second.wav": True, "fourth.wav": False, "first.wav": False}
    as_ben = await client.get(f"/api/rooms/{room_id}/tracks", headers=ben.headers)
    assert voted(as_ben) == {"third.wav": True, "second.wav": False, "fourth.wav": False, "first.wav": False}
    as_cat = await client.get(f"/api/rooms/{room_id}/tracks", headers=cat.headers)
    assert voted(as_cat) == {"third.wav": False, "second.wav": False, "fourth.wav": True, "first.wav": False}
    assert first["id"] == body["tracks"][3]["id"]


@pytest.mark.cache_off  # the statements behind the cache (its computations run in tasks of their own)
async def test_track_list_runs_the_same_few_queries_whatever_its_size(
    client: httpx2.AsyncClient, state: AppState, audio_dir: Path
) -> None:
    wav = long_wav(audio_dir)
    small_room, (ana,) = await room_with_members(client, "ana")
    await upload_ok(client, ana, small_room, wav)

    big_room, members = await room_with_members(client, "bob", "cid", "dan", "eva")
    tracks = [await upload_ok(client, members[i % 4], big_room, wav, f"t{i}.wav") for i in range(20)]
    for i, track in enumerate(tracks):
        for member in members[: 1 + i % 4]:
            await _vote(client, member, big_room, track["id"])
    async with state.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(TrackVote)) == 50

    with count_queries(state.engine) as small_queries:
        one = await client.get(f"/api/rooms/{small_room}/tracks", headers=ana.headers)
    with count_queries(state.engine) as big_queries:
        many = await client.get(f"/api/rooms/{big_room}/tracks", headers=members[0].headers)
    assert one.json()["total_count"] == 1 and many.json()["total_count"] == 20
    # token's user, room, membership, queue (uploader and genre joined in), the caller's votes
    assert len(small_queries) == len(big_queries) == 5, big_queries


# --- delete -------------------------------------------------------------------------------------------------------


async def test_delete_authorization(client: httpx2.AsyncClient, state: AppState, audio_dir: Path) -> None:
    room_id, (admin, uploader, other) = await room_with_members(client, "admin", "uploader", "other")
    outsider = await register(client, "outsider")
    track = await upload_ok(client, uploader, room_id, long_wav(audio_dir))
    url = f"/api/rooms/{room_id}/tracks/{track['id']}"

    response = await client.delete(url)
    assert response.status_code == 401 and response.json()["error"] == "Token absent"
    forbidden = {"error": "You can only delete tracks you uploaded or be a room administrator"}
    for account in (other, outsider):
        response = await client.delete(url, headers=account.headers)
        assert response.status_code == 403 and response.json() == forbidden
    for bad in (str(uuid.uuid4()), "nope", "12"):
        response = await client.delete(f"/api/rooms/{room_id}/tracks/{bad}", headers=admin.headers)
        assert response.status_code == 404 and response.json() == {"error": "Track not found"}
    other_room = await create_room(client, admin, "elsewhere")
    response = await client.delete(f"/api/rooms/{other_room}/tracks/{track['id']}", headers=admin.headers)
    assert response.status_code == 404 and response.json() == {"error": "Track does not belong to this room"}
    assert await count_rows(state, Track) == 1

    response = await client.delete(url, headers=uploader.headers)
    assert response.status_code == 200 and response.json() == {"message": "Track deleted successfully"}
    response = await client.delete(url, headers=uploader.headers)
    assert response.status_code == 404

    # The administrator may delete anybody's track.
    again = await upload_ok(client, other, room_id, long_wav(audio_dir))
    response = await client.delete(f"/api/rooms/{room_id}/tracks/{again['id']}", headers=admin.headers)
    assert response.status_code == 200
    await assert_nothing_stored(state)


async def test_deleting_the_current_track_stops_playback_and_removes_files(
    client: httpx2.AsyncClient, state: AppState, audio_dir: Path
) -> None:
    room_id, (admin, ben) = await room_with_members(client, "admin", "ben")
    png = make_png(audio_dir).read_bytes()
    current = (
        await upload(client, ben, room_id, long_wav(audio_dir).read_bytes(), "now.wav", cover=("c.png", png))
    ).json()["track"]
    queued = await upload_ok(client, ben, room_id, long_wav(audio_dir), "next.wav")
    await _vote(client, admin, room_id, current["id"])
    assert (await room_row(state, room_id)).current_track_id == uuid.UUID(current["id"])
    assert len(stored_files(state.settings.audio_root)) == 2
    assert stored_files(state.settings.public_root) == [f"track_covers/{current['id']}.png"]

    with capture_events(state) as events:
        response = await client.delete(f"/api/rooms/{room_id}/tracks/{current['id']}", headers=admin.headers)
    assert response.status_code == 200
    assert [event.type for event in events] == ["track_removed", "playback_stopped"]
    removed, stopped = events[0].data, events[1].data
    assert removed["room_id"] == room_id and removed["track_id"] == current["id"]
    assert removed["track"]["id"] == current["id"]
    assert stopped["reason"] == "track_removed" and stopped["is_playing"] is False
    assert stopped["previous_track"]["id"] == current["id"]
    assert ISO_MICROS_Z.match(stopped["stopped_at"]) and ISO_MICROS_Z.match(stopped["server_time"])

    room = await room_row(state, room_id)
    assert room.current_track_id is None and room.is_playing is False
    assert room.playback_started_at is None and room.playback_paused_at is None
    assert stored_files(state.settings.audio_root) == [f"tracks/{queued['filename']}"]
    assert stored_files(state.settings.public_root) == []
    assert await count_rows(state, TrackVote) == 0  # the vote went with the track

    # Deleting a track that is not the current one leaves playback alone.
    await set_current_track(state, room_id, queued["id"])
    extra = await upload_ok(client, ben, room_id, long_wav(audio_dir), "extra.wav")
    with capture_events(state) as events:
        await client.delete(f"/api/rooms/{room_id}/tracks/{extra['id']}", headers=ben.headers)
    assert [event.type for event in events] == ["track_removed"]
    room = await room_row(state, room_id)
    assert room.current_track_id == uuid.UUID(queued["id"]) and room.is_playing is True


# --- search -------------------------------------------------------------------------------------------------------


async def test_search_covers_only_the_callers_rooms(
    client: httpx2.AsyncClient, state: AppState, audio_dir: Path
) -> None:
    room_id, (ana, ben) = await room_with_members(client, "ana", "ben")
    other_room, (zed,) = await room_with_members(client, "zed")
    wav = long_wav(audio_dir)
    names = ["Blue Moon.wav", "blue_sky.wav", "100% Blue.wav", "Red.wav", "BLUEBERRY.wav"]
    uploaded = {name: await upload_ok(client, ana, room_id, wav, name) for name in names}
    await upload_ok(client, zed, other_room, wav, "Blue secret.wav")
    await _vote(client, ben, room_id, uploaded["Red.wav"]["id"])

    async def search(account: Account, query: str | None) -> dict[str, Any]:
        params = {} if query is None else {"search": query}
        response = await client.get("/api/tracks", headers=account.headers, params=params)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert body["data"] == body["tracks"]  # the client reads `data`
        return body

    found = await search(ana, "blue")
    assert {t["original_name"] for t in found["tracks"]} == {
        "Blue Moon.wav",
        "blue_sky.wav",
        "100% Blue.wav",
        "BLUEBERRY.wav",
    }
    assert found["total_count"] == 4
    assert all(t["room_id"] == room_id and set(t) == QUEUE_ITEM_KEYS for t in found["tracks"])
    # Newest first.
    assert [t["original_name"] for t in found["tracks"]] == [
        "BLUEBERRY.wav",
        "100% Blue.wav",
        "blue_sky.wav",
        "Blue Moon.wav",
    ]
    # LIKE wildcards are literal characters.
    assert [t["original_name"] for t in (await search(ana, "%"))["tracks"]] == ["100% Blue.wav"]
    assert [t["original_name"] for t in (await search(ana, "e_s"))["tracks"]] == ["blue_sky.wav"]
    assert (await search(ana, "_"))["total_count"] == 1
    # Other rooms' tracks are invisible; user_has_voted is the caller's.
    assert (await search(zed, "blue"))["total_count"] == 1
    assert (await search(ben, "red"))["tracks"][0]["user_has_voted"] is True
    assert (await search(ana, "red"))["tracks"][0]["user_has_voted"] is False
    # Without a search text: the same shape, empty.
    assert await search(ana, None) == {"tracks": [], "total_count": 0, "data": []}
    assert await search(ana, "   ") == {"tracks": [], "total_count": 0, "data": []}
    assert await search(ana, "\x00") == {"tracks": [], "total_count": 0, "data": []}
    assert (await search(ana, "bl\x00ue"))["total_count"] == 4
    response = await client.get("/api/tracks", headers=ana.headers, params={"search": "x" * 256})
    assert response.status_code == 422 and response.json()["errors"]["search"]
    assert (await client.get("/api/tracks", params={"search": "blue"})).status_code == 401


async def test_search_is_bounded(client: httpx2.AsyncClient, state: AppState, audio_dir: Path) -> None:
    room_id, (ana,) = await room_with_members(client, "ana")
    data = long_wav(audio_dir)
    # Rows written directly: 60 uploads through HTTP would only slow the test down.
    async with state.sessionmaker() as session:
        for i in range(60):
            session.add(
                Track(
                    room_id=uuid.UUID(room_id),
                    uploader_id=uuid.UUID(ana.id),
                    filename=f"{uuid.uuid4()}.wav",
                    original_name=f"Song {i:02d}.wav",
                    file_path="tracks/none.wav",
                    duration_seconds=1,
                    file_size_bytes=data.stat().st_size,
                    mime_type="audio/wav",
                    created_at=utcnow(),
                )
            )
        await session.commit()
    response = await client.get("/api/tracks", headers=ana.headers, params={"search": "song"})
    body = response.json()
    assert len(body["tracks"]) == 50 and body["total_count"] == 60
