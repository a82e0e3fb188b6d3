"""Hostile uploads (issue 14): track uploads (``POST /api/rooms/{room}/tracks``) and room covers
(``POST /api/rooms/{room}/cover``) attacked through their content, their file names, the multipart structure and
the HTTP framing, on SQLite and PostgreSQL.

Every row gets the contract's answer (docs/api.md#tracks, docs/api.md#room-covers-and-public-storage), then "nothing
written" (no new ``tracks`` row, the storage folders listed file by file, temporary files included, are unchanged)
and "server healthy" (it still answers a normal request). The decisions where the docs were silent:

* **Polyglots.** The format is what the bytes are: audio magic followed by HTML, a ZIP or a ``<script>`` is refused
  (422) unless the file is complete, valid audio; a valid audio file with HTML or a ZIP appended *is* valid audio and
  is accepted, stored under a name of ours and served only as the detected audio type with
  ``X-Content-Type-Options: nosniff`` (never as HTML). Covers likewise: an image magic number followed by anything
  but that image's structure is "not an image" (422); a complete image with junk appended is stored and served as
  that image.
* **Lying headers.** The stored duration is the audio really present: an MP3 Xing/Info frame count, a WAV ``data``
  size, a FLAC ``STREAMINFO`` total and an MPEG-4 movie/media header that promise hours in a few kilobytes are not
  believed (the frames, bytes or sample table are measured); an Ogg stream whose granule positions promise more
  than its packets can decode to is refused (422), since its real length cannot be measured without decoding.
* **Metadata bombs.** Tags are never parsed: a 24 MB ID3 frame or hundreds of thousands of ID3 frames, Vorbis
  comments or iTunes atoms cost the probe milliseconds and no memory (bounds asserted below).
* **File names** are never refused: ``original_name`` is the client's name reduced to a safe base name, as the code
  does today (docs/api.md#tracks): the part after the last ``/`` or ``\\``, without control, format (U+202E …) and
  other non-printable characters, at most 255 characters; a name left empty (or ``.``/``..``) becomes
  ``track.<ext>``. A name that is not valid UTF-8 is read as Latin-1 (what legacy clients send).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import struct
import subprocess
import time
import tracemalloc
import uuid
import zipfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
from mutagen.flac import FLAC, Picture
from mutagen.mp4 import MP4, MP4FreeForm
from mutagen.oggvorbis import OggVorbis
from sqlalchemy import select

from spotik.settings import Settings
from spotik.state import AppState
from spotik.tracks.models import Track
from spotik.tracks.uploads import is_temporary_name
from tests.events import capture_events
from tests.fixtures.audio_files import make_flac, make_m4a, make_mp3, make_ogg, make_opus, make_wav, require_ffmpeg
from tests.helpers import Account, register
from tests.integration.test_covers import jpeg_image, png_image
from tests.integration.test_websocket_support import WAIT, LiveServer, live_server, wait_for
from tests.integration.tracks_helpers import count_rows, create_room, raw_post, stored_files
from tests.openapi_contract import live_async_contract_hooks

INVALID_AUDIO = {
    "error": "Validation failed",
    "errors": {"audio_file": ["Invalid audio file format or corrupted file"]},
}
REQUIRED = {"error": "Validation failed", "errors": {"audio_file": ["The audio file field is required."]}}
NOT_A_FILE = {"error": "Validation failed", "errors": {"audio_file": ["The audio file field must be a file."]}}
MALFORMED = {"error": "Malformed upload", "message": "The request body is not valid multipart/form-data."}
TOO_LARGE = {"error": "File too large", "message": "The audio file may not be greater than 50 MB."}
NOT_AN_IMAGE = {"error": "Validation failed", "errors": {"cover_image": ["The cover image field must be an image."]}}
NO_COVER = {"error": "Validation failed", "errors": {"cover": ["No cover_image or cover_data provided"]}}
WRONG_IMAGE_TYPE = {
    "error": "Validation failed",
    "errors": {"cover_image": ["The cover image field must be a file of type: jpg, jpeg, png, webp."]},
}
HTML = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>\n"
BOUNDARY = "hostileBoundary0123"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
BOMB_SECONDS = 20.0  # the old probe took minutes to hours on the bombs below; the new one takes milliseconds
BOMB_PEAK_BYTES = 8 * 1024 * 1024  # Python allocations during a bomb's whole upload request (tracemalloc)


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile-audio")


# --- building hostile files -------------------------------------------------------------------------------------


def synchsafe(size: int) -> bytes:
    return bytes([(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F])


def id3_tag(frames: bytes) -> bytes:
    """An ID3v2.3 tag around ``frames``."""
    return b"ID3\x03\x00\x00" + synchsafe(len(frames)) + frames


def id3_frame(frame_id: bytes, payload: bytes) -> bytes:
    return frame_id + struct.pack(">I", len(payload)) + b"\x00\x00" + payload


def zip_archive() -> bytes:
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("index.html", HTML)
        archive.writestr("payload.sh", b"#!/bin/sh\necho owned\n")
    return buffer.getvalue()


def mp3(directory: Path, seconds: float = 3.0, *, xing: bool = True) -> bytes:
    return make_mp3(directory, seconds, xing=xing, id3=False).read_bytes()


def xing_lie(directory: Path) -> bytes:
    """A one-second VBR MP3 whose Xing header claims ten million frames (about 72 hours)."""
    data = bytearray(make_mp3(directory, 1.0, vbr=True, xing=True, id3=False).read_bytes())
    at = data.find(b"Xing")
    assert at > 0 and int.from_bytes(data[at + 4 : at + 8], "big") & 0x1, "no frame count in the Xing header"
    data[at + 8 : at + 12] = (10_000_000).to_bytes(4, "big")
    return bytes(data)


def wav_data_lie(directory: Path) -> bytes:
    data = bytearray(make_wav(directory, 1.0, sample_rate=8000, channels=1).read_bytes())
    at = data.find(b"data")
    data[at + 4 : at + 8] = (0x7FFFFFF0).to_bytes(4, "little")  # 74 hours at 16 kB/s
    return bytes(data)


def flac_total_lie(directory: Path) -> bytes:
    data = bytearray(make_flac(directory, 1.0).read_bytes())
    packed = int.from_bytes(data[18:26], "big")  # STREAMINFO: ..., 36 bits of total samples
    data[18:26] = ((packed & ~((1 << 36) - 1)) | 44100 * 3600 * 5).to_bytes(8, "big")
    return bytes(data)


def m4a_header_lie(directory: Path) -> bytes:
    """A one-second M4A whose movie and media headers claim five hours."""
    data = bytearray(make_m4a(directory, 1.0).read_bytes())
    for box in (b"mvhd", b"mdhd"):
        at = data.find(box)
        assert at > 0 and data[at + 4] == 0, f"no version-0 {box!r}"
        timescale = int.from_bytes(data[at + 16 : at + 20], "big")
        data[at + 20 : at + 24] = (timescale * 3600 * 5).to_bytes(4, "big")
    return bytes(data)


def _ogg_crc(page: bytes) -> int:
    crc = 0
    for byte in page:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
    return crc


def ogg_granule_lie(data: bytes, granule: int) -> bytes:
    """The Ogg file with its last page's granule position replaced (and that page's CRC recomputed)."""
    out = bytearray(data)
    last = out.rfind(b"OggS")
    out[last + 6 : last + 14] = granule.to_bytes(8, "little")
    out[last + 22 : last + 26] = bytes(4)
    out[last + 22 : last + 26] = _ogg_crc(bytes(out[last:])).to_bytes(4, "little")
    return bytes(out)


def wav_with_chunk(wav: bytes, chunk_id: bytes, payload: bytes) -> bytes:
    body = wav[12:] + chunk_id + struct.pack("<I", len(payload)) + payload + b"\x00" * (len(payload) & 1)
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


def tagged_copy(directory: Path, source: Path, name: str, tag: Callable[[Path], None]) -> bytes:
    """``source`` re-tagged by mutagen's writer (cached in ``directory`` for the session)."""
    target = directory / name
    if not target.exists():
        work = directory / f".{name}.tmp"
        shutil.copyfile(source, work)
        tag(work)
        work.replace(target)
    return target.read_bytes()


