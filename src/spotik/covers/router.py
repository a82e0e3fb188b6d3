"""Room cover upload and the public storage route (docs/api.md#room-covers-and-public-storage), envelope B."""

from __future__ import annotations

from fastapi import APIRouter, Request
from python_multipart.multipart import parse_options_header
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Message

from spotik.covers import service, storage
from spotik.covers.schemas import CoverUpdated, CoverUploadForm
from spotik.deps import CurrentUser, RoomDep, StateDep
from spotik.errors import ApiError, Envelope, Forbidden, JSONResponse, NotFound, PayloadTooLarge
from spotik.http.input import read_input
from spotik.http.openapi import (
    FILE_REQUEST_HEADERS,
    INVALID_B,
    ROOM_NOT_FOUND,
    UNAUTHENTICATED,
    ErrorA,
    ErrorB,
    error,
    file_responses,
    request_body,
    responses,
    returns,
)
from spotik.http.responses import bare
from spotik.tracks.streaming import audio_file_response

router = APIRouter(tags=["covers"])

COVER_CACHE_CONTROL = "public, max-age=3600"


class _BodyLimit:
    """Counts the body as it is received and stops it past ``limit``, whether or not a Content-Length was sent.

    It raises the form parser's own exception, so that Starlette closes the temporary files of a half-parsed form.
    It also watches for the multipart body's closing delimiter (``--boundary--`` on a line of its own) and stops a
    body that ends without it: Starlette's parser would silently drop the part that the body's end cut off (turning
    an interrupted upload into "no cover provided") and leave that part's temporary file open.
    """

    def __init__(self, request: Request, limit: int, closing: bytes | None = None) -> None:
        self._receive = request.receive
        self.limit = limit
        self.received = 0
        self.exceeded = False
        self.closing = closing
        self.closed = False
        self.truncated = False
        self._tail = b"\r\n"  # a delimiter is a line of its own: the body's start counts as a line start

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            self.received += len(chunk)
            if self.received > self.limit:
                self.exceeded = True
                raise MultiPartException("Request body too large")
            if self.closing is not None and not self.closed:
                window = self._tail + chunk
                self.closed = self.closing in window
                self._tail = window[-(len(self.closing) - 1) :]
                if not self.closed and not message.get("more_body", False):
                    self.truncated = True
                    raise MultiPartException("The body ended before its closing boundary")
        return message


def _closing_delimiter(content_type: str) -> bytes | None:
    _kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    return b"\r\n--" + boundary + b"--" if boundary else None


def _file_too_large() -> PayloadTooLarge:
    return PayloadTooLarge("File too large", envelope=Envelope.B)


async def read_cover_input(request: Request, limit: int) -> service.CoverInput:
    """The cover's input from a body of at most ``limit`` bytes (``MAX_COVER_BODY_KB``)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _file_too_large()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    multipart = content_type == "multipart/form-data"
    closing = _closing_delimiter(request.headers.get("content-type", "")) if multipart else None
    body_limit = _BodyLimit(request, limit, closing)
    limited = Request(request.scope, body_limit.receive)
    try:
        if not multipart:
            data = await read_input(limited, limit=limit)
            sent = data.get("cover_image") not in (None, "")  # JSON cannot carry a file: sent means "not a file"
            return service.CoverInput(image_sent=sent, image=None, cover_data=data.get("cover_data"))
        form = await limited.form(max_files=4, max_fields=32, max_part_size=limit)
        try:
            # The first of several files counts, as for track uploads (Starlette's ``get`` would return the last).
            images = form.getlist("cover_image")
            image = images[0] if images else None
            contents = await image.read(storage.MAX_COVER_BYTES + 1) if isinstance(image, UploadFile) else None
            cover_data = form.get("cover_data")
            return service.CoverInput(
                image_sent=image not in (None, ""),
                image=contents,
                cover_data=cover_data if isinstance(cover_data, str) else None,
            )
        finally:
            await form.close()
    except (HTTPException, MultiPartException) as exc:
        if body_limit.exceeded:
            raise _file_too_large() from None
        if body_limit.truncated:
            raise ApiError(
                "The request body is not valid multipart/form-data.",
                error="Malformed upload",
                envelope=Envelope.B,
                status_code=400,
            ) from None
        if isinstance(exc, HTTPException):  # a malformed form: the same 400, in this route family's envelope
            raise ApiError(str(exc.detail), envelope=Envelope.B, status_code=exc.status_code) from None
        raise
    except ClientDisconnect:
        # Nobody is left to read the answer (the same as for a track upload); Starlette has closed the temporary files.
        raise ApiError("The upload was interrupted", status_code=400, envelope=Envelope.B) from None


@router.post(
    "/api/rooms/{room}/cover",
    summary="Replace a room's cover (its administrator)",
    responses=responses(
        returns(CoverUpdated),
        {400: error("A malformed JSON body (envelope A) or form (envelope B).", ErrorA, ErrorB)},
        UNAUTHENTICATED,
        {403: error("Only the room's administrator may change its cover (envelope B).", ErrorB)},
        ROOM_NOT_FOUND,
        {413: error("The body is larger than `MAX_COVER_BODY_KB` (8 MiB by default) (envelope B).", ErrorB)},
        INVALID_B,
        {500: error("The cover could not be stored (envelope B).", ErrorB)},
        {507: error("No space left in the storage for the cover (envelope B).", ErrorB)},
    ),
    openapi_extra=request_body(
        CoverUploadForm,
        description="`cover_image` (multipart only) or `cover_data`.",
        encoding={"cover_image": {"contentType": "image/jpeg, image/png, image/webp"}},
    ),
)
async def upload_room_cover(user: CurrentUser, room: RoomDep, request: Request, state: StateDep) -> JSONResponse:
    service.ensure_can_update_cover(room, user)
    cover = await read_cover_input(request, state.settings.max_cover_body_bytes)
    url = await service.update_room_cover(state.events, state.settings.public_root, room=room, user=user, cover=cover)
    return bare({"message": "Room cover updated successfully", "cover_url": url})


@router.api_route(
    "/api/storage/{path:path}",
    methods=["GET", "HEAD"],
    summary="A public file: a room's or a track's cover (no authentication)",
    response_class=Response,
    responses=responses(
        file_responses("image/*", "image"),
        {403: error("Not a cover's path (envelope B).", ErrorB)},
        {404: error("No such file (envelope B).", ErrorB)},
    ),
    openapi_extra=FILE_REQUEST_HEADERS,
)
async def serve_public_file(path: str, request: Request, state: StateDep) -> Response:
    if not storage.is_cover_path(path):
        raise Forbidden("Invalid path", envelope=Envelope.B)
    found = storage.cover_file(state.settings.public_root, path)
    if found is None:
        raise NotFound("File not found", envelope=Envelope.B)
    try:
        response = audio_file_response(
            request,
            found,
            media_type=storage.MEDIA_TYPES[found.suffix.lstrip(".").lower()],
            download_name=found.name,
            cache_control=COVER_CACHE_CONTROL,
        )
    except (FileNotFoundError, ValueError):  # removed or replaced between the lookup and the stat
        raise NotFound("File not found", envelope=Envelope.B) from None
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
