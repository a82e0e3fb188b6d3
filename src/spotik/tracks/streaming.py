"""Serve audio files from disk with HTTP range and caching semantics.

Public API:

* :func:`audio_file_response` builds the response for a GET/HEAD of one file.
* :func:`resolve_inside` maps a client-supplied relative path to a regular file
  strictly inside a root directory, or ``None``.

What Starlette 1.10's ``FileResponse`` already does, and is reused as is:
chunked streaming (64 KiB reads, never the whole file), ``Accept-Ranges``,
``Content-Length``, HEAD without a body, and the 206 response for one range
(``Content-Range``, exact ``Content-Length``, seek + bounded reads).

What is added here, and why:

* **Range parsing and the decision 200/206/416.** ``FileResponse`` answers 400
  to a malformed ``Range`` (we must ignore it: 200), serves multi-range
  requests as ``multipart/byteranges`` (we must answer 200 with the full body),
  uses ``int()`` (which accepts ``+5``, ``1_0``, non-ASCII digits, and fails on
  values longer than 4300 digits), answers 400 to ``start > end`` (Spotik
  answers 416) and sends an empty text 416 (we need a JSON body). So the
  decision is taken here and ``FileResponse`` is handed a request whose
  ``Range`` header is either removed (full body) or rewritten to the
  canonical, already validated ``bytes=a-b`` (which it serves exactly). This
  uses only ``FileResponse``'s public behaviour, none of its private methods.
* **``If-Range``** is evaluated here as well (strong comparison for
  entity tags, exact match for dates), so ``FileResponse`` never sees it.
* **Conditional GET** (``If-None-Match`` with weak comparison, ``*`` and lists;
  ``If-Modified-Since`` only when there is no ``If-None-Match``) -> 304.
  ``FileResponse`` has none; ``StaticFiles`` has one but it is tied to a
  ``StaticFiles`` instance and its 304 drops ``Last-Modified``.
* **ETag** from inode, size and ``st_mtime_ns`` (``FileResponse`` hashes
  mtime+size with MD5 and ignores the inode, so a file replaced by another of
  the same size within the same mtime tick would keep its ETag).
* **Content-Disposition**: ``FileResponse`` emits only ``filename*`` for any
  name that needs quoting (so no ASCII fallback, and ``/`` left unescaped);
  here an ASCII ``filename="..."`` fallback is always present and
  ``filename*=UTF-8''...`` (RFC 5987 ``attr-char`` only) is added when the name
  is not plain printable ASCII. Quotes, backslashes and control characters
  (CR/LF) never reach the header.
* **Cache-Control** (caller-overridable).

Note (RFC 9110 §14.1.1 would call ``bytes=5-2`` invalid and ignorable): as
docs/api.md#audio-streaming specifies, a range with ``start > end`` is
answered with 416.
"""

from __future__ import annotations

import os
import re
import stat
import time
import unicodedata
from datetime import UTC
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path, PurePosixPath
from typing import Final
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.types import Receive, Scope, Send

__all__ = ["audio_file_response", "resolve_inside"]

DEFAULT_CACHE_CONTROL: Final = "public, max-age=3600"

# One range-spec (RFC 9110 §14.1.1): int-range "a-" / "a-b", or suffix-range "-n".
_RANGE_SPEC: Final = re.compile(r"(?P<first>[0-9]+)-(?P<last>[0-9]*)|-(?P<suffix>[0-9]+)")
# Entity tags inside If-None-Match / If-Range (RFC 9110 §8.8.3).
_ENTITY_TAG: Final = re.compile(r'(?:W/)?"[\x21\x23-\x7e\x80-\xff]*"')
# Digits beyond this are bigger than any file; avoids int()'s 4300-digit limit.
_MAX_DIGITS: Final = 18
# RFC 5987 attr-char minus ALPHA / DIGIT and the characters quote() always keeps.
_ATTR_CHAR_EXTRA: Final = "!#$&+^`|"


class _Unsatisfiable(Exception):
    """The single requested range cannot be served (-> 416)."""