def flac_bomb(directory: Path) -> bytes:
    def tag(path: Path) -> None:
        audio = FLAC(path)
        audio["comment"] = ["v"] * 500_000
        picture = Picture()
        picture.mime, picture.data = "image/png", bytes(12 * 1024 * 1024)
        audio.add_picture(picture)
        audio.save()

    return tagged_copy(directory, make_flac(directory, 3.0), "bomb.flac", tag)


def ogg_bomb(directory: Path) -> bytes:
    def tag(path: Path) -> None:
        audio = OggVorbis(path)
        audio["comment"] = ["v"] * 500_000
        audio.save()

    return tagged_copy(directory, make_ogg(directory, 3.0), "bomb.ogg", tag)


def m4a_bomb(directory: Path) -> bytes:
    def tag(path: Path) -> None:
        audio = MP4(path)
        for index in range(100_000):
            audio[f"----:com.example:{index}"] = [MP4FreeForm(b"v")]
        audio.save()

    return tagged_copy(directory, make_m4a(directory, 3.0), "bomb.m4a", tag)


def m4a_moov_last(directory: Path) -> Path:
    """The M4A fixture remuxed with its movie box after the media data (as encoders write it without faststart)."""
    target = directory / "moov_last.m4a"
    if not target.exists():
        source = make_m4a(directory, 3.0)
        work = directory / ".moov_last.m4a.tmp"
        command = [require_ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(source), "-c", "copy"]
        subprocess.run([*command, "-f", "ipod", str(work)], check=True, capture_output=True, timeout=60)
        work.replace(target)
    return target


# --- the room, the snapshot and the health check ----------------------------------------------------------------


@dataclass
class Scene:
    client: httpx2.AsyncClient
    state: AppState
    admin: Account  # the room's administrator (a member)
    room_id: str

    @property
    def url(self) -> str:
        return f"/api/rooms/{self.room_id}/tracks"

    async def post(self, body: bytes, content_type: str = MULTIPART, **headers: str) -> httpx2.Response:
        return await self.client.post(
            self.url, content=body, headers={**self.admin.headers, "Content-Type": content_type, **headers}
        )


@pytest.fixture
async def scene(client: httpx2.AsyncClient, state: AppState) -> Scene:
    admin = await register(client, "uploader")
    return Scene(client, state, admin, await create_room(client, admin))


