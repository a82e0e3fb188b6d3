"""Content-based audio probing for uploaded tracks.

The type of an upload is decided from its *content* only: magic bytes first
(:func:`sniff_format`), then a parser for that container (mutagen's MPEG
and FLAC stream-information readers, our own for the rest), whose result must
agree with the sniffed container.  The client's file name and MIME type are
never consulted.

Supported: MP3 (MPEG-1, MPEG-2 and MPEG-2.5 layer III, with or without an
ID3v2 tag), WAV (RIFF/WAVE with PCM or IEEE-float samples), M4A (ISO-BMFF
with AAC or ALAC audio), Ogg (Vorbis or Opus) and FLAC.

Everything here is blocking, synchronous file I/O: async callers should run
:func:`probe` in a worker thread.

Hostile files (docs/api.md#tracks): the probe reads only the stream
information it needs, never the tags (a 50 MB ID3 frame, or millions of tiny
ID3, Vorbis-comment or iTunes tags, cost mutagen minutes of CPU and gigabytes
of memory), walks every structure with a bounded, linear amount of work, and
believes no header's claim about the length that the file's bytes cannot hold:
the duration is what is really there (MP3 frames counted, WAV bytes present,
FLAC frames checked, MPEG-4 sample table), and an Ogg stream whose granule
positions promise more audio than its packets can carry is refused.
"""

from __future__ import annotations

import array
import codecs
import math
import re
import struct
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO, Final

from mutagen.flac import StreamInfo
from mutagen.mp3 import MPEGInfo

__all__ = ["HEAD_SIZE", "MIME_TYPES", "MIN_MPEG_FRAMES", "AudioInfo", "InvalidAudio", "probe", "sniff_format"]


class InvalidAudio(Exception):
    """Raised with a human-readable reason when the file is not acceptable audio."""


@dataclass(frozen=True, slots=True)
class AudioInfo:
    """What :func:`probe` found out about an audio file."""

    format: str  # "mp3" | "wav" | "m4a" | "ogg" | "flac"
    extension: str  # file extension to store under: "mp3", "wav", "m4a", "ogg", "flac"
    mime_type: str  # "audio/mpeg", "audio/wav", "audio/mp4", "audio/ogg", "audio/flac"
    duration_seconds: float
    bitrate: int | None  # bits per second if known
    sample_rate: int | None
    channels: int | None


MIME_TYPES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "mp3": "audio/mpeg",
        "wav": "audio/wav",
        "m4a": "audio/mp4",
        "ogg": "audio/ogg",
        "flac": "audio/flac",
    }
)

_EXTENSIONS: Final[Mapping[str, str]] = MappingProxyType({fmt: fmt for fmt in MIME_TYPES})

HEAD_SIZE: Final = 64 * 1024
"""How many bytes :func:`sniff_format` looks at (and :func:`probe` reads to sniff)."""

_CHUNK_SIZE: Final = 64 * 1024

# ---------------------------------------------------------------------------
# MPEG audio (layer III) frame headers
# ---------------------------------------------------------------------------

# An MP3 is accepted only if MIN_MPEG_FRAMES consecutive layer III frames are
# linked: each header is valid, its computed frame length leads exactly to the
# next header, all share MPEG version, sample rate and mono/stereo, and the last
# of them is complete.  Why 3:
#   * one header proves nothing: a stray FF FB in random data or in a text file
#     is a plausible header about once in a hundred positions that start with
#     FF; two linked headers still happen by chance about once in 10^5 of them,
#     three about once in 10^8, which is safe for a 64 KiB window;
#   * the 3 frames span at most ~4.3 KiB, so they always fit in the sniffing
#     window and a real file never falls short;
#   * a "file" of fewer than 3 frames (< 80 ms) is a truncated upload, not a
#     track, so there is no need for a tiny-file exception.
MIN_MPEG_FRAMES: Final = 3

# How far past the start of the audio (after any ID3v2 tags) the first frame
# may begin.  Some taggers leave junk or zero padding there; allowing a little
# keeps such files while still refusing arbitrary files that merely contain an
# MP3 somewhere in their first 64 KiB.
_MAX_MPEG_LEADING_JUNK: Final = 8 * 1024