def _to_int(digits: str) -> int:
    return int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Return the inclusive ``(start, end)`` to serve, or ``None`` to ignore the header.

    Raises ``_Unsatisfiable`` for a well-formed single range that cannot be served.
    """
    unit, sep, range_set = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    specs = [spec.strip() for spec in range_set.split(",")]
    specs = [spec for spec in specs if spec]
    if len(specs) != 1:  # none, or multi-range: ignored, full body
        return None
    match = _RANGE_SPEC.fullmatch(specs[0])
    if match is None:
        return None
    if match["suffix"] is not None:
        length = _to_int(match["suffix"])
        if length == 0 or size == 0:
            raise _Unsatisfiable
        return max(size - length, 0), size - 1
    start = _to_int(match["first"])
    end = _to_int(match["last"]) if match["last"] else size - 1
    if start >= size or start > end:
        raise _Unsatisfiable
    return start, min(end, size - 1)


def _entity_tags(header: str) -> list[str]:
    return _ENTITY_TAG.findall(header)


def _parse_http_date(value: str) -> int | None:
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:  # "-0000": HTTP dates are always UTC
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())


def _not_modified(request: Request, etag: str, mtime: int) -> bool:
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        if if_none_match.strip() == "*":
            return True
        opaque = etag.removeprefix("W/")
        return any(tag.removeprefix("W/") == opaque for tag in _entity_tags(if_none_match))
    if_modified_since = request.headers.get("if-modified-since")
    if if_modified_since is not None:
        since = _parse_http_date(if_modified_since)
        return since is not None and mtime <= since
    return False


def _if_range_matches(value: str, etag: str, st_mtime: float) -> bool:
    value = value.strip()
    if value.startswith(('"', "W/")):
        # Strong comparison: a weak validator never matches.
        return not value.startswith("W/") and value == etag
    # A date only validates if it equals Last-Modified and that is a strong
    # validator, i.e. at least one second in the past (RFC 9110 §8.8.2.2, §13.1.5).
    return _parse_http_date(value) == int(st_mtime) and time.time() - st_mtime >= 1


def _content_disposition(name: str) -> str:
    fallback = "".join(
        char if " " <= char <= "~" and char not in '"\\' else "_"
        for char in unicodedata.normalize("NFKD", name)
        if not unicodedata.combining(char)
    )
    fallback = fallback or "download"
    header = f'inline; filename="{fallback}"'
    if name and fallback != name:
        header += "; filename*=UTF-8''" + quote(name, safe=_ATTR_CHAR_EXTRA, encoding="utf-8")
    return header


class _PreparedFileResponse(FileResponse):
    """``FileResponse`` whose range decision has already been made.

    The request's ``Range``/``If-Range`` headers are replaced before Starlette
    sees them: removed for a full body, or set to the validated canonical
    ``bytes=start-end`` for a partial one.
    """

    def __init__(
        self,
        path: Path,
        *,
        stat_result: os.stat_result,
        media_type: str,
        headers: dict[str, str],
        byte_range: tuple[int, int] | None,
    ) -> None:
        super().__init__(path, headers=headers, media_type=media_type, stat_result=stat_result)
        self.byte_range = byte_range

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = [(k, v) for k, v in scope["headers"] if k.lower() not in (b"range", b"if-range")]
            if self.byte_range is not None:
                start, end = self.byte_range
                raw.append((b"range", f"bytes={start}-{end}".encode("ascii")))
            scope = {**scope, "headers": raw}
        await super().__call__(scope, receive, send)


def audio_file_response(
    request: Request,
    path: Path,
    *,
    media_type: str,
    download_name: str,
    cache_control: str = DEFAULT_CACHE_CONTROL,
) -> Response:
    """Build the response to a GET/HEAD of the audio file at ``path``.

    ``path`` must be a regular file (use :func:`resolve_inside` on client
    input first); ``FileNotFoundError``/``ValueError`` otherwise. The file is
    stat'ed once here and streamed later in chunks by Starlette.
    """
    stat_result = os.stat(path)
    if not stat.S_ISREG(stat_result.st_mode):
        raise ValueError(f"not a regular file: {path}")
    size = stat_result.st_size
    mtime = int(stat_result.st_mtime)
    etag = f'"{stat_result.st_ino:x}-{size:x}-{stat_result.st_mtime_ns:x}"'
    validators = {
        "etag": etag,
        "last-modified": formatdate(stat_result.st_mtime, usegmt=True),
        "cache-control": cache_control,
    }

    is_get_or_head = request.method in ("GET", "HEAD")
    if is_get_or_head and _not_modified(request, etag, mtime):
        return Response(status_code=304, headers=validators)

    byte_range: tuple[int, int] | None = None
    range_header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if (
        is_get_or_head
        and range_header is not None
        and (if_range is None or _if_range_matches(if_range, etag, stat_result.st_mtime))
    ):
        try:
            byte_range = _parse_range(range_header, size)
        except _Unsatisfiable:
            return JSONResponse(
                {"error": "Requested range not satisfiable"},
                status_code=416,
                headers={"content-range": f"bytes */{size}", "accept-ranges": "bytes"},
            )

    headers = {
        **validators,
        "accept-ranges": "bytes",
        "content-disposition": _content_disposition(download_name),
    }
    return _PreparedFileResponse(
        path,
        stat_result=stat_result,
        media_type=media_type,
        headers=headers,
        byte_range=byte_range,
    )


def resolve_inside(root: Path, relative: str) -> Path | None:
    """Return the resolved regular file ``root/relative``, or ``None``.

    ``None`` for: empty paths, NUL bytes, backslashes, absolute paths, any
    ``..`` component (also one produced by a router-decoded ``%2F``), missing
    files, non-regular files, the root itself, and anything whose resolved
    location (after following symlinks) is not strictly inside ``root``.
    The check is a snapshot: a path swapped for a symlink between this call
    and the open is not covered.
    """
    if not relative or "\x00" in relative or "\\" in relative:
        return None
    pure = PurePosixPath(relative)
    if pure.is_absolute() or ".." in pure.parts:
        return None
    try:
        base = root.resolve(strict=True)
        candidate = (base / pure).resolve(strict=True)
        mode = candidate.stat().st_mode
    except (OSError, RuntimeError, ValueError):
        return None
    if candidate == base or not candidate.is_relative_to(base) or not stat.S_ISREG(mode):
        return None
    return candidate
