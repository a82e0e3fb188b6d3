"""Cover images on the public disk (docs/api.md#room-covers-and-public-storage): ``room_covers/<room_id>.<ext>``,
``track_covers/<track_id>.<ext>``.

URLs are ``/api/storage/<dir>/<id>.<ext>``. Lookups list a directory once per request instead of probing every
extension of every id (the Laravel backend stat'ed up to four paths per serialised room).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path

from spotik.tracks.streaming import resolve_inside

COVER_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
ROOM_COVERS = "room_covers"
TRACK_COVERS = "track_covers"


def cover_urls(public_root: Path, directory: str, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The cover URL of each id that has one (ids without a cover are absent)."""
    wanted = {str(item): item for item in ids}
    if not wanted:
        return {}
    found: dict[uuid.UUID, str] = {}
    folder = public_root / directory
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return {}
    for entry in entries:
        stem, _, ext = entry.name.rpartition(".")
        if ext.lower() in COVER_EXTENSIONS and stem in wanted:
            found[wanted[stem]] = f"/api/storage/{directory}/{entry.name}"
    return found


# --- Stored images -------------------------------------------------------------------------------------------------

MAX_COVER_BYTES = 5120 * 1024  # Laravel's "max:5120" (kilobytes)
COVER_DIRECTORIES = (ROOM_COVERS, TRACK_COVERS)
MEDIA_TYPES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
# What the content says -> the extension it is stored under. GIF and BMP are images, but not accepted ones.
ACCEPTED_IMAGE_TYPES = frozenset({"jpg", "png", "webp"})
_BMP_DIB_HEADER_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})


def image_type(data: bytes) -> str | None:
    """The image format of ``data`` from its magic bytes ("jpg", "png", "webp", "gif", "bmp"), else None.

    Never from a client's file name or declared MIME type. More than the bare magic number is looked at (the
    first JPEG marker, the WebP bitstream's signature), so that "magic bytes followed by HTML" is not an image.
    """
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return "png"
    if data[:3] == b"\xff\xd8\xff" and len(data) > 3 and 0xC0 <= data[3] <= 0xFE:  # SOI, then a marker
        return "jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and _webp_bitstream(data):
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:2] == b"BM" and len(data) >= 26 and int.from_bytes(data[14:18], "little") in _BMP_DIB_HEADER_SIZES:
        return "bmp"
    return None


def _webp_bitstream(data: bytes) -> bool:
    """The first chunk of a WebP file starts a lossy (VP8 start code), lossless (VP8L signature) or extended
    (VP8X, a 10-byte header) bitstream."""
    chunk = data[12:16]
    if chunk == b"VP8 ":
        return data[23:26] == b"\x9d\x01\x2a"
    if chunk == b"VP8L":
        return data[20:21] == b"\x2f"
    return chunk == b"VP8X" and int.from_bytes(data[16:20], "little") >= 10


def cover_url(directory: str, filename: str) -> str:
    return f"/api/storage/{directory}/{filename}"


def store_cover(public_root: Path, directory: str, item_id: uuid.UUID, data: bytes, ext: str) -> str:
    """Write ``<directory>/<item_id>.<ext>`` atomically, remove the item's other variants, return the cover URL.

    Blocking: call it in a thread. The file is written to a temporary name in the same directory and renamed over
    the target, so a reader sees the old cover or the new one, never half a file. Writers of one directory are
    serialised by an advisory lock on the directory (across processes of this host) so that two uploads of
    different formats cannot each delete the other's file and leave no cover at all.
    """
    if ext not in COVER_EXTENSIONS:
        raise ValueError(f"not a cover extension: {ext!r}")
    folder = public_root / directory
    folder.mkdir(parents=True, exist_ok=True)
    filename = f"{item_id}.{ext}"
    directory_fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(directory_fd, fcntl.LOCK_EX)
        temporary = tempfile.NamedTemporaryFile(  # closed below; renamed into place, or removed on failure
            dir=folder, prefix=f".{item_id}.", suffix=".tmp", delete=False
        )
        try:
            with temporary:
                temporary.write(data)
                temporary.flush()
                os.fsync(temporary.fileno())
            os.chmod(temporary.name, 0o644)  # mkstemp makes it 0600; covers are public
            os.replace(temporary.name, folder / filename)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary.name)
            raise
        _remove_variants(folder, item_id, keep=filename)
    finally:
        os.close(directory_fd)  # also releases the lock
    return cover_url(directory, filename)


def delete_covers(public_root: Path, directory: str, item_id: uuid.UUID) -> None:
    """Remove every cover variant of an item (for room and track deletion). Blocking."""
    _remove_variants(public_root / directory, item_id, keep=None)


def _remove_variants(folder: Path, item_id: uuid.UUID, *, keep: str | None) -> None:
    for ext in COVER_EXTENSIONS:
        name = f"{item_id}.{ext}"
        if name != keep:
            with contextlib.suppress(FileNotFoundError):
                (folder / name).unlink()


def cover_file(public_root: Path, relative: str) -> Path | None:
    """The stored cover file that ``relative`` (``<directory>/<name>``, already checked) names, or None.

    Confined to the cover directory itself (not merely the public root), through ``resolve_inside``: no ``..``,
    no absolute paths, no symlink out of it; only image extensions are ever served (never a temporary file).
    """
    directory, _, name = relative.partition("/")
    found = resolve_inside(public_root / directory, name)
    if found is None or found.suffix.lstrip(".").lower() not in MEDIA_TYPES:
        return None
    return found


def is_cover_path(relative: str) -> bool:
    directory, separator, _ = relative.partition("/")
    return bool(separator) and directory in COVER_DIRECTORIES
