"""Reading request input the way Laravel's ``$request->all()`` does: JSON or form body, bounded in size.

Every body is counted while it streams in and refused past ``limit`` (413), whether or not a ``Content-Length`` was
sent; the limit is the app's ``MAX_BODY_KB`` unless the route gives its own. Text the database cannot store is not
refused here but kept recognisable, so that validation names the field
(``spotik.validation.storable``): a JSON escape of a lone surrogate (``"\\ud800"``) stays a lone surrogate, and the
bytes of a form value that are not UTF-8 are decoded with ``surrogateescape`` (each becomes a lone surrogate).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn, Protocol, runtime_checkable
from urllib.parse import unquote_to_bytes

import orjson
from fastapi.routing import APIRoute
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.requests import Request
from starlette.responses import Response

from spotik.errors import ApiError, PayloadTooLarge


@runtime_checkable
class LimitsBodies(Protocol):
    """The app (``SpotikApp``; spotik.state is above this module): the largest JSON or form body it reads."""

    @property
    def max_body_bytes(self) -> int: ...


# The range of numbers orjson reads as integers; a longer integer becomes a float, as orjson does.
_INTEGER_RANGE = range(-(2**63), 2**64)


def body_limit(request: Request) -> int:
    """The largest JSON or form body the app serving ``request`` reads (``MAX_BODY_KB``)."""
    app = request.app
    if not isinstance(app, LimitsBodies):  # a route mounted in some other app: a programming error
        raise TypeError("Spotik's routes run inside the app built by spotik.app.create_app")
    return app.max_body_bytes


async def read_input(request: Request, *, limit: int | None = None) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await read_body(request, limit=limit)
    if content_type == "application/x-www-form-urlencoded":
        return _urlencoded(body)
    if content_type == "multipart/form-data":
        return _multipart(body, request.headers.get("content-type", ""))
    if not body.strip():
        return {}
    data = parse_json(body)
    if not isinstance(data, dict):
        raise ApiError("The request body must be a JSON object", error="Invalid JSON", status_code=400)
    return data


async def read_body(request: Request, *, limit: int | None = None) -> bytes:
    """The whole body, or a 413 as soon as it is known to exceed ``limit`` (declared, or counted as it arrives;
    :func:`body_limit` by default)."""
    if limit is None:
        limit = body_limit(request)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        _too_large()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            _too_large()
    return bytes(body)


class BoundedBodyRoute(APIRoute):
    """A route whose JSON body FastAPI parses itself (a typed ``Body()`` parameter): the body is read first, within
    ``MAX_BODY_KB`` (413 past it, counted while it streams), then parsed with :func:`parse_json`'s rules (a body
    that is not JSON, NaN and Infinity included, is a 400) instead of FastAPI's unbounded read."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def bounded(request: Request) -> Response:
            return await handler(_ReadRequest(request, await read_body(request)))

        return bounded


class _ReadRequest(Request):
    """A request whose body was already read."""

    def __init__(self, request: Request, body: bytes) -> None:
        super().__init__(request.scope, request.receive)
        self._read = body

    async def body(self) -> bytes:
        return self._read

    async def json(self) -> Any:
        try:
            return parse_json(self._read)
        except ApiError:  # FastAPI's own "not JSON" error: the same 400 as read_input's
            raise json.JSONDecodeError("Malformed JSON in request body", "", 0) from None


def _too_large() -> NoReturn:
    raise PayloadTooLarge("Request body too large", error="Payload too large")


def _malformed_json() -> ApiError:
    return ApiError("Malformed JSON in request body", error="Invalid JSON", status_code=400)


def parse_json(body: bytes) -> Any:
    """JSON as orjson reads it (no NaN/Infinity, no number beyond a double, at most 1024 levels deep), except that a
    lone surrogate escape is kept for validation to refuse by name; anything else that does not parse is a 400."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "surrogate" not in str(exc):
            raise _malformed_json() from None
    # orjson refuses a lone surrogate escape ("\ud800"): read the body again with the standard parser, which keeps
    # it, and with orjson's other rules (no NaN/Infinity, no number beyond a double), so that validation can name the
    # field. Bytes that are not UTF-8 stay malformed JSON.
    try:
        return json.loads(
            body.decode("utf-8"),
            parse_constant=_refuse,
            parse_float=_finite,
            parse_int=_orjson_int,
        )
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _malformed_json() from None


def _refuse(text: str) -> NoReturn:
    raise ValueError(f"{text} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number out of range")
    return value


def _orjson_int(text: str) -> int | float:
    digits = text.lstrip("-")
    if len(digits) <= 20 and int(text) in _INTEGER_RANGE:
        return int(text)
    return _finite(text)


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _urlencoded(body: bytes) -> dict[str, Any]:
    """``a=1&b=%C3%A9``: percent-decoded to bytes first, then UTF-8 (PHP's parse_str: ``&`` separates, ``+`` is a
    space, a repeated name keeps its last value)."""
    data: dict[str, Any] = {}
    for pair in body.split(b"&"):
        if not pair:
            continue
        name, _, value = pair.partition(b"=")
        data[_decode(unquote_to_bytes(name.replace(b"+", b" ")))] = _decode(unquote_to_bytes(value.replace(b"+", b" ")))
    return data


def _malformed_form() -> ApiError:
    return ApiError("Invalid multipart data.", error="Invalid multipart data.", status_code=400)


def _multipart(body: bytes, content_type: str) -> dict[str, Any]:
    """The text fields of a ``multipart/form-data`` body (file parts are read past and dropped, as before: no route
    that reads its input here takes a file). A body that is cut off or not multipart is a 400."""
    if not body.strip():
        return {}
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise _malformed_form()
    reader = _FieldReader()
    parser = MultipartParser(boundary, reader.callbacks())
    try:
        parser.write(body)
        parser.finalize()
    except (FormParserError, _NoName):
        raise _malformed_form() from None
    if parser.state != MultipartState.END:  # no closing boundary: the body was cut off
        raise _malformed_form()
    return reader.fields


class _NoName(Exception):
    """A part without a ``name`` in its Content-Disposition."""


class _FieldReader:
    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""
        self._name = ""
        self._is_file = False
        self._data = bytearray()

    def callbacks(self) -> Any:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value_data,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._disposition = b""
        self._data = bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name = bytearray()
        self._header_value = bytearray()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = options.get(b"name")
        if name is None:
            raise _NoName
        self._name = _decode(name)
        self._is_file = b"filename" in options

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._is_file:
            self._data += data[start:end]

    def _part_end(self) -> None:
        if not self._is_file:
            self.fields[self._name] = _decode(bytes(self._data))
