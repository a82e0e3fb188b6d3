"""Streaming uploaded audio back (docs/api.md#audio-streaming, docs/decisions.md#d8): members only, ranges, caching,
safe paths."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import httpx2
import pytest

from spotik.db.base import utcnow
from spotik.state import AppState
from spotik.tracks.models import Track
from tests.fixtures.audio_files import make_flac, make_m4a, make_mp3, make_ogg, make_wav
from tests.helpers import Account, register
from tests.integration.tracks_helpers import long_wav, room_with_members, upload, upload_ok

ISO_MICROS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
STREAM_FORBIDDEN = {"error": "You must be a participant of this room to stream tracks"}
NOT_FOUND = {"error": "Audio file not found"}


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audio")


def stream_url(track: dict[str, object]) -> str:
    return f"/api/tracks/{track['id']}/stream"


FORMATS: list[tuple[str, Callable[[Path], Path], str]] = [
    ("wav", lambda d: make_wav(d, 3.0), "audio/wav"),
    ("mp3", lambda d: make_mp3(d, 3.0), "audio/mpeg"),
    ("mp3-vbr-no-xing", lambda d: make_mp3(d, 3.0, vbr=True, xing=False), "audio/mpeg"),
    ("mp3-mpeg2", lambda d: make_mp3(d, 3.0, sample_rate=22050), "audio/mpeg"),
    ("m4a", lambda d: make_m4a(d, 3.0), "audio/mp4"),
    ("ogg", lambda d: make_ogg(d, 3.0), "audio/ogg"),
    ("flac", lambda d: make_flac(d, 3.0), "audio/flac"),
]


@pytest.mark.parametrize(("maker", "mime"), [pytest.param(m, t, id=name) for name, m, t in FORMATS])
async def test_uploaded_audio_streams_back_byte_exact(
    client: httpx2.AsyncClient, state: AppState, audio_dir: Path, maker: Callable[[Path], Path], mime: str
) -> None:
    room_id, (ana, ben) = await room_with_members(client, "ana", "ben")
    source = maker(audio_dir)
    track = await upload_ok(client, ana, room_id, source, "Mötley tune.bin")
    response = await client.get(stream_url(track), headers=ben.headers)
    assert response.status_code == 200
    assert response.content == source.read_bytes()
    assert response.headers["content-type"] == mime
    assert response.headers["content-length"] == str(source.stat().st_size)
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["cache-control"] == "public, max-age=3600"
    assert response.headers["etag"].startswith('"') and response.headers["last-modified"].endswith("GMT")
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('inline; filename="Motley tune.bin"')
    assert "filename*=UTF-8''M%C3%B6tley%20tune.bin" in disposition


async def test_single_ranges_416_and_conditional_get(
    client: httpx2.AsyncClient, state: AppState, audio_dir: Path
) -> None:
    room_id, (ana,) = await room_with_members(client, "ana")
    source = make_mp3(audio_dir, 3.0)
    data = source.read_bytes()
    size = len(data)
    track = await upload_ok(client, ana, room_id, source)
    url = stream_url(track)

    response = await client.get(url, headers={**ana.headers, "Range": "bytes=100-1099"})
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes 100-1099/{size}"
    assert response.headers["content-length"] == "1000"
    assert response.content == data[100:1100]

    response = await client.get(url, headers={**ana.headers, "Range": f"bytes={size - 10}-"})
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes {size - 10}-{size - 1}/{size}"
    assert response.content == data[-10:]

    for unsatisfiable in (f"bytes={size}-", f"bytes={size + 5}-{size + 10}", "bytes=50-10"):
        response = await client.get(url, headers={**ana.headers, "Range": unsatisfiable})
        assert response.status_code == 416, unsatisfiable
        assert response.headers["content-range"] == f"bytes */{size}"

    # Multi-range and malformed ranges: the whole file.
    for ignored in ("bytes=0-1,5-9", "lines=1-2", "bytes=x-y"):
        response = await client.get(url, headers={**ana.headers, "Range": ignored})
        assert response.status_code == 200 and response.content == data

    full = await client.get(url, headers=ana.headers)
    etag = full.headers["etag"]
    response = await client.get(url, headers={**ana.headers, "If-None-Match": etag})
    assert response.status_code == 304 and response.content == b""
    assert response.headers["etag"] == etag
    response = await client.get(url, headers={**ana.headers, "If-None-Match": '"something-else"'})
    assert response.status_code == 200 and response.content == data
    response = await client.get(url, headers={**ana.headers, "If-Modified-Since": full.headers["last-modified"]})
    assert response.status_code == 304

    head = await client.head(url, headers=ana.headers)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(size)


async def test_stream_token_from_query_and_authorization(
    client: httpx2.AsyncClient, state: AppState, audio_dir: Path
) -> None:
    room_id, (ana,) = await room_with_members(client, "ana")
    eve = await register(client, "eve")
    track = await upload_ok(client, ana, room_id, long_wav(audio_dir))
    url = stream_url(track)

    # The client's <audio src> cannot send headers: ?token= is how it plays.
    response = await client.get(url, params={"token": ana.token, "x": "1"})
    assert response.status_code == 200 and response.content == long_wav(audio_dir).read_bytes()

    response = await client.get(url)
    assert response.status_code == 401
    assert response.json() == {"success": False, "message": "Token not provided", "error": "Token absent"}
    response = await client.get(url, params={"token": "not.a.jwt"})
    assert response.status_code == 401 and response.json()["error"] == "Invalid token"

    response = await client.get(url, params={"token": eve.token})
    assert response.status_code == 403 and response.json() == STREAM_FORBIDDEN

    for bad in (str(uuid.uuid4()), "nope", "1"):
        response = await client.get(f"/api/tracks/{bad}/stream", headers=ana.headers)
        assert response.status_code == 404 and response.json() == {"error": "Track not found"}

    (state.settings.audio_root / "tracks" / track["filename"]).unlink()
    response = await client.get(url, headers=ana.headers)
    assert response.status_code == 404 and response.json() == NOT_FOUND


async def test_audio_by_filename_is_for_room_members(
    client: httpx2.AsyncClient, state: AppState, audio_dir: Path
) -> None:
    room_id, (ana, ben) = await room_with_members(client, "ana", "ben")
    eve = await register(client, "eve")
    source = make_mp3(audio_dir, 3.0)
    track = await upload_ok(client, ana, room_id, source, "tone.mp3")
    filename = track["filename"]
    stored = state.settings.audio_root / "tracks" / filename

    response = await client.get(f"/api/audio/{filename}", headers=ben.headers)
    assert response.status_code == 200
    assert response.content == source.read_bytes()
    assert response.headers["content-type"] == "audio/mpeg"
    assert response.headers["cache-control"] == "public, max-age=3600, immutable"
    assert response.headers["x-content-type-options"] == "nosniff"
    ranged = await client.get(f"/api/audio/{filename}", headers={**ben.headers, "Range": "bytes=0-9"})
    assert ranged.status_code == 206 and ranged.content == source.read_bytes()[:10]

    metadata = await client.get(f"/api/audio/{filename}/metadata", headers=ben.headers)
    assert metadata.status_code == 200
    body = metadata.json()
    assert body == {
        "filename": filename,
        "size": stored.stat().st_size,
        "mime_type": "audio/mpeg",
        "last_modified": body["last_modified"],
        "formatted_size": body["formatted_size"],
        "duration_seconds": 3,
        "original_name": "tone.mp3",
        "track_id": track["id"],
    }
    assert ISO_MICROS_Z.match(body["last_modified"])
    assert datetime.fromisoformat(body["last_modified"]).timestamp() == pytest.approx(stored.stat().st_mtime, abs=1e-5)
    assert re.fullmatch(r"\d+(\.\d+)? KB", body["formatted_size"])

    for path in (f"/api/audio/{filename}", f"/api/audio/{filename}/metadata"):
        response = await client.get(path)
        assert response.status_code == 401
        response = await client.get(path, headers=eve.headers)
        assert response.status_code == 403 and response.json() == STREAM_FORBIDDEN
        response = await client.get(path.replace(filename, f"{uuid.uuid4()}.mp3"), headers=ana.headers)
        assert response.status_code == 404 and response.json() == NOT_FOUND


async def _planted_track(state: AppState, room_id: str, owner: Account, file_path: str, filename: str) -> str:
    async with state.sessionmaker() as session:
        track = Track(
            room_id=uuid.UUID(room_id),
            uploader_id=uuid.UUID(owner.id),
            filename=filename,
            original_name=filename,
            file_path=file_path,
            duration_seconds=3,
            file_size_bytes=10,
            mime_type="audio/mpeg",
            created_at=utcnow(),
        )
        session.add(track)
        await session.commit()
        return str(track.id)


async def test_no_path_reaches_outside_the_storage_root(
    client: httpx2.AsyncClient, state: AppState, audio_dir: Path, tmp_path: Path
) -> None:
    """Rows whose file_path escapes the audio root (.., absolute, a symlink out) serve nothing."""
    room_id, (ana,) = await room_with_members(client, "ana")
    audio_root = state.settings.audio_root
    secret = audio_root.parent / "secret.mp3"
    secret.write_bytes(make_mp3(audio_dir, 3.0).read_bytes())
    (audio_root / "tracks").mkdir(parents=True, exist_ok=True)
    (audio_root / "tracks" / "link.mp3").symlink_to(secret)
    (audio_root / "tracks" / "dir.mp3").mkdir()
    planted = {
        "dotdot.mp3": "../secret.mp3",
        "deep.mp3": "tracks/../../secret.mp3",
        "absolute.mp3": str(secret),
        "link.mp3": "tracks/link.mp3",
        "dir.mp3": "tracks/dir.mp3",
        "empty.mp3": "",
    }
    for filename, file_path in planted.items():
        track_id = await _planted_track(state, room_id, ana, file_path, filename)
        for url in (f"/api/tracks/{track_id}/stream", f"/api/audio/{filename}", f"/api/audio/{filename}/metadata"):
            response = await client.get(url, headers=ana.headers)
            assert response.status_code == 404, (url, file_path)
            assert response.json() == NOT_FOUND

    # Encoded separators and dot segments in the URL never match a stored file either.
    for raw in ("..%2Fsecret.mp3", "%2E%2E", "tracks%2Flink.mp3", "..%5Csecret.mp3", "%00"):
        response = await client.get(f"/api/audio/{raw}", headers=ana.headers)
        assert response.status_code == 404, raw


async def test_refused_upload_cannot_be_streamed(client: httpx2.AsyncClient, state: AppState) -> None:
    room_id, (ana,) = await room_with_members(client, "ana")
    response = await upload(client, ana, room_id, b"not audio" * 100, "x.mp3")
    assert response.status_code == 422
    listed = await client.get(f"/api/rooms/{room_id}/tracks", headers=ana.headers)
    assert listed.json() == {"tracks": [], "total_count": 0}
