"""Response hygiene: what no answer of Spotik may reveal, and the headers every answer must carry.

Shared by the fuzzing run (``tests/fuzzing.py`` checks every response it receives) and by any test that wants the
same guarantees on its own responses or WebSocket ``error`` frames::

    from tests.hygiene import Secrets, assert_clean_response, assert_clean_error_frame

    secrets = Secrets(values=(jwt_secret, password), paths=(str(storage),))
    assert_clean_response(response, secrets, credentials=True)   # an httpx2/requests response
    assert_clean_error_frame(frame, secrets)                       # a decoded WebSocket frame (dict) or its text

What is checked:

* **Leaks** in every text body (JSON, text, HTML, JavaScript, XML; audio and images are not scanned) and in every
  header value: stack traces (``Traceback``, ``File "``), SQL and database drivers (``SELECT ``, ``INSERT ``,
  ``sqlalchemy``, ``asyncpg``, ``psycopg``, ``sqlite3.``), file system paths (``/home``, ``/tmp/``,
  ``site-packages`` and the server's own storage paths), and the secrets the server was started with or a test
  registered (the JWT secret, passwords). JSON bodies are decoded first, so an escaped ``File \\"…\\"`` is found too.
* **Security headers** on every response, errors and 404s included: ``X-Content-Type-Options: nosniff``,
  ``X-Frame-Options``, ``Content-Security-Policy``, ``Referrer-Policy``.
* **No caching of private answers**: a JSON response to a request that carried credentials (``Authorization`` or
  ``?token=``) has ``Cache-Control: no-store``.
* **No cookies**: Spotik authenticates with bearer tokens and never sets ``Set-Cookie``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

# Fragments that reveal the inside of the server. Case-sensitive: ``SELECT `` is SQL, "selected" is English.
TRACE_MARKERS = ("Traceback", 'File "')
SQL_MARKERS = ("SELECT ", "INSERT ", "sqlalchemy", "SQLAlchemy", "asyncpg", "psycopg", "sqlite3.")
PATH_MARKERS = ("/home", "/tmp/", "site-packages")
# name -> required value (None: any non-empty value)
SECURITY_HEADERS: dict[str, str | None] = {
    "x-content-type-options": "nosniff",
    "x-frame-options": None,
    "content-security-policy": None,
    "referrer-policy": None,
}
TEXT_MEDIA_TYPES = ("application/json", "text/", "application/javascript", "application/xml", "application/problem")


@dataclass(frozen=True, slots=True)
class Secrets:
    """What a particular server must never reveal, besides the generic markers: its JWT secret, the passwords a
    test registered (``values``), and the absolute paths of its storage (``paths``)."""

    values: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()


def _markers(secrets: Secrets) -> Iterator[tuple[str, str]]:
    for marker in TRACE_MARKERS:
        yield "stack trace", marker
    for marker in SQL_MARKERS:
        yield "SQL or database driver", marker
    for marker in PATH_MARKERS:
        yield "file system path", marker
    for path in secrets.paths:
        if path:
            yield "storage path", path
    for value in secrets.values:
        if value:
            yield "secret", value


def leaks(text: str, secrets: Secrets = Secrets()) -> list[str]:
    """What ``text`` gives away, one description per marker found (empty: nothing)."""
    found = []
    for kind, marker in _markers(secrets):
        if marker in text:
            shown = marker if kind != "secret" else f"{marker[:3]}…"  # do not print a secret in full
            found.append(f"{kind} ({shown!r})")
    return found


def _strings(value: Any) -> Iterator[str]:
    """Every string in a decoded JSON document, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def body_text(body: bytes, content_type: str) -> str | None:
    """The text of a body worth scanning (JSON decoded to its strings), or None for binary media."""
    media_type = content_type.split(";")[0].strip().lower()
    if body and not media_type:
        media_type = "text/plain"  # an unlabelled body is scanned as text
    if not media_type.startswith(TEXT_MEDIA_TYPES) and not media_type.endswith(("+json", "+xml")):
        return None
    text = body.decode("utf-8", "replace")
    if media_type == "application/json" or media_type.endswith("+json"):
        try:
            document = json.loads(text)
        except ValueError:
            return text  # not JSON after all: scan it as it is
        return "\n".join([text, *_strings(document)])
    return text


