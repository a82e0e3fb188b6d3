"""Success envelopes (docs/api.md#response-envelopes): envelope A ``{success, message, data?}``; envelope B is a bare
object."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from spotik.errors import JSONResponse


def ok(message: str, data: Any = None, *, status_code: int = 200, include_data: bool = True) -> JSONResponse:
    body: dict[str, Any] = {"success": True, "message": message}
    if include_data and data is not None:
        body["data"] = data
    return JSONResponse(body, status_code=status_code)


def bare(body: dict[str, Any], *, status_code: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status_code)


@dataclass(frozen=True, slots=True)
class Answer:
    """A hot read's response and what it may be kept on (``spotik.http.hot``): kept only with ``tags``, which must
    include the tags of every cache entry it was built from, and at most ``until`` (its clock-dependent parts)."""

    response: JSONResponse
    tags: tuple[str, ...] = ()
    until: datetime | None = None