# kbit/s by bitrate index (0 = "free format", 15 = invalid; both refused).
_BITRATES_V1_L3: Final = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_BITRATES_V2_L3: Final = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
# Sample rates by version bits (0 = MPEG-2.5, 2 = MPEG-2, 3 = MPEG-1).
_SAMPLE_RATES: Final[Mapping[int, tuple[int, int, int]]] = MappingProxyType(
    {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
)
_MPEG_VERSIONS: Final[Mapping[int, float]] = MappingProxyType({3: 1.0, 2: 2.0, 0: 2.5})


@dataclass(frozen=True, slots=True)
class _MpegHeader:
    version_bits: int  # 3 = MPEG-1, 2 = MPEG-2, 0 = MPEG-2.5
    bitrate: int  # bits per second
    sample_rate: int
    mono: bool
    frame_length: int  # bytes, header included
    samples: int  # PCM samples per channel in this frame

    @property
    def version(self) -> float:
        return _MPEG_VERSIONS[self.version_bits]

    @property
    def channels(self) -> int:
        return 1 if self.mono else 2

    @property
    def side_info_size(self) -> int:
        if self.version_bits == 3:
            return 17 if self.mono else 32
        return 9 if self.mono else 17

    def same_stream(self, other: _MpegHeader) -> bool:
        return (
            self.version_bits == other.version_bits
            and self.sample_rate == other.sample_rate
            and self.mono == other.mono
        )


@lru_cache(maxsize=1024)
def _decode_mpeg_header(word: int) -> _MpegHeader | None:
    """Decode a 32-bit big-endian MPEG audio header; None unless valid layer III."""
    if word >> 21 != 0x7FF:  # 11 sync bits
        return None
    version_bits = (word >> 19) & 0x3
    layer_bits = (word >> 17) & 0x3
    bitrate_index = (word >> 12) & 0xF
    rate_index = (word >> 10) & 0x3
    padding = (word >> 9) & 0x1
    mode = (word >> 6) & 0x3
    emphasis = word & 0x3
    if version_bits == 1 or layer_bits != 1:  # reserved version / not layer III
        return None
    if bitrate_index in (0, 15) or rate_index == 3 or emphasis == 2:
        return None
    sample_rate = _SAMPLE_RATES[version_bits][rate_index]
    if version_bits == 3:
        bitrate = _BITRATES_V1_L3[bitrate_index] * 1000
        samples = 1152
    else:
        bitrate = _BITRATES_V2_L3[bitrate_index] * 1000
        samples = 576
    # bytes per frame = samples / 8 * bitrate / sample_rate (+ 1 padding byte)
    frame_length = samples // 8 * bitrate // sample_rate + padding
    return _MpegHeader(
        version_bits=version_bits,
        bitrate=bitrate,
        sample_rate=sample_rate,
        mono=mode == 3,
        frame_length=frame_length,
        samples=samples,
    )


def _mpeg_header_at(data: bytes, pos: int) -> _MpegHeader | None:
    if pos < 0 or pos + 4 > len(data) or data[pos] != 0xFF:
        return None
    return _decode_mpeg_header(int.from_bytes(data[pos : pos + 4], "big"))


def _mpeg_chain_length(data: bytes, pos: int, want: int) -> int:
    """How many linked, complete frames (at most ``want``) start at ``pos``."""
    first = _mpeg_header_at(data, pos)
    if first is None:
        return 0
    count = 0
    header: _MpegHeader | None = first
    while header is not None and header.same_stream(first):
        if pos + header.frame_length > len(data):
            break  # incomplete frame
        count += 1
        if count >= want:
            break
        pos += header.frame_length
        header = _mpeg_header_at(data, pos)
    return count


def _find_mpeg_chain(data: bytes, max_offset: int) -> int | None:
    """Offset of the first run of MIN_MPEG_FRAMES linked frames starting at <= max_offset."""
    pos = data.find(b"\xff", 0, max_offset + 1)
    while pos != -1:
        if _mpeg_chain_length(data, pos, MIN_MPEG_FRAMES) >= MIN_MPEG_FRAMES:
            return pos
        pos = data.find(b"\xff", pos + 1, max_offset + 1)
    return None


# ---------------------------------------------------------------------------
# Sniffing
# ---------------------------------------------------------------------------


def _id3v2_tag_size(header: bytes) -> int:
    """Total size of the ID3v2 tag whose 10-byte header is given, 0 if it is none."""
    if len(header) < 10 or header[:3] != b"ID3" or header[3] == 0xFF or header[4] == 0xFF:
        return 0
    size_bytes = header[6:10]
    if any(byte & 0x80 for byte in size_bytes):
        return 0  # sizes are "synchsafe": the top bit of each byte is always 0
    size = 0
    for byte in size_bytes:
        size = (size << 7) | byte
    footer = 10 if header[5] & 0x10 else 0
    return 10 + size + footer


def _id3v2_span(data: bytes) -> int:
    """Bytes taken by the (possibly stacked) ID3v2 tags at the start of ``data``.

    The result may exceed ``len(data)`` when a tag is longer than the data given.
    """
    offset = 0
    for _ in range(16):  # some writers stack several tags
        size = _id3v2_tag_size(data[offset : offset + 10])
        if size == 0:
            break
        offset += size
    return offset


_MP4_BRANDS: Final = frozenset(
    {
        b"M4A ",
        b"M4B ",
        b"mp41",
        b"mp42",
        b"isom",
        b"iso2",
        b"iso3",
        b"iso4",
        b"iso5",
        b"iso6",
        b"iso8",
        b"iso9",
        b"dash",
        b"3gp4",
        b"3gp5",
        b"3gp6",
        b"3g2a",
        b"MSNV",
        b"F4A ",
    }
)


def _is_mp4_audio(data: bytes) -> bool:
    if len(data) < 16 or data[4:8] != b"ftyp":
        return False
    box_size = int.from_bytes(data[0:4], "big")
    if box_size < 16 or box_size > 4096:
        return False
    major = data[8:12]
    if major == b"M4P ":  # FairPlay-protected iTunes audio: not playable
        return False
    compatible = [data[i : i + 4] for i in range(16, min(box_size, len(data)) - 3, 4)]
    return major in _MP4_BRANDS or any(brand in _MP4_BRANDS for brand in compatible)


def _ogg_codec(data: bytes) -> str | None:
    """Return "vorbis" or "opus" for an Ogg stream whose first page starts one, else None."""
    # Page header: "OggS", version 0, header type with "beginning of stream" set.
    if len(data) < 28 or data[:4] != b"OggS" or data[4] != 0 or not data[5] & 0x02:
        return None
    segments = data[26]
    packet = data[27 + segments : 27 + segments + 8]
    if packet.startswith(b"\x01vorbis"):
        return "vorbis"
    if packet.startswith(b"OpusHead"):
        return "opus"
    return None


def _sniff_container(data: bytes, *, after_id3: bool) -> str | None:
    """Container of ``data``, which starts where the audio starts (after ID3v2)."""
    if not after_id3:
        if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WAVE":
            return "wav"
        if _is_mp4_audio(data):
            return "m4a"
        if _ogg_codec(data) is not None:
            return "ogg"
    # FLAC and MP3 are the containers that are found behind ID3v2 tags.
    if data[:4] == b"fLaC":
        return "flac"
    chain_at = _find_mpeg_chain(data, _MAX_MPEG_LEADING_JUNK)
    if chain_at is not None and not _foreign_junk(data[:chain_at]):
        return "mp3"
    return None


# Leading junk before the first MPEG frame is tolerated (tagger padding, a stream cut mid-frame), but not the start
# of another kind of file: an archive, a document, an executable or text (HTML, a script) followed by MP3 frames is a
# polyglot, not an MP3.
_FOREIGN_SIGNATURES: Final = (
    b"PK\x03\x04",  # ZIP (and every format built on it)
    b"PK\x05\x06",
    b"PK\x07\x08",
    b"%PDF",
    b"\x7fELF",
    b"MZ",  # Windows executables
    b"\xca\xfe\xba\xbe",  # Mach-O, Java classes
    b"\x89PNG",
    b"\xff\xd8\xff",  # JPEG
    b"GIF8",
    b"\x1f\x8b",  # gzip
    b"BZh",
    b"7z\xbc\xaf",
    b"Rar!",
)


def _foreign_junk(junk: bytes) -> bool:
    if junk.startswith(_FOREIGN_SIGNATURES):
        return True
    text = junk.strip(b"\x00")
    return len(text) >= 16 and all(0x20 <= byte < 0x7F or byte in b"\t\r\n" for byte in text)


def sniff_format(head: bytes) -> str | None:
    """Guess the audio container from the first bytes of a file.

    ``head`` is the start of the file (only the first 64 KiB are looked at).
    Returns a key of :data:`MIME_TYPES`, or None if the bytes are not a known
    audio container.  MP3 needs :data:`MIN_MPEG_FRAMES` linked frames.

    An ID3v2 tag that runs past (or nearly to) the end of a 64 KiB ``head``
    (large cover art) hides the audio; such a head is reported as "mp3"
    provisionally, since MP3 is what ID3v2 tags are used with.  :func:`probe`
    reads past the tag and checks.
    """
    head = bytes(head[:HEAD_SIZE])
    audio_start = _id3v2_span(head)
    if audio_start == 0:
        return _sniff_container(head, after_id3=False)
    if audio_start > len(head):
        return "mp3"
    found = _sniff_container(head[audio_start:], after_id3=True)
    if found is None and len(head) == HEAD_SIZE and len(head) - audio_start < 8 * 1024:
        return "mp3"  # the tag leaves too little of a full-size head to tell
    return found


def _describe_unknown(data: bytes, *, after_id3: bool) -> str:
    """A human-readable reason why ``data`` (the start of the audio) was not recognised."""
    known = "it is not MP3, WAV, M4A, Ogg Vorbis/Opus or FLAC audio"
    if _mpeg_header_at(data, 0) is not None:
        return (
            "the MP3 audio is truncated or corrupt: it has fewer than "
            f"{MIN_MPEG_FRAMES} consecutive complete MPEG audio frames"
        )
    if len(data) >= 2 and data[0] == 0xFF and data[1] & 0xE6 in (0xE4, 0xE6):
        return "MPEG audio layer I/II is not supported, only layer III (MP3)"
    if after_id3:
        return "no MP3 audio follows the ID3 tag (truncated upload, or not an MP3)"
    if data[:8] == b"\x89PNG\r\n\x1a\n" or data[:3] == b"\xff\xd8\xff" or data[:4] == b"GIF8":
        return f"the file is an image: {known}"
    if data[:4] == b"OggS":
        return "the Ogg stream holds neither Vorbis nor Opus audio"
    if data[4:8] == b"ftyp":
        return "the MPEG-4 file is not an audio file (unsupported brand)"
    if data[:4] == b"RIFF":
        return "the RIFF file is not a WAVE file"
    try:
        # An incremental decoder tolerates a character cut at the end of the sample.
        text = codecs.getincrementaldecoder("utf-8")().decode(data[:4096], final=False)
    except UnicodeDecodeError:
        pass
    else:
        if all(char.isprintable() or char.isspace() for char in text):
            return f"the file is text: {known}"
    return f"unrecognised content: {known}"


# ---------------------------------------------------------------------------
# Probing
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Source:
    path: Path
    file: BinaryIO
    size: int  # file size in bytes
    audio_start: int  # offset after any ID3v2 tags
    head: bytes  # up to HEAD_SIZE bytes from audio_start


def _read_at(file: BinaryIO, offset: int, length: int) -> bytes:
    file.seek(offset)
    return file.read(length)


def _read_id3v2_span(file: BinaryIO, size: int) -> int:
    offset = 0
    for _ in range(16):
        tag = _id3v2_tag_size(_read_at(file, offset, 10))
        if tag == 0:
            break
        offset += tag
        if offset >= size:
            break
    return offset


def probe(path: Path) -> AudioInfo:
    """Identify and measure the audio file at ``path`` from its content.

    Raises :class:`InvalidAudio` (with a reason for the user) for anything that
    is not complete, playable audio of a supported format.  Errors opening or
    reading the file itself (``OSError``) are not about content and propagate.
    """
    with path.open("rb") as file:
        size = path.stat().st_size
        if size == 0:
            raise InvalidAudio("the file is empty")
        audio_start = _read_id3v2_span(file, size)
        if audio_start >= size:
            raise InvalidAudio("the file holds only an ID3 tag and no audio")
        head = _read_at(file, audio_start, HEAD_SIZE)
        after_id3 = audio_start > 0
        fmt = _sniff_container(head, after_id3=after_id3)
        if fmt is None:
            raise InvalidAudio(_describe_unknown(head, after_id3=after_id3))
        source = _Source(path=path, file=file, size=size, audio_start=audio_start, head=head)
        try:
            info = _PROBES[fmt](source)
        except (InvalidAudio, OSError):
            raise
        except Exception as exc:
            # mutagen raises MutagenError subclasses for malformed files, but
            # being a parser of untrusted input it can also fail with
            # struct.error, IndexError, ValueError, ... on hostile content.
            # None of those is a server fault: the upload is simply unusable.
            raise InvalidAudio(f"the {fmt} data could not be parsed: {exc}") from exc
    if not (math.isfinite(info.duration_seconds) and info.duration_seconds > 0.0):
        raise InvalidAudio(f"the {fmt} audio has no duration")
    return info


def _make_info(
    fmt: str,
    *,
    duration: float,
    bitrate: int | None,
    sample_rate: int | None,
    channels: int | None,
) -> AudioInfo:
    def positive(value: int | None) -> int | None:
        return value if value is not None and value > 0 else None

    return AudioInfo(
        format=fmt,
        extension=_EXTENSIONS[fmt],
        mime_type=MIME_TYPES[fmt],
        duration_seconds=float(duration),
        bitrate=positive(bitrate),
        sample_rate=positive(sample_rate),
        channels=positive(channels),
    )


# --- MP3 -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _VbrHeader:
    """A Xing/Info (LAME) or VBRI header found in the first MPEG frame."""

    frames: int | None  # audio frames in the file, if declared
    byte_count: int | None  # bytes of MPEG audio in the file, if declared
    delay: int = 0  # encoder delay, samples (LAME tag)
    padding: int = 0  # encoder padding at the end, samples (LAME tag)


# LAME tags written by LAME itself and by ffmpeg (libavcodec/libavformat).
_LAME_ENCODERS: Final = (b"LAME", b"L3.99", b"Lavc", b"Lavf")


def _find_vbr_header(frame: bytes, header: _MpegHeader) -> _VbrHeader | None:
    xing_at = 4 + header.side_info_size
    if frame[xing_at : xing_at + 4] in (b"Xing", b"Info"):
        flags = int.from_bytes(frame[xing_at + 4 : xing_at + 8], "big")
        pos = xing_at + 8
        frames: int | None = None
        byte_count: int | None = None
        if flags & 0x1 and len(frame) >= pos + 4:
            frames = int.from_bytes(frame[pos : pos + 4], "big")
            pos += 4
        if flags & 0x2 and len(frame) >= pos + 4:
            byte_count = int.from_bytes(frame[pos : pos + 4], "big")
            pos += 4
        pos += (100 if flags & 0x4 else 0) + (4 if flags & 0x8 else 0)  # TOC, quality
        delay = padding = 0
        # LAME tag: 9 bytes encoder name, 12 bytes of settings, then 12 bits of
        # encoder delay and 12 bits of padding (mutagen only knows "LAME").
        if frame[pos : pos + 9].startswith(_LAME_ENCODERS) and len(frame) >= pos + 24:
            packed = int.from_bytes(frame[pos + 21 : pos + 24], "big")
            delay, padding = packed >> 12, packed & 0xFFF
        return _VbrHeader(frames=frames, byte_count=byte_count, delay=delay, padding=padding)
    if frame[36:40] == b"VBRI" and len(frame) >= 54:
        return _VbrHeader(
            frames=int.from_bytes(frame[50:54], "big"),
            byte_count=int.from_bytes(frame[46:50], "big"),
        )
    return None


class _FrameScanner:
    """Walks every MPEG frame of a file, reading it in chunks (never all at once)."""

    def __init__(self, file: BinaryIO, start: int, end: int) -> None:
        self._file = file
        self._start = start
        self._end = end
        self._buf = b""
        self._buf_start = start
        self.false_syncs = 0

    def _window(self, pos: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``pos`` (fewer at the end of the file)."""
        offset = pos - self._buf_start
        buf_end = self._buf_start + len(self._buf)
        covered = 0 <= offset and (offset + length <= len(self._buf) or buf_end >= self._end)
        if not covered:
            self._buf = _read_at(self._file, pos, max(_CHUNK_SIZE, length))
            self._buf_start = pos
            offset = 0
        return self._buf[offset : offset + length]

    def _frame_at(self, pos: int, stream: _MpegHeader) -> _MpegHeader | None:
        header = _mpeg_header_at(self._window(pos, 4), 0)
        if header is None or not header.same_stream(stream):
            return None
        if pos + header.frame_length > self._end:
            return None  # truncated last frame: not played in full, not counted
        return header

    def _resync(self, pos: int, stream: _MpegHeader) -> int | None:
        """First position after ``pos`` where two linked frames of ``stream`` start.

        Candidates are found by a pattern of the stream's own header bytes (at C speed: 50 MB of ``FF`` bytes hold
        none), and each probe's budget of false candidates is bounded (``_MAX_FALSE_SYNCS``): a file made of
        valid-looking but unlinked headers is measured up to where the budget ran out, in a bounded time.
        """
        pattern = _sync_pattern(stream)
        pos += 1
        while pos + 4 <= self._end:
            window = self._window(pos, _CHUNK_SIZE)  # a local reference: _frame_at may move the buffer
            if len(window) < 4:
                return None
            for match in pattern.finditer(window):
                candidate = pos + match.start()
                header = self._frame_at(candidate, stream)
                if header is not None and self._frame_at(candidate + header.frame_length, stream) is not None:
                    return candidate
                self.false_syncs += 1
                if self.false_syncs > _MAX_FALSE_SYNCS:
                    return None
            pos += len(window) - 3  # a header cut by the window's end is found in the next one
        return None

    def scan(self, stream: _MpegHeader) -> tuple[int, int, int]:
        """(frames, samples, bytes) of all complete frames from the start offset on."""
        frames = samples = audio_bytes = 0
        pos: int | None = self._start
        while pos is not None and pos + 4 <= self._end:
            header = self._frame_at(pos, stream)
            if header is None:
                # Lost sync: corrupt data, or the ID3v1/APE/Lyrics tags at the
                # end.  Decoders resynchronise, so count the frames after it.
                pos = self._resync(pos, stream)
                continue
            frames += 1
            samples += header.samples
            audio_bytes += header.frame_length
            pos += header.frame_length
        return frames, samples, audio_bytes


# A real file loses sync a handful of times (trailing ID3v1/APE/Lyrics tags, a damaged frame); each false candidate
# costs a header decode in Python. Past this many the rest of the file is treated as junk.
_MAX_FALSE_SYNCS: Final = 20_000


@lru_cache(maxsize=64)
def _sync_pattern_for(version_bits: int, rate_index: int, mono: bool) -> re.Pattern[bytes]:
    """The bytes a layer III header of this stream can start with (any bitrate, padding, CRC and flags)."""

    def one_of(values: list[int]) -> bytes:
        return b"[" + b"".join(re.escape(bytes([value])) for value in values) + b"]"

    second = [0xE0 | version_bits << 3 | 0b010 | crc for crc in (0, 1)]  # layer III, with or without CRC
    third = [index << 4 | rate_index << 2 | low for index in range(1, 15) for low in range(4)]
    modes = [3] if mono else [0, 1, 2]
    fourth = [mode << 6 | middle << 2 | emphasis for mode in modes for middle in range(16) for emphasis in (0, 1, 3)]
    return re.compile(b"\xff" + one_of(second) + one_of(third) + one_of(fourth))


def _sync_pattern(stream: _MpegHeader) -> re.Pattern[bytes]:
    rate_index = _SAMPLE_RATES[stream.version_bits].index(stream.sample_rate)
    return _sync_pattern_for(stream.version_bits, rate_index, stream.mono)


def _min_frame_length(stream: _MpegHeader) -> int:
    """Bytes of the smallest frame this stream can have (the lowest bitrate, no padding)."""
    lowest = (_BITRATES_V1_L3 if stream.version_bits == 3 else _BITRATES_V2_L3)[1] * 1000
    return stream.samples // 8 * lowest // stream.sample_rate


def _probe_mp3(source: _Source) -> AudioInfo:
    chain_at = _find_mpeg_chain(source.head, _MAX_MPEG_LEADING_JUNK)
    if chain_at is None:  # unreachable: sniffing found it already
        raise InvalidAudio("no MPEG audio frames found")
    first_offset = source.audio_start + chain_at
    first = _mpeg_header_at(source.head, chain_at)
    assert first is not None

    # The stream information only: mutagen's MP3 class would parse the ID3v2
    # tags too, in time that grows faster than their number (minutes for the
    # millions of tiny frames a 50 MB tag can hold), and keep them in memory.
    parse_stream: Callable[[BinaryIO, int], Any] = MPEGInfo
    info = parse_stream(source.file, source.audio_start)
    if info.layer != 3:
        raise InvalidAudio(f"MPEG layer {info.layer} audio is not MP3")
    if getattr(info, "frame_offset", first_offset) != first_offset or (
        info.sample_rate != first.sample_rate or info.version != first.version
    ):
        raise InvalidAudio("the MPEG audio stream is inconsistent (mutagen disagrees)")

    vbr = _find_vbr_header(source.head[chain_at : chain_at + first.frame_length], first)
    available = source.size - first_offset
    trust_header = (
        vbr is not None
        and vbr.frames is not None
        and vbr.frames > 0
        # A header promising much more data than the file holds means a
        # truncated upload: count the frames that are really there instead.
        and (vbr.byte_count is None or available >= 0.95 * vbr.byte_count)
        # Nor is a frame count believed that the file's bytes cannot hold
        # even at the stream's lowest bitrate (hours "in" a few kilobytes).
        and vbr.frames * _min_frame_length(first) <= available
    )
    if trust_header:
        # The header's frame count, minus the encoder delay and padding that
        # gapless decoders drop: exact, no scan needed.
        assert vbr is not None and vbr.frames is not None
        samples = vbr.frames * first.samples
        if vbr.delay + vbr.padding < samples:
            samples -= vbr.delay + vbr.padding
        duration = samples / first.sample_rate
        bitrate = int(info.bitrate)
    else:
        # No usable Xing/VBRI/LAME header, so mutagen extrapolated the length
        # from the first frame's bitrate and the file size: right for CBR,
        # wrong for VBR (e.g. 0.34 s for a 2.9 s file) and for truncated
        # files.  mutagen calls that bitrate mode UNKNOWN ("CBR?"); rather
        # than trust it, count the samples of every frame.  A header frame
        # without a frame count is silent and is skipped.
        scan_from = first_offset + (first.frame_length if vbr is not None else 0)
        scanner = _FrameScanner(source.file, scan_from, source.size)
        frames, samples, audio_bytes = scanner.scan(first)
        if frames < MIN_MPEG_FRAMES:
            raise InvalidAudio("the MP3 holds too few audio frames")
        duration = samples / first.sample_rate
        bitrate = round(audio_bytes * 8 / duration)
    return _make_info(
        "mp3",
        duration=duration,
        bitrate=bitrate,
        sample_rate=first.sample_rate,
        channels=first.channels,
    )


# --- WAV -------------------------------------------------------------------

_WAVE_FORMAT_PCM: Final = 0x0001
_WAVE_FORMAT_IEEE_FLOAT: Final = 0x0003
_WAVE_FORMAT_EXTENSIBLE: Final = 0xFFFE
_WAVE_FORMATS: Final = frozenset({_WAVE_FORMAT_PCM, _WAVE_FORMAT_IEEE_FLOAT, _WAVE_FORMAT_EXTENSIBLE})


def _riff_chunks(file: BinaryIO, size: int) -> dict[bytes, tuple[int, int]]:
    """Top-level RIFF/WAVE chunks: id -> (data offset, declared data size)."""
    chunks: dict[bytes, tuple[int, int]] = {}
    pos = 12
    for _ in range(4096):
        if pos + 8 > size:
            break
        header = _read_at(file, pos, 8)
        chunk_id, chunk_size = header[:4], int.from_bytes(header[4:8], "little")
        if not all(0x20 <= byte < 0x7F for byte in chunk_id):
            if b"fmt " in chunks and b"data" in chunks:
                break  # trailing junk after a complete file is harmless
            raise InvalidAudio("the WAV file is corrupt (invalid RIFF chunk)")
        chunks.setdefault(chunk_id, (pos + 8, chunk_size))
        pos += 8 + chunk_size + (chunk_size & 1)
    return chunks


def _probe_wav(source: _Source) -> AudioInfo:
    # Read by hand: mutagen's WAVE would also parse an embedded ID3 chunk (see MP3) and list every chunk.
    chunks = _riff_chunks(source.file, source.size)
    if b"fmt " not in chunks:
        raise InvalidAudio("the WAV file has no format chunk")
    if b"data" not in chunks:
        raise InvalidAudio("the WAV file has no audio data")
    fmt_offset, fmt_size = chunks[b"fmt "]
    fmt_data = _read_at(source.file, fmt_offset, min(fmt_size, 40))
    if len(fmt_data) < 16:
        raise InvalidAudio("the WAV format chunk is truncated")
    audio_format, channels, sample_rate, byte_rate, block_align, bits = struct.unpack("<HHIIHH", fmt_data[:16])
    if audio_format not in _WAVE_FORMATS:
        raise InvalidAudio(f"WAV encoding 0x{audio_format:04x} is not supported (only PCM/float)")
    if channels == 0 or sample_rate == 0 or block_align == 0 or bits == 0:
        raise InvalidAudio("the WAV format chunk is invalid")
    data_offset, declared = chunks[b"data"]
    # Streaming writers put 0 or 0xFFFFFFFF here, and a truncated upload has
    # less than declared: only the bytes really present are played.
    present = max(0, source.size - data_offset)
    data_size = present if declared in (0, 0xFFFFFFFF) else min(declared, present)
    frames = data_size // block_align
    return _make_info(
        "wav",
        duration=frames / sample_rate,
        bitrate=byte_rate * 8 if byte_rate else channels * bits * sample_rate,
        sample_rate=sample_rate,
        channels=channels,
    )


# --- M4A -------------------------------------------------------------------


_MAX_TOP_LEVEL_BOXES: Final = 100_000


def _check_mp4_boxes(file: BinaryIO, size: int) -> None:
    """Walk the top-level boxes: refuse truncated files and files without moov/mdat."""
    seen: set[bytes] = set()
    pos = 0
    for _ in range(_MAX_TOP_LEVEL_BOXES):
        if pos + 8 > size:
            break
        header = _read_at(file, pos, 16)
        box_size = int.from_bytes(header[0:4], "big")
        box_type = header[4:8]
        if not all(0x20 <= byte < 0x7F for byte in box_type):
            if b"moov" in seen and b"mdat" in seen:
                break  # trailing junk after a complete file is harmless
            raise InvalidAudio("the MPEG-4 file is corrupt (invalid box)")
        if box_size == 1:
            if len(header) < 16:
                raise InvalidAudio("the MPEG-4 file is truncated")
            box_size = int.from_bytes(header[8:16], "big")
        elif box_size == 0:
            box_size = size - pos  # box extends to the end of the file
        if box_size < 8:
            raise InvalidAudio("the MPEG-4 file is corrupt (invalid box size)")
        if pos + box_size > size:
            raise InvalidAudio("the MPEG-4 file is truncated")
        seen.add(box_type)
        pos += box_size
    if b"moov" not in seen:
        raise InvalidAudio("the MPEG-4 file has no movie header (moov)")
    if b"mdat" not in seen:
        raise InvalidAudio("the MPEG-4 file has no media data (mdat)")


# Boxes are read by hand, descending only along moov/trak/mdia/minf/stbl: mutagen's MP4 would also build an object
# per atom of the iTunes tags (udta/meta/ilst), and a 50 MB tag list holds millions of them. A real file has a
# handful of boxes in each of those; the bound keeps the walk (tracks x their boxes) small whatever the file holds.
_MAX_CHILD_BOXES: Final = 256
_TABLE_CHUNK: Final = 1024 * 1024  # sample tables are summed this many bytes at a time (bounded memory)
# The longest an MPEG-4 audio sample may last, in samples of the track's rate: an AAC frame is 1024 samples (2048
# with SBR), an ALAC frame 4096 by default. A sample table whose entries last longer is refused.
_MAX_SAMPLE_FRAMES: Final[Mapping[bytes, int]] = MappingProxyType({b"mp4a": 2048, b"alac": 16384})


@dataclass(frozen=True, slots=True)
class _Box:
    type: bytes
    start: int  # payload offset
    end: int  # offset after the box


def _mp4_children(file: BinaryIO, start: int, end: int, limit: int = _MAX_CHILD_BOXES) -> list[_Box]:
    boxes: list[_Box] = []
    pos = start
    while pos + 8 <= end:
        if len(boxes) >= limit:
            raise InvalidAudio("the MPEG-4 file is corrupt (too many boxes)")
        header = _read_at(file, pos, 16)
        size, payload = int.from_bytes(header[0:4], "big"), pos + 8
        if size == 1 and len(header) == 16:
            size, payload = int.from_bytes(header[8:16], "big"), pos + 16
        elif size == 0:
            size = end - pos
        if size < payload - pos or pos + size > end:
            raise InvalidAudio("the MPEG-4 file is corrupt (invalid box size)")
        boxes.append(_Box(header[4:8], payload, pos + size))
        pos += size
    return boxes


def _mp4_child(file: BinaryIO, parent: _Box, kind: bytes) -> _Box | None:
    return next((box for box in _mp4_children(file, parent.start, parent.end) if box.type == kind), None)


def _mp4_path(file: BinaryIO, parent: _Box, *kinds: bytes) -> _Box | None:
    box: _Box | None = parent
    for kind in kinds:
        if box is None:
            return None
        box = _mp4_child(file, box, kind)
    return box


def _be32_table(file: BinaryIO, start: int, count: int) -> Iterator[array.array[int]]:
    """``count`` big-endian 32-bit values from ``start``, a bounded slice at a time."""
    per_chunk = _TABLE_CHUNK // 4
    for first in range(0, count, per_chunk):
        wanted = min(per_chunk, count - first)
        raw = _read_at(file, start + 4 * first, 4 * wanted)
        if len(raw) != 4 * wanted:
            raise InvalidAudio("the MPEG-4 sample table is truncated")
        values = array.array("I", raw)
        if sys.byteorder == "little":
            values.byteswap()
        yield values


def _full_box(file: BinaryIO, box: _Box, length: int) -> bytes:
    data = _read_at(file, box.start, min(length, box.end - box.start))
    if len(data) < length:
        raise InvalidAudio(f"the MPEG-4 {box.type.decode('latin-1')} box is truncated")
    return data


def _mp4_sound_track(file: BinaryIO, moov: _Box) -> tuple[_Box, _Box]:
    """``(mdia, stbl)`` of the first sound track."""
    for trak in _mp4_children(file, moov.start, moov.end):
        if trak.type != b"trak":
            continue
        mdia = _mp4_child(file, trak, b"mdia")
        hdlr = _mp4_child(file, mdia, b"hdlr") if mdia is not None else None
        if mdia is None or hdlr is None or _full_box(file, hdlr, 12)[8:12] != b"soun":
            continue
        stbl = _mp4_path(file, mdia, b"minf", b"stbl")
        if stbl is not None:
            return mdia, stbl
    raise InvalidAudio("the MPEG-4 file has no audio track")


def _probe_m4a(source: _Source) -> AudioInfo:
    """The duration is the sample table's (what a player plays), never the movie or media header's claim."""
    file = source.file
    _check_mp4_boxes(file, source.size)
    moov = next(box for box in _mp4_children(file, 0, source.size, _MAX_TOP_LEVEL_BOXES) if box.type == b"moov")
    mdia, stbl = _mp4_sound_track(file, moov)
    mdhd = _mp4_child(file, mdia, b"mdhd")
    stsd, stts, stsz = (_mp4_child(file, stbl, kind) for kind in (b"stsd", b"stts", b"stsz"))
    if mdhd is None or stsd is None or stts is None or stsz is None:
        raise InvalidAudio("the MPEG-4 audio track has no sample table")
    header = _full_box(file, mdhd, 24)
    timescale = int.from_bytes(header[20:24] if header[0] == 1 else header[12:16], "big")
    entry = _full_box(file, stsd, 44)  # version/flags, count, then the first sample entry's header and fields
    codec = entry[12:16]
    if codec not in _MAX_SAMPLE_FRAMES:
        raise InvalidAudio(f"the MPEG-4 audio codec {codec.decode('latin-1')!r} is not supported")
    channels, sample_rate = int.from_bytes(entry[32:34], "big"), int.from_bytes(entry[40:42], "big")
    sample_rate = sample_rate or timescale  # the 16.16 field cannot hold rates over 65535 (ALAC at 96 kHz)
    if timescale == 0 or sample_rate == 0:
        raise InvalidAudio("the MPEG-4 audio track has no time scale")

    entries = int.from_bytes(_full_box(file, stts, 8)[4:8], "big")
    if 8 + 8 * entries > stts.end - stts.start:
        raise InvalidAudio("the MPEG-4 sample table is truncated")
    samples = ticks = longest = 0
    for values in _be32_table(file, stts.start + 8, 2 * entries):
        counts, deltas = values[0::2], values[1::2]
        samples += sum(counts)
        ticks += sum(count * delta for count, delta in zip(counts, deltas, strict=True) if count)
        longest = max([longest, *(delta for count, delta in zip(counts, deltas, strict=True) if count)])
    sizes = _full_box(file, stsz, 12)
    uniform, count = int.from_bytes(sizes[4:8], "big"), int.from_bytes(sizes[8:12], "big")
    if uniform:
        total_bytes = uniform * count
    else:
        if 12 + 4 * count > stsz.end - stsz.start:
            raise InvalidAudio("the MPEG-4 sample table is truncated")
        total_bytes = sum(sum(values) for values in _be32_table(file, stsz.start + 12, count))
    if samples == 0 or count == 0:
        raise InvalidAudio("the MPEG-4 file holds no audio samples (fragmented MPEG-4 is not supported)")
    if samples != count or total_bytes > source.size:
        raise InvalidAudio("the MPEG-4 sample table does not match the file")
    if longest * sample_rate > _MAX_SAMPLE_FRAMES[codec] * timescale:
        raise InvalidAudio("the MPEG-4 sample table claims more audio than its samples hold")
    duration = ticks / timescale
    return _make_info(
        "m4a",
        duration=duration,
        bitrate=round(total_bytes * 8 / duration) if duration > 0 else None,
        sample_rate=sample_rate,
        channels=channels,
    )


# --- Ogg -------------------------------------------------------------------


# Read by hand: mutagen's OggVorbis/OggOpus would also parse the comment packet (which may span the whole file) and
# take the length from the last page's granule position, whatever the pages before it hold.
_OPUS_MAX_PACKET_SAMPLES: Final = 5760  # 120 ms at 48 kHz: the longest an Opus packet can decode to
_NO_GRANULE: Final = 0xFFFFFFFFFFFFFFFF  # "no packet ends on this page"
_OGG_READ: Final = 1024 * 1024


def _ogg_first_packet(head: bytes) -> bytes:
    segments = head[26]
    lacing = head[27 : 27 + segments]
    length = 0
    for value in lacing:
        length += value
        if value < 255:
            break
    return head[27 + segments : 27 + segments + length]


def _next_capture(file: BinaryIO, pos: int, size: int) -> int | None:
    """Offset of the next ``OggS`` at or after ``pos``, reading a bounded window at a time."""
    while pos + 4 <= size:
        window = _read_at(file, pos, _OGG_READ)
        hit = window.find(b"OggS")
        if hit != -1:
            return pos + hit
        pos += max(1, len(window) - 3)
    return None


def _ogg_last_granule(file: BinaryIO, size: int, max_packet_samples: int) -> int:
    """The granule position of the first logical stream's last page that ends a packet, walking every page.

    A page may not claim more samples than the packets ended so far can decode to (``max_packet_samples`` each):
    a stream whose granule positions promise more audio than it holds is refused. Junk between pages is skipped to
    the next capture pattern, as decoders do; a truncated last page ends the walk (it cannot be played).
    """
    serial: bytes | None = None
    packets = 0  # non-empty packets of the stream completed so far
    partial = 0  # bytes of the packet that is still open
    last: int | None = None
    pos = 0
    buffer, buffer_start = b"", 0
    while pos + 27 <= size:
        if pos + 27 + 255 > buffer_start + len(buffer):
            buffer, buffer_start = _read_at(file, pos, _OGG_READ), pos
        at = pos - buffer_start
        if buffer[at : at + 4] != b"OggS" or buffer[at + 4] != 0:
            found = _next_capture(file, pos + 1, size)
            if found is None:
                break
            pos = found
            continue
        segments = buffer[at + 26]
        lacing = buffer[at + 27 : at + 27 + segments]
        end = pos + 27 + segments + sum(lacing)
        if len(lacing) < segments or end > size:
            break
        page_serial = buffer[at + 14 : at + 18]
        if serial is None:
            serial = page_serial
        if page_serial == serial:
            for value in lacing:
                partial += value
                if value < 255:
                    packets += partial > 0
                    partial = 0
            granule = int.from_bytes(buffer[at + 6 : at + 14], "little")
            if granule != _NO_GRANULE:
                if granule > packets * max_packet_samples:
                    raise InvalidAudio("the Ogg stream claims more audio than its packets hold")
                last = granule
        pos = end
    if last is None:
        raise InvalidAudio("the Ogg stream has no complete audio page")
    return last


def _probe_ogg(source: _Source) -> AudioInfo:
    codec = _ogg_codec(source.head)
    packet = _ogg_first_packet(source.head)
    if codec == "vorbis":
        if len(packet) < 30:
            raise InvalidAudio("the Vorbis identification header is truncated")
        channels, sample_rate = packet[11], int.from_bytes(packet[12:16], "little")
        maximum, nominal, minimum = struct.unpack("<3i", packet[16:28])
        long_block = packet[28] >> 4
        if channels == 0 or sample_rate == 0 or not 6 <= long_block <= 13:
            raise InvalidAudio("the Vorbis identification header is invalid")
        # A Vorbis packet decodes to at most half a long block.
        granule = _ogg_last_granule(source.file, source.size, (1 << long_block) // 2)
        return _make_info(
            "ogg",
            duration=granule / sample_rate,
            bitrate=nominal if nominal > 0 else (max(0, maximum) + max(0, minimum)) // 2,
            sample_rate=sample_rate,
            channels=channels,
        )
    if codec == "opus":
        if len(packet) < 19 or packet[8] >> 4 != 0:
            raise InvalidAudio("the Opus identification header is invalid or of an unsupported version")
        channels, pre_skip = packet[9], int.from_bytes(packet[10:12], "little")
        granule = _ogg_last_granule(source.file, source.size, _OPUS_MAX_PACKET_SAMPLES)
        return _make_info(
            "ogg",
            duration=(granule - pre_skip) / 48000,
            bitrate=None,  # Opus headers carry no bitrate
            sample_rate=48000,  # Opus always decodes at 48 kHz
            channels=channels,
        )
    # Unreachable: sniffing accepted the stream only for one of the two codecs.
    raise InvalidAudio("the Ogg stream holds neither Vorbis nor Opus audio")


# --- FLAC ------------------------------------------------------------------


def _flac_audio_offset(file: BinaryIO, start: int, size: int) -> int:
    """Offset of the first audio frame, after the metadata blocks."""
    pos = start + 4  # "fLaC"
    for _ in range(1024):
        header = _read_at(file, pos, 4)
        if len(header) < 4:
            raise InvalidAudio("the FLAC file is truncated (metadata)")
        pos += 4 + int.from_bytes(header[1:4], "big")
        if header[0] & 0x80:  # last metadata block
            return pos
        if pos > size:
            break
    raise InvalidAudio("the FLAC file is truncated (metadata)")


# A truncated FLAC still declares its full length in STREAMINFO.  To notice,
# the tail of the file is searched for the last *complete* audio frame: a
# frame header (sync, valid fields, CRC-8) whose frame CRC-16 matches up to the
# next header or the end of the file.  Its end sample is how much audio there
# really is.  Frames are at most a few tens of KiB, so the tail window always
# holds the last few of them.
_FLAC_TAIL_WINDOW: Final = 256 * 1024


def _crc_table(poly: int, width: int) -> tuple[int, ...]:
    top = 1 << (width - 1)
    mask = (1 << width) - 1
    table = []
    for byte in range(256):
        crc = byte << (width - 8)
        for _ in range(8):
            crc = ((crc << 1) ^ poly) if crc & top else crc << 1
        table.append(crc & mask)
    return tuple(table)


_CRC8_TABLE: Final = _crc_table(0x07, 8)
_CRC16_TABLE: Final = _crc_table(0x8005, 16)


def _crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = _CRC8_TABLE[crc ^ byte]
    return crc


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16_TABLE[(crc >> 8) ^ byte]
    return crc


def _flac_frame_end_sample(data: bytes, pos: int, fixed_block: int) -> int | None:
    """End sample of the frame whose header starts at ``pos``; None if no valid header."""
    if pos + 6 > len(data) or data[pos] != 0xFF or data[pos + 1] & 0xFE != 0xF8:
        return None
    variable = data[pos + 1] & 0x01
    block_code, rate_code = data[pos + 2] >> 4, data[pos + 2] & 0x0F
    channel_code, size_code = data[pos + 3] >> 4, (data[pos + 3] >> 1) & 0x07
    if block_code == 0 or rate_code == 15 or channel_code > 10 or size_code == 3:
        return None
    if data[pos + 3] & 0x01:  # reserved bit
        return None
    # Frame or sample number, coded like UTF-8 (up to 7 bytes).
    lead = data[pos + 4]
    extra = 0
    while extra < 7 and lead & (0x80 >> extra):
        extra += 1
    if extra == 1 or extra == 7:
        return None
    extra = max(0, extra - 1)
    number = lead & (0x7F >> (extra + 1)) if extra else lead
    index = pos + 5
    for continuation in data[index : index + extra]:
        if continuation & 0xC0 != 0x80:
            return None
        number = (number << 6) | (continuation & 0x3F)
    index += extra
    if block_code == 1:
        block = 192
    elif block_code <= 5:
        block = 576 << (block_code - 2)
    elif block_code == 6:
        block = int.from_bytes(data[index : index + 1], "big") + 1
        index += 1
    elif block_code == 7:
        block = int.from_bytes(data[index : index + 2], "big") + 1
        index += 2
    else:
        block = 256 << (block_code - 8)
    index += {12: 1, 13: 2, 14: 2}.get(rate_code, 0)
    if index >= len(data) or _crc8(data[pos:index]) != data[index]:
        return None
    first_sample = number if variable else number * fixed_block
    return first_sample + block


def _flac_audio_end(source: _Source, audio_offset: int, fixed_block: int) -> int | None:
    """End sample of the last complete frame in the tail window; None if none is."""
    window_start = max(audio_offset, source.size - _FLAC_TAIL_WINDOW)
    tail = _read_at(source.file, window_start, source.size - window_start)
    ends = {}
    pos = tail.find(b"\xff")
    while pos != -1:
        end_sample = _flac_frame_end_sample(tail, pos, fixed_block)
        if end_sample is not None:
            ends[pos] = end_sample
        pos = tail.find(b"\xff", pos + 1)
    boundaries = sorted(ends)
    stop = len(tail)
    if tail[-128:-125] == b"TAG":  # an ID3v1 tag after the audio
        stop -= 128
    boundaries.append(stop)
    # Latest frame first.  A false header inside frame data only adds a
    # boundary, so each candidate is tried against the next few boundaries.
    for i in range(len(boundaries) - 2, -1, -1):
        start = boundaries[i]
        for end in boundaries[i + 1 : i + 4]:
            if end - start >= 8 and _crc16(tail[start : end - 2]) == int.from_bytes(tail[end - 2 : end], "big"):
                return ends[start]
    return None


def _flac_stream_info(source: _Source) -> Any:
    """STREAMINFO, which must be the first metadata block. Only this block is parsed: mutagen's FLAC would parse
    every block (16 MB pictures, Vorbis comments by the million) and keep them in memory."""
    header = _read_at(source.file, source.audio_start + 4, 4 + 34)
    if len(header) < 4 + 34 or header[0] & 0x7F != 0 or int.from_bytes(header[1:4], "big") < 34:
        raise InvalidAudio("the FLAC file does not start with its stream information")
    parse_block: Callable[[bytes], Any] = StreamInfo
    return parse_block(header[4:])


def _probe_flac(source: _Source) -> AudioInfo:
    info = _flac_stream_info(source)
    audio_offset = _flac_audio_offset(source.file, source.audio_start, source.size)
    sync = _read_at(source.file, audio_offset, 2)
    if len(sync) < 2 or sync[0] != 0xFF or sync[1] & 0xFE != 0xF8:
        raise InvalidAudio("the FLAC file has no audio frames")
    declared = int(info.total_samples)
    if declared <= 0:
        raise InvalidAudio("the FLAC stream does not declare its length")
    sample_rate = int(info.sample_rate)
    samples = declared
    end_sample = _flac_audio_end(source, audio_offset, int(info.min_blocksize))
    if end_sample is not None and declared - end_sample > int(info.max_blocksize):
        # More than a frame is missing (a frame less can also mean that the
        # last frame is followed by unknown trailing tags: keep STREAMINFO).
        samples = end_sample
    elif audio_offset >= source.size - _FLAC_TAIL_WINDOW:
        # All of the audio was searched and not one frame is complete.
        raise InvalidAudio("the FLAC file is truncated: it has no complete audio frame")
    # else: a long file whose tail is unusual (e.g. other trailing tags):
    # trust STREAMINFO rather than refuse a file that may well be fine.
    duration = samples / sample_rate
    return _make_info(
        "flac",
        duration=duration,
        bitrate=round((source.size - audio_offset) * 8 / duration),
        sample_rate=sample_rate,
        channels=int(info.channels),
    )


_PROBES: Final[Mapping[str, Callable[[_Source], AudioInfo]]] = MappingProxyType(
    {
        "mp3": _probe_mp3,
        "wav": _probe_wav,
        "m4a": _probe_m4a,
        "ogg": _probe_ogg,
        "flac": _probe_flac,
    }
)