def storage(state: AppState) -> list[str]:
    """Every file of both storage roots, hidden and temporary ones included."""
    settings = state.settings
    return [f"audio:{n}" for n in stored_files(settings.audio_root)] + [
        f"public:{n}" for n in stored_files(settings.public_root)
    ]


async def snapshot(state: AppState) -> tuple[int, list[str]]:
    return await count_rows(state, Track), storage(state)


async def assert_nothing_written(state: AppState, before: tuple[int, list[str]]) -> None:
    after = await snapshot(state)
    assert after == before, f"something was written: {before} -> {after}"
    assert not [name for name in after[1] if is_temporary_name(Path(name).name)]


async def assert_healthy(scene: Scene, tracks: int) -> None:
    """The server still answers: a ping, and the room's queue as it should be."""
    assert (await scene.client.get("/api/ping")).status_code == 200
    response = await scene.client.get(scene.url, headers=scene.admin.headers)
    assert response.status_code == 200 and response.json()["total_count"] == tracks


def part(name: str, data: bytes, filename: str | None = "song.mp3", *, disposition: bytes | None = None) -> bytes:
    """One multipart part; ``disposition`` replaces the ``Content-Disposition`` parameters as raw bytes."""
    params = disposition
    if params is None:
        params = f'name="{name}"'.encode() + (f'; filename="{filename}"'.encode() if filename is not None else b"")
    return (
        f"--{BOUNDARY}\r\n".encode()
        + b"Content-Disposition: form-data; "
        + params
        + b"\r\nContent-Type: application/octet-stream\r\n\r\n"
        + data
        + b"\r\n"
    )


