"""Room covers (docs/api.md#room-covers-and-public-storage): administrator-only upload, by file or data URL, stored
on the public disk.

The Laravel backend let any authenticated user replace any room's cover (docs/decisions.md#b18); here only the
room's administrator may. The image type is decided from the content, never from the file name or declared MIME
type, and the Laravel rule messages are kept (``image``, ``mimes:jpg,jpeg,png,webp``, ``max:5120``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import errno
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spotik.auth.models import User
from spotik.covers import storage
from spotik.errors import ApiError, Envelope, Forbidden, ValidationFailed
from spotik.events import DomainEvent, EventBus
from spotik.rooms.models import Room
from spotik.timefmt import now_iso

DATA_URL = re.compile(r"data:image/(png|jpe?g|webp);base64,(.*)", re.IGNORECASE | re.DOTALL)
_WHITESPACE = re.compile(rb"[ \t\r\n]+")
INVALID_COVER_DATA = "Invalid cover_data format"


@dataclass(frozen=True, slots=True)
class CoverInput:
    """What the request carried, parsed by the router.

    ``image`` holds at most ``MAX_COVER_BYTES + 1`` bytes of the ``cover_image`` file (enough to tell "too large");
    it is None when ``cover_image`` was sent as something other than a file.
    """

    image_sent: bool
    image: bytes | None
    cover_data: Any


def ensure_can_update_cover(room: Room, user: User) -> None:
    """Checked before the body is read: somebody else's upload is refused without being received."""
    if room.administrator_id != user.id:
        raise Forbidden("Only room administrators can update the cover", envelope=Envelope.B)


async def update_room_cover(events: EventBus, public_root: Path, *, room: Room, user: User, cover: CoverInput) -> str:
    ensure_can_update_cover(room, user)
    data, ext = checked_cover(cover)
    try:
        url = await asyncio.to_thread(storage.store_cover, public_root, storage.ROOM_COVERS, room.id, data, ext)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ApiError(
                "There is no space left to store the cover.",
                error="Insufficient storage",
                status_code=507,
                envelope=Envelope.B,
            ) from None
        raise ApiError("Failed to store cover image", envelope=Envelope.B, status_code=500) from None
    await events.publish(
        DomainEvent(
            "room_updated",
            room.id,
            {
                "room_id": str(room.id),
                "room": {"id": str(room.id), "cover_url": url},
                "cover_url": url,
                "timestamp": now_iso(),
            },
        )
    )
    return url


def checked_cover(cover: CoverInput) -> tuple[bytes, str]:
    """The image bytes and the extension they are stored under, or a 422 in envelope B.

    ``cover_image`` wins when both fields are sent (as in the original).
    """
    if cover.image_sent:
        failure = _image_failure("cover_image", cover.image)
        if failure is not None:
            raise ValidationFailed({"cover_image": [failure]}, envelope=Envelope.B)
        assert cover.image is not None
        return cover.image, _stored_ext(cover.image)
    if isinstance(cover.cover_data, str) and cover.cover_data.strip():
        data = _decode_data_url(cover.cover_data.strip())
        failure = _image_failure("cover_data", data)
        if failure is not None:
            raise _invalid_cover_data(failure)
        return data, _stored_ext(data)
    if cover.cover_data is not None and not isinstance(cover.cover_data, str):
        raise _invalid_cover_data("The cover data field must be a string.")
    raise ApiError(
        "Validation failed",
        errors={"cover": ["No cover_image or cover_data provided"]},
        envelope=Envelope.B,
        status_code=422,
    )


def _image_failure(field: str, data: bytes | None) -> str | None:
    label = field.replace("_", " ")
    if not data:
        return f"The {label} field must be an image."
    if len(data) > storage.MAX_COVER_BYTES:
        return _too_large(label)
    kind = storage.image_type(data)
    if kind is None:
        return f"The {label} field must be an image."
    if kind not in storage.ACCEPTED_IMAGE_TYPES:
        return f"The {label} field must be a file of type: {', '.join(storage.COVER_EXTENSIONS)}."
    return None


def _too_large(label: str) -> str:
    return f"The {label} field must not be greater than {storage.MAX_COVER_BYTES // 1024} kilobytes."


def _stored_ext(data: bytes) -> str:
    kind = storage.image_type(data)
    assert kind in storage.ACCEPTED_IMAGE_TYPES
    return kind


def _decode_data_url(value: str) -> bytes:
    match = DATA_URL.fullmatch(value)
    if match is None:
        raise _invalid_cover_data("The cover data field must be a data:image/(png|jpeg|webp);base64 URL.")
    payload = _WHITESPACE.sub(b"", match.group(2).encode("ascii", errors="replace"))
    # Four base64 characters per three bytes: an oversized payload is refused before it is decoded.
    if len(payload) > (storage.MAX_COVER_BYTES + 2) // 3 * 4:
        raise _invalid_cover_data(_too_large("cover data"))
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid_cover_data("The cover data field must be valid base64.") from None


def _invalid_cover_data(detail: str) -> ApiError:
    return ApiError(INVALID_COVER_DATA, errors={"cover_data": [detail]}, envelope=Envelope.B, status_code=422)
