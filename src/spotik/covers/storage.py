"""Cover images on the public disk (contract §6.3): ``room_covers/<room_id>.<ext>``, ``track_covers/<track_id>.<ext>``.

URLs are ``/api/storage/<dir>/<id>.<ext>``. Lookups list a directory once per request instead of probing every
extension of every id (the Laravel backend stat'ed up to four paths per serialised room).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from pathlib import Path

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
