"""Errors and their JSON envelopes (docs/decisions.md#d9), built in one place.

Two envelopes exist (docs/api.md#response-envelopes): envelope A ``{success:false, message, error?, errors?}`` for
auth, rooms, playback, genres, playlists and framework errors; envelope B ``{error, message?, errors?}`` for tracks,
votes, files and covers. Services raise ``ApiError`` subclasses; the handlers in ``spotik.app`` render them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import orjson
from starlette.responses import JSONResponse as _StarletteJSONResponse


class Envelope(StrEnum):
    A = "A"
    B = "B"


class JSONResponse(_StarletteJSONResponse):
    """JSON rendered by orjson (no FastAPI encoder round-trip on our own envelopes)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


class ApiError(Exception):
    status_code = 400

    def __init__(
        self,
        message: str,
        *,
        error: str | None = None,
        errors: dict[str, list[str]] | None = None,
        envelope: Envelope = Envelope.A,
        status_code: int | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error = error
        self.errors = errors
        self.envelope = envelope
        if status_code is not None:
            self.status_code = status_code
        self.headers = headers
        self.extra = extra

    def body(self) -> dict[str, Any]:
        if self.envelope is Envelope.B:
            body: dict[str, Any] = {"error": self.error or self.message}
            if self.error and self.message != self.error:
                body["message"] = self.message
        else:
            body = {"success": False, "message": self.message}
            if self.error:
                body["error"] = self.error
        if self.errors is not None:
            body["errors"] = self.errors
        if self.extra:
            body.update(self.extra)
        return body

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status_code, headers=self.headers)


class BadRequest(ApiError):
    status_code = 400


class Unauthorized(ApiError):
    status_code = 401


class Forbidden(ApiError):
    status_code = 403


class NotFound(ApiError):
    status_code = 404


class Conflict(ApiError):
    status_code = 409


class PayloadTooLarge(ApiError):
    status_code = 413


class ValidationFailed(ApiError):
    status_code = 422

    def __init__(self, errors: dict[str, list[str]], *, envelope: Envelope = Envelope.A) -> None:
        super().__init__("Validation failed", errors=errors, envelope=envelope)


def error_response(status: int, message: str, error: str, **extra: Any) -> JSONResponse:
    """A framework-level error (unknown route, bad JSON, 500 …) in envelope A."""
    return ApiError(message, error=error, status_code=status, extra=extra or None).response()
