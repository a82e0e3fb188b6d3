"""Success envelopes (docs/api.md#response-envelopes): envelope A ``{success, message, data?}``; envelope B is a bare
object."""

from __future__ import annotations

from typing import Any

from spotik.errors import JSONResponse


def ok(message: str, data: Any = None, *, status_code: int = 200, include_data: bool = True) -> JSONResponse:
    body: dict[str, Any] = {"success": True, "message": message}
    if include_data and data is not None:
        body["data"] = data
    return JSONResponse(body, status_code=status_code)


def bare(body: dict[str, Any], *, status_code: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status_code)
