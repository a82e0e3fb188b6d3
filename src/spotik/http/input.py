"""Reading request input the way Laravel's ``$request->all()`` does: JSON or form body, bounded in size."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from spotik.errors import ApiError, PayloadTooLarge

MAX_FORM_BODY = 1024 * 1024  # JSON and urlencoded bodies; uploads have their own limit


async def read_input(request: Request, *, limit: int = MAX_FORM_BODY) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge("Request body too large", error="Payload too large")
    if content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.form()
        return {key: value for key, value in form.items() if isinstance(value, str)}
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge("Request body too large", error="Payload too large")
    if not body.strip():
        return {}
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError("Malformed JSON in request body", error="Invalid JSON", status_code=400) from None
    if not isinstance(data, dict):
        raise ApiError("The request body must be a JSON object", error="Invalid JSON", status_code=400)
    return data