def body_of(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


# --- 1. content: polyglots, wrong magic, truncation, zero length --------------------------------------------------


@dataclass(frozen=True)
class Content:
    id: str
    make: Callable[[Path], bytes]
    duration: int | None = None  # None: refused with INVALID_AUDIO; else accepted, with this stored duration
    mime: str | None = None


REFUSED_CONTENT = [
    Content("id3-tag-then-html", lambda d: id3_tag(id3_frame(b"TIT2", b"\x00x")) + HTML),
    Content("mp3-frame-header-then-script", lambda d: b"\xff\xfb\x90\x64" + HTML * 20),
    Content("two-mp3-frames-then-script", lambda d: mp3(d)[:836] + HTML * 20),
    Content("riff-wave-magic-then-html", lambda d: b"RIFF\x00\x10\x00\x00WAVE" + HTML * 20),
    Content("flac-magic-then-zip", lambda d: b"fLaC" + zip_archive()),
    Content("ogg-magic-then-html", lambda d: b"OggS\x00\x02" + bytes(20) + b"\x01\x08\x01vorbis" + HTML * 20),
    Content("ftyp-m4a-then-html", lambda d: b"\x00\x00\x00\x18ftypM4A \x00\x00\x00\x00M4A mp42" + HTML * 20),
    Content("zip-holding-an-mp3", lambda d: zip_of_mp3(d)),
    Content("html-with-mp3-frames-after-8k", lambda d: HTML * 200 + mp3(d)),
    Content("short-html-then-mp3-frames", lambda d: HTML * 20 + mp3(d)),
    Content("id3-tag-then-html-then-mp3-frames", lambda d: id3_tag(id3_frame(b"TIT2", b"\x00x")) + HTML * 20 + mp3(d)),
    Content("pdf-then-mp3-frames", lambda d: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + mp3(d)),
    Content("html", lambda d: HTML * 50),
    Content("svg-script", lambda d: b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'),
    Content("pdf", lambda d: b"%PDF-1.7\n" + bytes(4000)),
    Content("elf-binary", lambda d: b"\x7fELF\x02\x01\x01" + bytes(4000)),
    Content("png-image", lambda d: png_image()),
    Content("gzip", lambda d: b"\x1f\x8b\x08\x00" + bytes(4000)),
    Content("zero-length", lambda d: b""),
    Content("wav-header-only", lambda d: make_wav(d, 1.0).read_bytes()[:44]),
    Content("mp3-cut-to-two-frames", lambda d: make_mp3(d, 3.0, xing=False, id3=False).read_bytes()[:835]),
    Content("flac-metadata-only", lambda d: make_flac(d, 3.0).read_bytes()[:42]),
    Content("m4a-cut-in-half", lambda d: (lambda b: b[: len(b) // 2])(make_m4a(d, 3.0).read_bytes())),
    Content("ogg-first-page-only", lambda d: make_ogg(d, 3.0).read_bytes()[:58]),
    Content(
        "ogg-vorbis-granule-claims-5-hours", lambda d: ogg_granule_lie(make_ogg(d, 1.0).read_bytes(), 44100 * 18000)
    ),
    Content(
        "ogg-opus-granule-claims-5-hours", lambda d: ogg_granule_lie(make_opus(d, 1.0).read_bytes(), 48000 * 18000)
    ),
]
ACCEPTED_CONTENT = [
    # Complete, valid audio with something appended is valid audio: stored under our name, served as audio only.
    Content(
        "wav-then-html", lambda d: make_wav(d, 3.0, sample_rate=8000, channels=1).read_bytes() + HTML, 3, "audio/wav"
    ),
    Content("mp3-then-zip", lambda d: mp3(d) + zip_archive(), 3, "audio/mpeg"),
    Content("mp3-then-script", lambda d: mp3(d) + HTML * 20, 3, "audio/mpeg"),
    # Headers that claim hours: the audio really present is measured.
    Content("mp3-xing-claims-72-hours", xing_lie, 1, "audio/mpeg"),
    Content("wav-data-size-claims-74-hours", wav_data_lie, 1, "audio/wav"),
    Content("flac-streaminfo-claims-5-hours", flac_total_lie, 1, "audio/flac"),
    Content("m4a-headers-claim-5-hours", m4a_header_lie, 1, "audio/mp4"),
]


def zip_of_mp3(directory: Path) -> bytes:
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("song.mp3", mp3(directory))
    return buffer.getvalue()


@pytest.mark.parametrize("row", [pytest.param(r, id=r.id) for r in REFUSED_CONTENT])
async def test_content_that_is_not_complete_audio_is_refused(scene: Scene, audio_dir: Path, row: Content) -> None:
    data = row.make(audio_dir)
    before = await snapshot(scene.state)
    response = await scene.post(body_of(part("audio_file", data)))
    assert response.status_code == 422, response.text
    assert response.json() == INVALID_AUDIO
    await assert_nothing_written(scene.state, before)
    await assert_healthy(scene, tracks=0)


@pytest.mark.parametrize("row", [pytest.param(r, id=r.id) for r in ACCEPTED_CONTENT])
async def test_valid_audio_is_measured_honestly_and_served_only_as_audio(
    scene: Scene, audio_dir: Path, row: Content
) -> None:
    data = row.make(audio_dir)
    response = await scene.post(body_of(part("audio_file", data, "index.html")))
    assert response.status_code == 201, response.text
    track = response.json()["track"]
    assert (track["duration_seconds"], track["mime_type"]) == (row.duration, row.mime)
    assert re.fullmatch(r"[0-9a-f-]{36}\.(mp3|wav|flac|m4a|ogg)", track["filename"])
    assert storage(scene.state) == [f"audio:tracks/{track['filename']}"]
    async with scene.state.sessionmaker() as session:
        row_duration = await session.scalar(select(Track.duration_seconds).where(Track.id == uuid.UUID(track["id"])))
    assert row_duration == row.duration
    served = await scene.client.get(track["file_url"], headers=scene.admin.headers)
    assert served.status_code == 200 and served.content == data
    assert served.headers["content-type"] == row.mime
    assert served.headers["x-content-type-options"] == "nosniff"
    assert served.headers["content-disposition"].startswith("inline;")
    await assert_healthy(scene, tracks=1)


# --- 2. metadata bombs: bounded in time and memory ----------------------------------------------------------------

BOMBS: list[tuple[str, Callable[[Path], bytes], str]] = [
    (
        "mp3-24mb-id3-frame",
        lambda d: id3_tag(id3_frame(b"APIC", b"\x00image/png\x00\x03\x00" + bytes(24 * 1024 * 1024))) + mp3(d),
        "audio/mpeg",
    ),
    ("mp3-300k-id3-frames", lambda d: id3_tag(id3_frame(b"TIT2", b"\x00v") * 300_000) + mp3(d), "audio/mpeg"),
    (
        "wav-id3-chunk-300k-frames",
        lambda d: wav_with_chunk(
            make_wav(d, 3.0, sample_rate=8000, channels=1).read_bytes(),
            b"id3 ",
            id3_tag(id3_frame(b"TIT2", b"\x00v") * 300_000),
        ),
        "audio/wav",
    ),
    ("flac-500k-comments-12mb-picture", flac_bomb, "audio/flac"),
    ("ogg-vorbis-500k-comments", ogg_bomb, "audio/ogg"),
    ("m4a-100k-itunes-atoms", m4a_bomb, "audio/mp4"),
    (
        "mp3-then-20mb-of-false-frame-headers",
        lambda d: mp3(d, xing=False) + b"\xff\xfb\x90\x64" * (5 * 1024 * 1024),
        "audio/mpeg",
    ),
    ("mp3-then-20mb-of-ff-bytes", lambda d: mp3(d, xing=False) + b"\xff" * (20 * 1024 * 1024), "audio/mpeg"),
]


@pytest.mark.parametrize(("make", "mime"), [pytest.param(m, t, id=name) for name, m, t in BOMBS])
async def test_metadata_bombs_are_probed_in_bounded_time_and_memory(
    scene: Scene, audio_dir: Path, make: Callable[[Path], bytes], mime: str
) -> None:
    body = body_of(part("audio_file", make(audio_dir)))
    tracemalloc.start()
    try:
        started = time.perf_counter()
        response = await scene.post(body)
        elapsed = time.perf_counter() - started
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 201, response.text
    track = response.json()["track"]
    assert (track["duration_seconds"], track["mime_type"]) == (3, mime)
    assert elapsed < BOMB_SECONDS, f"the upload took {elapsed:.1f}s"
    assert peak < BOMB_PEAK_BYTES, f"the upload allocated {peak / 2**20:.1f} MiB at its peak"
    assert storage(scene.state) == [f"audio:tracks/{track['filename']}"]
    await assert_healthy(scene, tracks=1)


async def test_itunes_tags_after_the_media_data_are_not_read_either(scene: Scene, audio_dir: Path) -> None:
    """An M4A whose movie box comes last, with a tag list of 200,000 atoms appended inside it."""
    data = bytearray(m4a_moov_last(audio_dir).read_bytes())
    moov = data.rfind(b"moov") - 4
    assert int.from_bytes(data[moov : moov + 4], "big") == len(data) - moov, "the movie box is not last"

    def box(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", 8 + len(payload)) + kind + payload

    item = box(b"\xa9cmt", box(b"data", b"\x00\x00\x00\x01\x00\x00\x00\x00v"))
    udta = box(b"udta", box(b"meta", b"\x00\x00\x00\x00" + box(b"ilst", item * 200_000)))
    data += udta
    data[moov : moov + 4] = (len(data) - moov).to_bytes(4, "big")
    started = time.perf_counter()
    response = await scene.post(body_of(part("audio_file", bytes(data))))
    assert time.perf_counter() - started < BOMB_SECONDS
    assert response.status_code == 201, response.text
    assert response.json()["track"]["duration_seconds"] == 3


# --- 3. file names -------------------------------------------------------------------------------------------------

NAMES: list[tuple[str, bytes, str]] = [
    ("dot-dot-slash", b"../../../etc/passwd", "passwd"),
    ("absolute", b"/etc/shadow", "shadow"),
    ("backslashes", b"..\\..\\Windows\\win.ini", "win.ini"),
    ("only-dot-dot", b"..", "track.wav"),
    ("only-dot", b".", "track.wav"),
    ("trailing-slash", b"music/../", "track.wav"),
    ("nul", b"evil\x00.php.wav", "evil.php.wav"),
    ("control-characters", b"a\tb\x1b[31mc\x7f\x08d.wav", "ab[31mcd.wav"),
    ("right-to-left-override", "invoice\u202egnp.exe".encode(), "invoicegnp.exe"),
    ("bidi-isolates-and-zero-width", "a\u2066b\u2069c\u200bd\u200f.wav".encode(), "abcd.wav"),
    ("10000-characters", b"x" * 10_000 + b".wav", "x" * 255),
    ("255-emoji", "\U0001f3b5".encode() * 300, "\U0001f3b5" * 255),
    ("unicode", "Música — ダンス.wav".encode(), "Música — ダンス.wav"),
    ("invalid-utf8-is-latin-1", b"M\xfasica.wav", "Música.wav"),
    ("encoded-surrogate", b"a\xed\xa0\x80b.wav", "aíb.wav"),
    ("only-controls", b"\x01\x02\x03", "track.wav"),
    ("percent-encoded-crlf-stays-text", b"a%0D%0Ab.wav", "a%0D%0Ab.wav"),
    ("html", b"<img src=x onerror=alert(1)>.wav", "<img src=x onerror=alert(1)>.wav"),
]


@pytest.mark.parametrize(("raw", "expected"), [pytest.param(r, e, id=name) for name, r, e in NAMES])
async def test_file_names_are_reduced_to_a_safe_base_name(
    scene: Scene, audio_dir: Path, raw: bytes, expected: str
) -> None:
    audio = make_wav(audio_dir, 3.0, sample_rate=8000, channels=1).read_bytes()
    disposition = b'name="audio_file"; filename="' + raw + b'"'
    response = await scene.post(body_of(part("audio_file", audio, disposition=disposition)))
    assert response.status_code == 201, response.text
    track = response.json()["track"]
    name = track["original_name"]
    assert name == expected
    assert all(char.isprintable() for char in name) and "/" not in name and "\\" not in name
    assert 0 < len(name) <= 255 and name not in (".", "..")
    # Stored as answered (PostgreSQL's varchar(255) counts characters), and never used as a path.
    async with scene.state.sessionmaker() as session:
        assert await session.scalar(select(Track.original_name).where(Track.id == uuid.UUID(track["id"]))) == name
    assert storage(scene.state) == [f"audio:tracks/{track['filename']}"]
    # The name reaches the download header only as a quoted ASCII fallback and an RFC 5987 value.
    served = await scene.client.get(track["file_url"], headers=scene.admin.headers)
    disposition_header = served.headers["content-disposition"]
    assert disposition_header.isascii() and not re.search(r"[\x00-\x1f\x7f]", disposition_header)
    fallback = re.fullmatch(
        r'inline; filename="([^"\\]*)"(; filename\*=UTF-8\'\'[A-Za-z0-9%!#$&+.^_`|~-]*)?', disposition_header
    )
    assert fallback is not None, disposition_header


async def test_hostile_names_are_harmless_in_the_broadcast_too(scene: Scene, audio_dir: Path) -> None:
    """The name goes into ``track_added``'s message as text; nothing of it is interpreted."""
    audio = make_wav(audio_dir, 3.0, sample_rate=8000, channels=1).read_bytes()
    disposition = b'name="audio_file"; filename="..\\\\x\x00\xe2\x80\xaey.wav"'
    with capture_events(scene.state) as events:
        response = await scene.post(body_of(part("audio_file", audio, disposition=disposition)))
    assert response.status_code == 201
    (added,) = [event for event in events if event.type == "track_added"]
    assert added.data["track"]["original_name"] == "xy.wav"
    assert added.data["message"] == "uploader added xy.wav"


# --- 4. the multipart structure ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Structure:
    id: str
    body: Callable[[bytes], bytes]  # from a valid WAV
    status: int
    answer: dict[str, Any]
    content_type: str = MULTIPART


STRUCTURES = [
    Structure("no-file-at-all", lambda a: body_of(part("genre_id", b"1", None)), 422, REQUIRED),
    Structure("empty-body", lambda a: b"", 400, MALFORMED),
    Structure("only-the-closing-boundary", lambda a: f"--{BOUNDARY}--\r\n".encode(), 422, REQUIRED),
    Structure("file-under-another-name", lambda a: body_of(part("file", a)), 422, REQUIRED),
    Structure("file-under-a-php-array-name", lambda a: body_of(part("audio_file[]", a)), 422, REQUIRED),
    Structure("file-under-an-upper-case-name", lambda a: body_of(part("AUDIO_FILE", a)), 422, REQUIRED),
    Structure("audio-file-as-a-text-field", lambda a: body_of(part("audio_file", a, None)), 422, NOT_A_FILE),
    Structure(
        "filename-star-only-is-not-a-file",
        lambda a: body_of(part("audio_file", a, disposition=b"name=\"audio_file\"; filename*=UTF-8''song.wav")),
        422,
        NOT_A_FILE,
    ),
    Structure("browser-empty-file-input", lambda a: body_of(part("audio_file", b"", "")), 422, REQUIRED),
    Structure(
        "first-of-two-audio-files-counts-and-is-refused",
        lambda a: body_of(part("audio_file", HTML * 10), part("audio_file", a)),
        422,
        INVALID_AUDIO,
    ),
    Structure("cut-off-mid-part", lambda a: body_of(part("audio_file", a))[: len(a) // 2], 400, MALFORMED),
    Structure("cut-off-before-the-closing-boundary", lambda a: part("audio_file", a), 400, MALFORMED),
    Structure(
        "part-without-a-name",
        lambda a: body_of(part("x", a, disposition=b'filename="song.wav"')),
        400,
        MALFORMED,
    ),
    Structure(
        "raw-crlf-in-a-file-name",
        lambda a: body_of(part("x", a, disposition=b'name="audio_file"; filename="a\r\nb.wav"')),
        400,
        MALFORMED,
    ),
    Structure(
        "a-part-header-of-one-mebibyte",
        lambda a: body_of(part("x", a, disposition=b'name="audio_file"; filename="' + b"a" * 2**20 + b'"')),
        400,
        MALFORMED,
    ),
    Structure("forty-parts", lambda a: body_of(*(part(f"f{i}", b"x", None) for i in range(40))), 400, MALFORMED),
    Structure("no-boundary-parameter", lambda a: body_of(part("audio_file", a)), 400, MALFORMED, "multipart/form-data"),
    Structure(
        "another-boundary",
        lambda a: body_of(part("audio_file", a)),
        400,
        MALFORMED,
        "multipart/form-data; boundary=somethingElse",
    ),
    # Only multipart bodies are uploads (docs/api.md#errors, 415): anything else is a form without the file.
    Structure("json-content-type", lambda a: body_of(part("audio_file", a)), 422, REQUIRED, "application/json"),
    Structure("text-content-type", lambda a: body_of(part("audio_file", a)), 422, REQUIRED, "text/plain"),
    Structure(
        "multipart-mixed", lambda a: body_of(part("audio_file", a)), 422, REQUIRED, "multipart/mixed; boundary=x"
    ),
    Structure("urlencoded", lambda a: b"audio_file=song.wav", 422, REQUIRED, "application/x-www-form-urlencoded"),
    Structure("no-content-type", lambda a: body_of(part("audio_file", a)), 422, REQUIRED, ""),
]


@pytest.mark.parametrize("row", [pytest.param(r, id=r.id) for r in STRUCTURES])
async def test_multipart_structure(scene: Scene, audio_dir: Path, row: Structure) -> None:
    audio = make_wav(audio_dir, 3.0, sample_rate=8000, channels=1).read_bytes()
    before = await snapshot(scene.state)
    headers = {**scene.admin.headers}
    if row.content_type:
        headers["Content-Type"] = row.content_type
    response = await scene.client.post(scene.url, content=row.body(audio), headers=headers)
    assert response.status_code == row.status, response.text
    assert response.json() == row.answer
    await assert_nothing_written(scene.state, before)
    await assert_healthy(scene, tracks=0)


async def test_two_audio_files_store_only_the_first(scene: Scene, audio_dir: Path) -> None:
    first = make_wav(audio_dir, 3.0, sample_rate=8000, channels=1).read_bytes()
    response = await scene.post(body_of(part("audio_file", first, "one.wav"), part("audio_file", mp3(audio_dir))))
    assert response.status_code == 201
    track = response.json()["track"]
    assert (track["original_name"], track["mime_type"]) == ("one.wav", "audio/wav")
    assert storage(scene.state) == [f"audio:tracks/{track['filename']}"]  # the second part left nothing behind


async def test_a_declared_length_over_the_limit_is_refused_before_any_byte_is_read(scene: Scene) -> None:
    reads = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal reads
        for _ in range(4):
            reads += 1
            yield b"\x00" * 65536

    before = await snapshot(scene.state)
    response = await scene.client.post(
        scene.url,
        content=body(),
        headers={**scene.admin.headers, "Content-Type": MULTIPART, "Content-Length": str(2**40)},
    )
    assert response.status_code == 413 and response.json() == TOO_LARGE
    assert reads == 0
    await assert_nothing_written(scene.state, before)
    await assert_healthy(scene, tracks=0)


# --- 5. over real sockets: a declared length over the limit, a client that goes away mid-part ---------------------


def raw_request(port: int, head: bytes, body: bytes = b"", *, read: bool = True) -> bytes:
    """Send ``head`` (and ``body``) over a fresh socket; the whole response when ``read``."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(head + body)
        if not read:
            return b""
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def request_head(path: str, token: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: {MULTIPART}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    ).encode()


@asynccontextmanager
async def live_scene(server: LiveServer) -> AsyncIterator[tuple[httpx2.AsyncClient, Account, str]]:
    """A client of the real server (its answers checked against the served OpenAPI document), a user and a room."""
    hooks = live_async_contract_hooks(server.http)
    async with httpx2.AsyncClient(base_url=server.http, timeout=WAIT, event_hooks=hooks) as http:
        admin = await register(http, "uploader")
        yield http, admin, await create_room(http, admin)


async def test_a_declared_length_over_the_limit_is_answered_413_without_the_body(
    settings: Settings, audio_dir: Path
) -> None:
    async with live_server(settings) as server:
        async with live_scene(server) as (http, admin, room_id):
            path = f"/api/rooms/{room_id}/tracks"
            head = request_head(path, admin.token, 60 * 1024 * 1024)  # no body follows
            raw = await asyncio.wait_for(asyncio.to_thread(raw_request, server.port, head), WAIT)
            status_line, _, rest = raw.partition(b"\r\n")
            assert status_line == b"HTTP/1.1 413 Request Entity Too Large", raw[:200]
            assert orjson.loads(rest.partition(b"\r\n\r\n")[2]) == TOO_LARGE
            assert storage(server.state) == []
            # Healthy: a real upload goes through.
            wav = make_wav(audio_dir, 3.0, sample_rate=8000, channels=1).read_bytes()
            ok = await http.post(path, headers=admin.headers, files={"audio_file": ("ok.wav", wav, "audio/wav")})
            assert ok.status_code == 201, ok.text


async def posted_statuses(http: httpx2.AsyncClient, route: str) -> dict[str, float]:
    """How many POSTs of ``route`` the server answered, by status (from its Prometheus metrics)."""
    text = (await http.get("/metrics")).text
    pattern = (
        r'spotik_http_request_duration_seconds_count\{method="POST",route="'
        + re.escape(route)
        + r'",status="(\d+)"\} (\S+)'
    )
    return {status: float(count) for status, count in re.findall(pattern, text)}


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_a_client_that_goes_away_mid_part_leaves_nothing(settings: Settings, audio_dir: Path, how: str) -> None:
    wav = make_wav(audio_dir, 30.0, sample_rate=8000, channels=1).read_bytes()  # ~480 KB
    body = body_of(part("audio_file", wav, "song.wav"))
    async with live_server(settings) as server:
        async with live_scene(server) as (http, admin, room_id):
            path = f"/api/rooms/{room_id}/tracks"
            tracks = server.state.settings.audio_root / "tracks"
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
            try:
                # More than the first 256 KiB write: a partial file is on disk, under a temporary name.
                await asyncio.to_thread(sock.sendall, request_head(path, admin.token, len(body)) + body[: 400 * 1024])
                await wait_for(
                    lambda: any(is_temporary_name(p.name) for p in tracks.glob("*")) if tracks.exists() else False,
                    what="a temporary upload file",
                )
                if how == "reset":  # an abortive close (RST) instead of FIN
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            finally:
                sock.close()
            await wait_for(lambda: storage(server.state) == [], what="the temporary file removed")
            assert await count_rows(server.state, Track) == 0
            # The server saw the disconnect as an interrupted upload (400), not as a failure of its own (5xx).
            deadline = time.monotonic() + WAIT
            while (statuses := await posted_statuses(http, "/api/rooms/{room}/tracks")) != {"400": 1.0}:
                assert time.monotonic() < deadline, f"statuses of the upload route: {statuses}"
                await asyncio.sleep(0.05)
            ok = await http.post(path, headers=admin.headers, files={"audio_file": ("ok.wav", wav, "audio/wav")})
            assert ok.status_code == 201, ok.text
            assert len(storage(server.state)) == 1


# --- 6. room covers ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cover:
    id: str
    body: Callable[[], bytes]
    status: int
    answer: dict[str, Any] | None = None  # None for an accepted row
    content_type: str = MULTIPART
    stored: bytes = b""  # for an accepted row: the bytes that are served afterwards


PNG = png_image()
JPEG = jpeg_image()
ZIP = zip_archive()
NOT_JSON = {"success": False, "message": "Malformed JSON in request body", "error": "Invalid JSON"}


def cover(data: bytes, filename: str = "cover.png", name: str = "cover_image") -> bytes:
    return body_of(part(name, data, filename))


COVERS = [
    Cover("jpeg-magic-then-script", lambda: cover(b"\xff\xd8\xff" + HTML), 422, NOT_AN_IMAGE),
    Cover("png-signature-then-html", lambda: cover(PNG[:8] + HTML), 422, NOT_AN_IMAGE),
    Cover("webp-riff-then-html", lambda: cover(b"RIFF\x00\x01\x00\x00WEBPVP8 " + HTML), 422, NOT_AN_IMAGE),
    Cover("html", lambda: cover(HTML), 422, NOT_AN_IMAGE),
    Cover(
        "svg-with-script",
        lambda: cover(b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'),
        422,
        NOT_AN_IMAGE,
    ),
    Cover("gif", lambda: cover(b"GIF89a" + bytes(64)), 422, WRONG_IMAGE_TYPE),
    Cover("zip", lambda: cover(ZIP), 422, NOT_AN_IMAGE),
    Cover("zero-length", lambda: cover(b""), 422, NOT_AN_IMAGE),
    Cover("png-cut-to-its-signature", lambda: cover(PNG[:8]), 422, NOT_AN_IMAGE),
    Cover("audio", lambda: cover(b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x64" * 100), 422, NOT_AN_IMAGE),
    Cover("file-under-another-name", lambda: cover(PNG, name="image"), 422, NO_COVER),
    Cover("no-file", lambda: body_of(part("name", b"x", None)), 422, NO_COVER),
    Cover(
        "first-of-two-files-counts",
        lambda: body_of(part("cover_image", HTML), part("cover_image", PNG)),
        422,
        NOT_AN_IMAGE,
    ),
    Cover("cut-off-mid-part", lambda: cover(PNG)[: len(PNG) // 2 + 100], 400, MALFORMED),
    Cover("cut-off-before-the-closing-boundary", lambda: part("cover_image", PNG), 400, MALFORMED),
    Cover("empty-body", lambda: b"", 400, MALFORMED),
    Cover("raw-crlf-in-a-file-name", lambda: cover(PNG, "a\r\nb.png"), 400, {"error": "Invalid multipart data."}),
    Cover(
        "no-boundary-parameter",
        lambda: cover(PNG),
        400,
        {"error": "Missing boundary in multipart."},
        "multipart/form-data",
    ),
    # Only multipart bodies carry a file; any other body is read as JSON (docs/api.md#conventions).
    Cover("png-sent-as-json", lambda: PNG, 400, NOT_JSON, "application/json"),
    Cover("png-sent-as-text", lambda: PNG, 400, NOT_JSON, "text/plain"),
    Cover("multipart-mixed", lambda: cover(PNG), 400, NOT_JSON, f"multipart/mixed; boundary={BOUNDARY}"),
    # Accepted: a complete image with something appended is that image, served as that image only. The client's
    # file name is never used (the cover is stored as room_covers/<room id>.<type of the bytes>).
    Cover("png-then-html", lambda: cover(PNG + HTML, "../../../index.html"), 200, stored=PNG + HTML),
    Cover("jpeg-then-zip", lambda: cover(JPEG + ZIP, "x\x00.php"), 200, stored=JPEG + ZIP),
]


@pytest.mark.parametrize("row", [pytest.param(r, id=r.id) for r in COVERS])
async def test_room_cover_uploads(scene: Scene, row: Cover) -> None:
    url = f"/api/rooms/{scene.room_id}/cover"
    previous = png_image(3, 3)
    assert (
        await scene.client.post(url, headers=scene.admin.headers, files={"cover_image": ("c.png", previous)})
    ).status_code == 200
    before = await snapshot(scene.state)
    assert before[1] == [f"public:room_covers/{scene.room_id}.png"]
    headers = {**scene.admin.headers, "Content-Type": row.content_type}
    response = await scene.client.post(url, content=row.body(), headers=headers)
    assert response.status_code == row.status, response.text
    if row.answer is not None:
        assert response.json() == row.answer
        await assert_nothing_written(scene.state, before)
        served = await scene.client.get(f"/api/storage/room_covers/{scene.room_id}.png")
        assert served.content == previous
    else:
        cover_url = response.json()["cover_url"]
        kind = "png" if row.stored.startswith(PNG[:8]) else "jpg"
        assert cover_url == f"/api/storage/room_covers/{scene.room_id}.{kind}"
        assert storage(scene.state) == [f"public:room_covers/{scene.room_id}.{kind}"]
        served = await scene.client.get(cover_url)
        assert served.content == row.stored
        assert served.headers["content-type"] == ("image/png" if kind == "png" else "image/jpeg")
        assert served.headers["x-content-type-options"] == "nosniff"
    await assert_healthy(scene, tracks=0)


async def test_a_cover_body_declared_over_8_mib_is_refused_unread(scene: Scene) -> None:
    reads = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal reads
        reads += 1
        yield cover(PNG)

    before = await snapshot(scene.state)
    response = await scene.client.post(
        f"/api/rooms/{scene.room_id}/cover",
        content=body(),
        headers={**scene.admin.headers, "Content-Type": MULTIPART, "Content-Length": str(8 * 1024 * 1024 + 1)},
    )
    assert response.status_code == 413 and response.json() == {"error": "File too large"}
    assert reads == 0
    await assert_nothing_written(scene.state, before)
    await assert_healthy(scene, tracks=0)


async def test_a_cover_upload_whose_client_goes_away_is_an_interrupted_upload(scene: Scene) -> None:
    """A raw ASGI request whose client disconnects mid-part: a 400 like a track upload's (it was a logged 500)."""
    body = cover(png_image(300, 300))
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": body[: len(body) // 2], "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    before = await snapshot(scene.state)
    headers = {**scene.admin.headers, "Content-Type": MULTIPART}
    sent = await raw_post(scene.client, f"/api/rooms/{scene.room_id}/cover", headers, receive)
    assert sent[0]["status"] == 400
    assert orjson.loads(sent[1]["body"]) == {"error": "The upload was interrupted"}
    await assert_nothing_written(scene.state, before)
    await assert_healthy(scene, tracks=0)
