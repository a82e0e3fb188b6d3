"""Shapes of the room cover endpoints, for the OpenAPI document (documentation only)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from typing_extensions import TypedDict

from spotik.http.openapi import Binary, Message, closed, open_ended

DataUrl = Annotated[
    str,
    Field(
        pattern=r"^data:image/(png|jpe?g|webp);base64,",
        description="A `data:image/(png|jpeg|webp);base64,…` URL of at most 5 MB of image.",
    ),
]


@closed
class CoverUpdated(TypedDict):
    """The room's new cover (envelope B)."""

    message: Message
    cover_url: Annotated[str, Field(description="Where the cover is served (`/api/storage/…`).")]


@open_ended
class CoverUploadForm(TypedDict, total=False):
    """A new cover: an image file (multipart), or a data URL. ``cover_image`` wins when both are sent."""

    cover_image: Annotated[Binary, Field(description="JPEG, PNG or WebP, at most 5 MB (multipart only).")]
    cover_data: DataUrl
