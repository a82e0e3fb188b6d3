"""Tests of spotik.tracks.audio on real audio files (made by tests/fixtures/audio_files.py)."""

from __future__ import annotations

import dataclasses
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mutagen.mp3 import MP3

from spotik.tracks.audio import (
    HEAD_SIZE,
    MIME_TYPES,
    MIN_MPEG_FRAMES,
    AudioInfo,
    InvalidAudio,
    probe,
    sniff_format,
)
from tests.fixtures import audio_files as af

SECONDS = 3.0
TOLERANCE = 0.1


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory per session, so each generated file is made once."""
    return tmp_path_factory.mktemp("audio")


def _mutagen_mp3_length(path: Path) -> float:
    """The length mutagen alone reports (for VBR without a header: a first-frame estimate)."""
    load: Callable[[str], object] = MP3
    info: Any = getattr(load(str(path)), "info", None)
    assert info is not None
    return float(info.length)


def _random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _first_mpeg_frame(data: bytes) -> int:
    """Offset of the first MPEG frame in a generated MP3 (after its ID3v2 tag)."""
    start = af.id3v2_size(data)
    assert data[start] == 0xFF, "generated MP3 does not start with a frame"
    return start


def _mpeg1_cbr_frame_length(data: bytes, pos: int) -> int:
    """Length of a 128 kbit/s MPEG-1 layer III frame at 44.1 kHz starting at ``pos``."""
    assert data[pos : pos + 2] == b"\xff\xfb"
    return 144 * 128000 // 44100 + ((data[pos + 2] >> 1) & 1)


# ---------------------------------------------------------------------------
# Accepted formats
# ---------------------------------------------------------------------------

Maker = Callable[[Path], Path]

FORMATS: list[tuple[str, Maker, str, str, str, int, int]] = [
    # id, maker, format, extension, mime, sample rate, channels
    ("wav", lambda d: af.make_wav(d, SECONDS), "wav", "wav", "audio/wav", 44100, 2),
    ("mp3-cbr", lambda d: af.make_mp3(d, SECONDS), "mp3", "mp3", "audio/mpeg", 44100, 2),
    ("mp3-vbr-xing", lambda d: af.make_mp3(d, SECONDS, vbr=True), "mp3", "mp3", "audio/mpeg", 44100, 2),
    ("mp3-no-id3", lambda d: af.make_mp3(d, SECONDS, id3=False), "mp3", "mp3", "audio/mpeg", 44100, 2),
    ("mp3-mpeg2", lambda d: af.make_mp3(d, SECONDS, sample_rate=22050), "mp3", "mp3", "audio/mpeg", 22050, 2),
    ("m4a", lambda d: af.make_m4a(d, SECONDS), "m4a", "m4a", "audio/mp4", 44100, 2),
    ("ogg-vorbis", lambda d: af.make_ogg(d, SECONDS), "ogg", "ogg", "audio/ogg", 44100, 2),
    ("ogg-opus", lambda d: af.make_opus(d, SECONDS), "ogg", "ogg", "audio/ogg", 48000, 2),
    ("flac", lambda d: af.make_flac(d, SECONDS), "flac", "flac", "audio/flac", 44100, 2),
]


@pytest.mark.parametrize(
    ("maker", "fmt", "extension", "mime", "sample_rate", "channels"),
    [pytest.param(*row[1:], id=row[0]) for row in FORMATS],
)
def test_probe_detects_format_and_duration(
    audio_dir: Path, maker: Maker, fmt: str, extension: str, mime: str, sample_rate: int, channels: int
) -> None:
    path = maker(audio_dir)
    info = probe(path)
    assert isinstance(info, AudioInfo)
    assert (info.format, info.extension, info.mime_type) == (fmt, extension, mime)
    assert MIME_TYPES[info.format] == info.mime_type
    assert info.duration_seconds == pytest.approx(SECONDS, abs=TOLERANCE)
    assert info.sample_rate == sample_rate
    assert info.channels == channels
    assert info.bitrate is None or info.bitrate > 0
    assert sniff_format(path.read_bytes()[:HEAD_SIZE]) == fmt


@pytest.mark.parametrize(
    ("wrong_name", "maker", "fmt"),
    [
        ("song.mp3", af.make_wav, "wav"),
        ("song.wav", af.make_mp3, "mp3"),
        ("song.txt", af.make_flac, "flac"),
        ("song", af.make_m4a, "m4a"),
    ],
)
def test_file_name_is_ignored(audio_dir: Path, tmp_path: Path, wrong_name: str, maker: Maker, fmt: str) -> None:
    renamed = tmp_path / wrong_name
    shutil.copyfile(maker(audio_dir), renamed)
    info = probe(renamed)
    assert info.format == fmt
    assert info.extension == fmt


def test_mime_types_cover_every_format() -> None:
    assert dict(MIME_TYPES) == {
        "mp3": "audio/mpeg",
        "wav": "audio/wav",
        "m4a": "audio/mp4",
        "ogg": "audio/ogg",
        "flac": "audio/flac",
    }
    with pytest.raises(TypeError):
        MIME_TYPES["exe"] = "application/octet-stream"  # type: ignore[index]


def test_audio_info_is_frozen(audio_dir: Path) -> None:
    info = probe(af.make_wav(audio_dir, SECONDS))
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.duration_seconds = 1.0  # type: ignore[misc]


# ---------------------------------------------------------------------------
# MP3 durations without a Xing/VBRI header, MPEG-2 and MPEG-2.5
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("sample_rate", [44100, 22050, 16000])
def test_vbr_mp3_without_xing_header_has_the_real_duration(audio_dir: Path, sample_rate: int) -> None:
    path = af.make_mp3(audio_dir, SECONDS, vbr=True, xing=False, sample_rate=sample_rate)
    assert not af.has_mpeg_vbr_header(path), "fixture must have no Xing/Info/VBRI header"
    # The case is only meaningful if mutagen's first-frame estimate is wrong.
    naive = _mutagen_mp3_length(path)
    assert abs(naive - SECONDS) > 0.5, f"mutagen's estimate {naive:.2f}s is not wrong enough to test anything"

    info = probe(path)
    assert info.format == "mp3"
    assert info.sample_rate == sample_rate
    assert info.duration_seconds == pytest.approx(SECONDS, abs=TOLERANCE)
    assert info.bitrate is not None
    assert 8_000 < info.bitrate < 320_000


@pytest.mark.parametrize(
    ("sample_rate", "second_byte"), [(22050, {0xF3, 0xF2}), (16000, {0xF3, 0xF2}), (8000, {0xE3, 0xE2})]
)
def test_mpeg2_and_mpeg25_frames_are_accepted(audio_dir: Path, sample_rate: int, second_byte: set[int]) -> None:
    path = af.make_mp3(audio_dir, SECONDS, sample_rate=sample_rate, channels=1)
    data = path.read_bytes()
    assert data[_first_mpeg_frame(data) + 1] in second_byte, "fixture is not the MPEG version under test"
    info = probe(path)
    assert (info.format, info.sample_rate, info.channels) == ("mp3", sample_rate, 1)
    assert info.duration_seconds == pytest.approx(SECONDS, abs=TOLERANCE)


def test_mpeg25_vbr_without_xing_header(audio_dir: Path) -> None:
    path = af.make_mp3(audio_dir, SECONDS, vbr=True, xing=False, sample_rate=8000, channels=1)
    assert not af.has_mpeg_vbr_header(path)
    assert abs(_mutagen_mp3_length(path) - SECONDS) > 0.5
    info = probe(path)
    assert info.sample_rate == 8000
    # Without a LAME header the encoder delay and padding (< 3 frames of 576
    # samples at 8 kHz, 0.216 s) cannot be removed: decoders play them too.
    assert SECONDS <= info.duration_seconds <= SECONDS + 3 * 576 / 8000


def test_long_vbr_mp3_is_scanned_across_read_chunks(audio_dir: Path) -> None:
    # ~500 KB: many times the scanner's 64 KiB read size.
    path = af.make_mp3(audio_dir, 60.0, vbr=True, xing=False)
    assert path.stat().st_size > 4 * HEAD_SIZE
    assert not af.has_mpeg_vbr_header(path)
    assert probe(path).duration_seconds == pytest.approx(60.0, abs=TOLERANCE)


def test_long_mpeg2_vbr_mp3_is_scanned_across_read_chunks(audio_dir: Path) -> None:
    path = af.make_mp3(audio_dir, 60.0, vbr=True, xing=False, sample_rate=22050)
    assert path.stat().st_size > 2 * HEAD_SIZE
    info = probe(path)
    assert info.sample_rate == 22050
    assert info.duration_seconds == pytest.approx(60.0, abs=TOLERANCE)


def test_frame_scan_skips_garbage_and_trailing_tags(audio_dir: Path, tmp_path: Path) -> None:
    data = af.make_mp3(audio_dir, 60.0, vbr=True, xing=False).read_bytes()
    middle = len(data) // 2
    damaged = (
        data[:middle]
        + _random_bytes(5000, seed=1)
        + data[middle:]
        + b"APETAGEX"
        + _random_bytes(2000, seed=2)
        + b"TAG"
        + bytes(125)
    )
    path = tmp_path / "damaged.mp3"
    path.write_bytes(damaged)
    # At most the one frame cut by the inserted garbage is lost.
    assert probe(path).duration_seconds == pytest.approx(60.0, abs=TOLERANCE)


def test_mp3_with_id3_tag_larger_than_the_sniffing_window(audio_dir: Path, tmp_path: Path) -> None:
    audio = af.make_mp3(audio_dir, SECONDS, id3=False).read_bytes()
    path = tmp_path / "cover-art.mp3"
    path.write_bytes(af.id3v2_tag(200_000) + audio)
    info = probe(path)
    assert info.format == "mp3"
    assert info.duration_seconds == pytest.approx(SECONDS, abs=TOLERANCE)
    # The head alone shows only the tag: reported provisionally as MP3.
    assert sniff_format(path.read_bytes()[:HEAD_SIZE]) == "mp3"


def test_mp3_with_an_unreadable_id3_tag_is_judged_by_its_audio(audio_dir: Path, tmp_path: Path) -> None:
    data = bytearray(af.make_mp3(audio_dir, SECONDS, id3=True).read_bytes())
    data[3] = 5  # "ID3v2.5": mutagen cannot read the tag
    path = tmp_path / "odd-tag.mp3"
    path.write_bytes(bytes(data))
    info = probe(path)
    assert info.format == "mp3"
    assert info.duration_seconds == pytest.approx(SECONDS, abs=TOLERANCE)


def test_exactly_the_minimum_number_of_frames_is_accepted(audio_dir: Path, tmp_path: Path) -> None:
    data = af.make_mp3(audio_dir, SECONDS, xing=False, id3=False).read_bytes()
    pos = 0
    for _ in range(MIN_MPEG_FRAMES):
        pos += _mpeg1_cbr_frame_length(data, pos)
    enough = tmp_path / "enough.mp3"
    enough.write_bytes(data[:pos])
    info = probe(enough)
    assert info.duration_seconds == pytest.approx(MIN_MPEG_FRAMES * 1152 / 44100)

    too_few = tmp_path / "too-few.mp3"
    too_few.write_bytes(data[: pos - 1])  # last frame incomplete
    with pytest.raises(InvalidAudio, match="truncated"):
        probe(too_few)


# ---------------------------------------------------------------------------
# Truncated files are measured by what they contain
# ---------------------------------------------------------------------------


def _cut(source: Path, target: Path, fraction: float) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


def test_truncated_wav_reports_the_audio_present(audio_dir: Path, tmp_path: Path) -> None:
    path = _cut(af.make_wav(audio_dir, SECONDS), tmp_path / "half.wav", 0.5)
    assert probe(path).duration_seconds == pytest.approx(SECONDS / 2, abs=TOLERANCE)


def test_truncated_vbr_mp3_with_xing_header_reports_the_audio_present(audio_dir: Path, tmp_path: Path) -> None:
    source = af.make_mp3(audio_dir, 60.0, vbr=True, xing=True)
    assert af.has_mpeg_vbr_header(source)
    path = _cut(source, tmp_path / "half.mp3", 0.5)
    assert _mutagen_mp3_length(path) == pytest.approx(60.0, abs=TOLERANCE)  # what the header claims
    assert 20.0 < probe(path).duration_seconds < 40.0


def test_truncated_flac_reports_the_audio_present(audio_dir: Path, tmp_path: Path) -> None:
    path = _cut(af.make_flac(audio_dir, 20.0), tmp_path / "half.flac", 0.5)
    assert 5.0 < probe(path).duration_seconds < 15.0


def test_flac_with_trailing_id3v1_tag_keeps_its_duration(audio_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "tagged.flac"
    path.write_bytes(af.make_flac(audio_dir, SECONDS).read_bytes() + b"TAG" + bytes(125))
    assert probe(path).duration_seconds == pytest.approx(SECONDS, abs=TOLERANCE)


# ---------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _assert_refused(path: Path, reason: str | None = None) -> None:
    with pytest.raises(InvalidAudio) as excinfo:
        probe(path)
    message = str(excinfo.value)
    assert message, "InvalidAudio needs a human-readable reason"
    if reason is not None:
        assert reason in message


def test_empty_file_is_refused(tmp_path: Path) -> None:
    _assert_refused(_write(tmp_path, "empty.mp3", b""), "empty")


def test_text_file_named_mp3_is_refused(tmp_path: Path) -> None:
    _assert_refused(_write(tmp_path, "hello.mp3", b"hello\n"), "text")


def test_random_bytes_are_refused(tmp_path: Path) -> None:
    _assert_refused(_write(tmp_path, "random.mp3", _random_bytes(200_000, seed=3)))


def test_random_bytes_with_a_stray_frame_header_are_refused(tmp_path: Path) -> None:
    # A valid MPEG-1 layer III header (128 kbit/s, 44.1 kHz) followed by noise.
    _assert_refused(_write(tmp_path, "stray.mp3", b"\xff\xfb\x90\x64" + _random_bytes(200_000, seed=4)))


def test_png_image_is_refused(audio_dir: Path, tmp_path: Path) -> None:
    image = tmp_path / "cover.mp3"
    shutil.copyfile(af.make_png(audio_dir), image)
    _assert_refused(image, "image")


@pytest.mark.parametrize("kind", ["head200", "id3_only", "one_header", "one_frame", "two_frames"])
def test_truncated_mp3_is_refused(audio_dir: Path, kind: str) -> None:
    path = af.make_truncated_mp3(audio_dir, kind)
    assert path.stat().st_size > 0
    _assert_refused(path)


def test_id3_tag_followed_by_garbage_is_refused(tmp_path: Path) -> None:
    _assert_refused(_write(tmp_path, "tag.mp3", af.id3v2_tag(100) + _random_bytes(50_000, seed=5)))


def test_riff_wave_header_followed_by_garbage_is_refused(tmp_path: Path) -> None:
    data = b"RIFF" + (50_004).to_bytes(4, "little") + b"WAVE" + _random_bytes(50_000, seed=6)
    path = _write(tmp_path, "garbage.wav", data)
    assert sniff_format(data) == "wav"
    _assert_refused(path)


def test_wav_header_without_samples_is_refused(audio_dir: Path, tmp_path: Path) -> None:
    header = af.make_wav(audio_dir, SECONDS).read_bytes()[:44]
    assert header[36:40] == b"data"
    _assert_refused(_write(tmp_path, "header.wav", header))


@pytest.mark.parametrize(
    ("name", "maker"),
    [("m4a", af.make_m4a), ("ogg", af.make_ogg), ("flac", af.make_flac), ("mp3", af.make_mp3)],
)
def test_container_header_followed_by_garbage_is_refused(
    audio_dir: Path, tmp_path: Path, name: str, maker: Maker
) -> None:
    real = maker(audio_dir).read_bytes()
    # Keep enough of the start for sniffing to accept it, then noise.
    # (MP3: the ID3v2 tag and the first frame header.)
    keep = _first_mpeg_frame(real) + 4 if name == "mp3" else {"m4a": 40, "ogg": 58, "flac": 42}[name]
    data = real[:keep] + _random_bytes(60_000, seed=7)
    _assert_refused(_write(tmp_path, f"garbage.{name}", data))


def test_truncated_m4a_is_refused(audio_dir: Path, tmp_path: Path) -> None:
    path = _cut(af.make_m4a(audio_dir, SECONDS), tmp_path / "half.m4a", 0.5)
    _assert_refused(path, "truncated")


def test_flac_metadata_without_audio_is_refused(audio_dir: Path, tmp_path: Path) -> None:
    data = af.make_flac(audio_dir, SECONDS).read_bytes()
    # ffmpeg writes STREAMINFO, a Vorbis comment and 8 KiB of padding, then frames.
    _assert_refused(_write(tmp_path, "meta.flac", data[:8300]))


def test_missing_file_is_not_reported_as_bad_audio(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        probe(tmp_path / "missing.mp3")


# ---------------------------------------------------------------------------
# sniff_format on heads
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        pytest.param(b"", None, id="empty"),
        pytest.param(b"hello world\n", None, id="text"),
        pytest.param(b"RIFF\x24\x00\x00\x00WAVEfmt ", "wav", id="riff-wave"),
        pytest.param(b"RIFF\x24\x00\x00\x00AVI LIST", None, id="riff-avi"),
        pytest.param(b"\x00\x00\x00\x18ftypM4A \x00\x00\x02\x00M4A isom", "m4a", id="ftyp-m4a"),
        pytest.param(b"\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00qt  ", None, id="ftyp-quicktime"),
        pytest.param(b"\x00\x00\x00\x14ftypM4P \x00\x00\x02\x00M4P ", None, id="ftyp-drm"),
        pytest.param(b"fLaC\x00\x00\x00\x22", "flac", id="flac"),
        pytest.param(b"\xff\xfb\x90\x64" + bytes(600), None, id="one-mpeg-header"),
        pytest.param(b"\x89PNG\r\n\x1a\n" + bytes(100), None, id="png"),
        pytest.param(b"%PDF-1.7\n", None, id="pdf"),
        pytest.param(b"ID3\x04\x00\x00\x00\x40\x00\x00" + bytes(HEAD_SIZE), "mp3", id="id3-larger-than-head"),
    ],
)
def test_sniff_format_on_synthetic_heads(head: bytes, expected: str | None) -> None:
    assert sniff_format(head) == expected


def _ogg_first_page(packet: bytes) -> bytes:
    return b"OggS\x00\x02" + bytes(20) + b"\x01" + bytes([len(packet)]) + packet


@pytest.mark.parametrize(
    ("packet", "expected"),
    [(b"\x01vorbis" + bytes(22), "ogg"), (b"OpusHead" + bytes(11), "ogg"), (b"\x80theora" + bytes(30), None)],
)
def test_sniff_format_ogg_codecs(packet: bytes, expected: str | None) -> None:
    assert sniff_format(_ogg_first_page(packet)) == expected


def test_sniff_format_mp3_needs_linked_frames(audio_dir: Path) -> None:
    data = af.make_mp3(audio_dir, SECONDS, xing=False, id3=False).read_bytes()
    first = _mpeg1_cbr_frame_length(data, 0)
    second = _mpeg1_cbr_frame_length(data, first)
    third = _mpeg1_cbr_frame_length(data, first + second)
    assert sniff_format(data[: first + second + third]) == "mp3"
    assert sniff_format(data[: first + second]) is None
    # Break the link: the second frame header no longer sits where the first frame ends.
    broken = data[:first] + b"\x00" + data[first:]
    assert sniff_format(broken[:HEAD_SIZE]) == "mp3"  # the chain starting at the second frame
    assert sniff_format(data[:first] + b"\x00" + data[first : first + second + third]) is None


def test_sniff_format_looks_at_the_first_64_kib_only(audio_dir: Path) -> None:
    wav = af.make_wav(audio_dir, SECONDS).read_bytes()
    assert sniff_format(bytes(HEAD_SIZE) + wav) is None
    assert sniff_format(wav) == "wav"


def test_sniff_format_of_id3_then_mp3(audio_dir: Path) -> None:
    data = af.make_mp3(audio_dir, SECONDS, id3=True).read_bytes()
    assert data[:3] == b"ID3"
    assert sniff_format(data[:HEAD_SIZE]) == "mp3"
    assert sniff_format(data[: _first_mpeg_frame(data)]) is None  # the tag alone


# ---------------------------------------------------------------------------
# The fixture helpers themselves
# ---------------------------------------------------------------------------


def test_require_ffmpeg_fails_under_ci_and_skips_otherwise(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no ffmpeg on PATH
    assert af.find_ffmpeg() is None
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="ffmpeg"):
        af.require_ffmpeg()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="ffmpeg"):
        af.require_ffmpeg()


def test_generated_files_are_reused(audio_dir: Path) -> None:
    first = af.make_wav(audio_dir, 1.0)
    mtime = first.stat().st_mtime_ns
    again = af.make_wav(audio_dir, 1.0)
    assert again == first
    assert again.stat().st_mtime_ns == mtime