def is_json(content_type: str) -> bool:
    media_type = content_type.split(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


def response_problems(
    headers: Iterable[tuple[str, str]],
    body: bytes,
    secrets: Secrets = Secrets(),
    *,
    credentials: bool,
) -> list[str]:
    """Everything wrong with one response (empty: clean). ``headers`` as (name, value) pairs, repeats allowed;
    ``credentials``: whether the request carried a token."""
    pairs = [(name.lower(), value) for name, value in headers]
    names: dict[str, list[str]] = {}
    for name, value in pairs:
        names.setdefault(name, []).append(value)
    problems = []
    for name, value in pairs:
        for leak in leaks(value, secrets):
            problems.append(f"header {name} reveals a {leak}")
    content_type = names.get("content-type", [""])[0]
    text = body_text(body, content_type)
    if text is not None:
        problems.extend(f"body reveals a {leak}" for leak in leaks(text, secrets))
    for name, required in SECURITY_HEADERS.items():
        values = names.get(name)
        if not values or not values[0].strip():
            problems.append(f"missing security header {name}")
        elif required is not None and values[0].strip().lower() != required:
            problems.append(f"{name} is {values[0]!r}, not {required!r}")
    if credentials and is_json(content_type):
        cache_control = ",".join(names.get("cache-control", [])).lower()
        if "no-store" not in cache_control:
            problems.append(f"authenticated JSON without Cache-Control: no-store (got {cache_control or 'none'!r})")
    if "set-cookie" in names:
        problems.append("sets a cookie (Set-Cookie)")
    return problems


def carried_credentials(request_headers: Mapping[str, str], url: str) -> bool:
    """Whether a request sent a token, as Spotik reads them: ``Authorization`` or a ``token`` query parameter."""
    if any(name.lower() == "authorization" for name in request_headers):
        return True
    return "token" in parse_qs(urlsplit(url).query, keep_blank_values=True)


def assert_clean_response(response: Any, secrets: Secrets = Secrets(), *, credentials: bool | None = None) -> None:
    """Fail unless an ``httpx2``/``requests`` response is clean (``credentials`` defaults to what its request
    carried). Reads the body."""
    request = response.request
    if credentials is None:
        credentials = carried_credentials(request.headers, str(request.url))
    headers = response.headers.multi_items() if hasattr(response.headers, "multi_items") else response.headers.items()
    problems = response_problems(headers, response.content, secrets, credentials=credentials)
    assert not problems, f"{request.method} {request.url} answered {response.status_code}: " + "; ".join(problems)


def error_frame_problems(frame: Mapping[str, Any] | str | bytes, secrets: Secrets = Secrets()) -> list[str]:
    """What a WebSocket ``error`` frame (decoded, or its raw text) gives away (empty: nothing)."""
    if isinstance(frame, bytes):
        frame = frame.decode("utf-8", "replace")
    if isinstance(frame, str):
        text = body_text(frame.encode(), "application/json") or frame
    else:
        text = "\n".join([json.dumps(frame, default=str), *_strings(frame)])
    return [f"error frame reveals a {leak}" for leak in leaks(text, secrets)]


def assert_clean_error_frame(frame: Mapping[str, Any] | str | bytes, secrets: Secrets = Secrets()) -> None:
    """Fail if a WebSocket ``error`` frame reveals a stack trace, SQL, a path or a secret."""
    problems = error_frame_problems(frame, secrets)
    assert not problems, f"{frame!r}: " + "; ".join(problems)
