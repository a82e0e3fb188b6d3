"""Hostile input (issue 14): text the database cannot store, hostile bodies, forged tokens, hostile paths and ids.

Every row of every table gets the answer the contract gives (status and envelope; every response is also checked
against /openapi.json by the ``client`` fixture), and afterwards nothing was written (every table's rows and the
storage folder are compared with a snapshot taken before) and the server still answers a normal request. Each test
runs on SQLite and on PostgreSQL: the point of the first table is that both answer the same.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import math
import random
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx2
import jwt
import orjson
import pytest
from sqlalchemy import select

import spotik.db.models  # noqa: F401 - every table registered on the metadata
from spotik.auth.models import User
from spotik.auth.tokens import PRV
from spotik.db.base import Base, utcnow
from spotik.rooms.models import Room
from spotik.settings import Settings
from spotik.state import AppState, SpotikApp
from spotik.tracks.models import Track
from tests.conftest import ALL_TABLES, TEST_JWT_SECRET, make_settings
from tests.fixtures.audio_files import make_wav
from tests.helpers import Account, bearer, register
from tests.integration.test_covers import data_url, png_image
from tests.integration.test_websocket_support import WAIT, closed_with, live_server, running_app
from tests.integration.tracks_helpers import create_room, join_room, stored_files
from tests.openapi_contract import live_async_contract_hooks

UNSTORABLE = "The {} field contains characters that cannot be stored."
MALFORMED_JSON = {"success": False, "message": "Malformed JSON in request body", "error": "Invalid JSON"}
NOT_AN_OBJECT = {"success": False, "message": "The request body must be a JSON object", "error": "Invalid JSON"}
TOO_LARGE = {"success": False, "message": "Request body too large", "error": "Payload too large"}
BAD_FORM = {"success": False, "message": "Invalid multipart data.", "error": "Invalid multipart data."}
TOKEN_INVALID = {"success": False, "message": "Token is invalid", "error": "Invalid token"}
TOKEN_EXPIRED = {"success": False, "message": "Token has expired", "error": "Token expired"}
TOKEN_ABSENT = {"success": False, "message": "Token not provided", "error": "Token absent"}
USER_NOT_FOUND = {"success": False, "message": "User not found", "error": "User not found"}
TEN_MB = 10 * 1024 * 1024
LONG_TRACK_SECONDS = 36_000  # the playback scheduler never ends the scene's track during a test


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """The suite's settings, with ``ana`` a performance operator (for ``POST /api/performance/optimize``)."""
    return make_settings(database_url, tmp_path / "storage", performance_admins=["ana"])


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audio")


# --- the scene every table starts from -------------------------------------------------------------------------


@dataclass
class Scene:
    ana: Account  # administers the room, owns the playlist, uploaded the track, performance operator
    ben: Account  # a member of the room
    room_id: str
    track_id: str
    filename: str
    playlist_id: int
    genre_id: int

    def fill(self, template: str, **hostile: str) -> str:
        """``template`` with every ``{param}`` replaced by the scene's object, or by ``hostile[param]``."""
        values = {
            "room": self.room_id,
            "track": self.track_id,
            "filename": self.filename,
            "playlist": str(self.playlist_id),
            "genre": str(self.genre_id),
            "path": f"room_covers/{self.room_id}.png",
        }
        values.update(hostile)
        return re.sub(r"\{(\w+)(?::path)?\}", lambda m: values[m.group(1)], template)


async def build_scene(http: httpx2.AsyncClient, state: AppState, audio_dir: Path) -> Scene:
    """Two users, a room with a current track that plays for hours (stored as a real file), a playlist holding it,
    a genre."""
    ana, ben = await register(http, "ana"), await register(http, "ben")
    room_id = await create_room(http, ana)
    await join_room(http, room_id, ben)
    filename = f"{uuid.uuid4()}.wav"
    audio = make_wav(audio_dir, 1.0, sample_rate=8000, channels=1).read_bytes()
    tracks_dir = state.settings.audio_root / "tracks"
    tracks_dir.mkdir(parents=True, exist_ok=True)
    (tracks_dir / filename).write_bytes(audio)
    async with state.sessionmaker() as session:
        track = Track(
            room_id=uuid.UUID(room_id),
            uploader_id=uuid.UUID(ana.id),
            filename=filename,
            original_name="tone.wav",
            file_path=f"tracks/{filename}",
            duration_seconds=LONG_TRACK_SECONDS,
            file_size_bytes=len(audio),
            mime_type="audio/wav",
            created_at=utcnow(),
        )
        session.add(track)
        await session.flush()
        room = await session.get(Room, uuid.UUID(room_id))
        assert room is not None
        room.current_track_id, room.is_playing, room.playback_started_at = track.id, True, utcnow()
        await session.commit()
        track_id = str(track.id)
    response = await http.post("/api/playlists", headers=ana.headers, json={"name": "Mix"})
    assert response.status_code == 201, response.text
    playlist_id = response.json()["data"]["id"]
    response = await http.post(f"/api/playlists/{playlist_id}/tracks", headers=ana.headers, json={"track_id": track_id})
    assert response.status_code == 200, response.text
    genre_id = (await http.get("/api/genres")).json()["data"][0]["id"]
    return Scene(ana, ben, room_id, track_id, filename, playlist_id, genre_id)


@pytest.fixture
async def scene(client: httpx2.AsyncClient, state: AppState, audio_dir: Path) -> Scene:
    return await build_scene(client, state, audio_dir)


# --- "nothing written, server still healthy" -------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    rows: dict[str, list[str]]
    files: list[str]


async def snapshot(state: AppState) -> Snapshot:
    """Every row of every table (as text, sorted) and every file under the storage folder."""
    rows: dict[str, list[str]] = {}
    async with state.sessionmaker() as session:
        for name in ALL_TABLES:
            result = await session.execute(select(Base.metadata.tables[name]))
            rows[name] = sorted(repr(tuple(row)) for row in result)
    return Snapshot(rows, stored_files(state.settings.storage_path))


async def assert_unchanged(state: AppState, before: Snapshot, what: object) -> None:
    after = await snapshot(state)
    changed = [name for name in ALL_TABLES if after.rows[name] != before.rows[name]]
    assert not changed, f"{what}: rows written to {changed}"
    assert after.files == before.files, f"{what}: storage changed: {set(after.files) ^ set(before.files)}"


async def assert_healthy(http: httpx2.AsyncClient, account: Account) -> None:
    """The server answers a public and an authenticated request (its database sessions are usable)."""
    assert (await http.get("/api/ping")).status_code == 200
    response = await http.get("/api/auth/me", headers=account.headers)
    assert response.status_code == 200, response.text


# ================================================================================================================
# 1. Text that cannot be stored
# ================================================================================================================


def multipart_body(fields: dict[str, bytes], boundary: str = "hostileBoundary9x") -> tuple[bytes, str]:
    """A multipart/form-data body whose values are raw bytes (which need not be UTF-8)."""
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value + b"\r\n"
        for name, value in fields.items()
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def urlencoded_body(fields: dict[str, bytes]) -> bytes:
    """``name=value&…`` with the values as given: already percent-encoded, or raw bytes on purpose."""
    return b"&".join(name.encode() + b"=" + value for name, value in fields.items())


@dataclass(frozen=True)
class Encoding:
    """How a hostile value travels: the body for ``fields`` with ``target``'s value spoiled."""

    id: str
    build: Callable[[dict[str, str], str], tuple[bytes, str]]


def _json_with(spoiled: str) -> Callable[[dict[str, str], str], tuple[bytes, str]]:
    def build(fields: dict[str, str], target: str) -> tuple[bytes, str]:
        values = {**fields, target: fields[target][:1] + spoiled + fields[target][1:]}
        # ensure_ascii: a lone surrogate is written as its \\uXXXX escape, as a hostile client would send it.
        return json.dumps(values, ensure_ascii=True).encode(), "application/json"

    return build


def _form_with(spoiled: bytes) -> Callable[[dict[str, str], str], tuple[bytes, str]]:
    def build(fields: dict[str, str], target: str) -> tuple[bytes, str]:
        values = {name: quote(value).encode() for name, value in fields.items()}
        values[target] = quote(fields[target][:1]).encode() + spoiled + quote(fields[target][1:]).encode()
        return urlencoded_body(values), "application/x-www-form-urlencoded"

    return build


def _multipart_with(spoiled: bytes) -> Callable[[dict[str, str], str], tuple[bytes, str]]:
    def build(fields: dict[str, str], target: str) -> tuple[bytes, str]:
        values = {name: value.encode() for name, value in fields.items()}
        values[target] = values[target][:1] + spoiled + values[target][1:]
        return multipart_body(values)

    return build


ENCODINGS = [
    Encoding("json-nul", _json_with("\x00")),
    Encoding("json-lone-high-surrogate", _json_with("\ud800")),
    Encoding("json-lone-low-surrogate", _json_with("\udfff")),
    Encoding("form-nul", _form_with(b"%00")),
    Encoding("form-invalid-utf8", _form_with(b"%FF")),
    Encoding("form-utf8-encoded-surrogate", _form_with(b"%ED%A0%80")),
    Encoding("form-overlong-utf8", _form_with(b"%C0%AF")),
    Encoding("form-raw-invalid-byte", _form_with(b"\xfe")),
    Encoding("multipart-nul", _multipart_with(b"\x00")),
    Encoding("multipart-invalid-utf8", _multipart_with(b"\xff")),
    Encoding("multipart-truncated-utf8", _multipart_with(b"\xe2\x82")),
    Encoding("multipart-utf8-encoded-surrogate", _multipart_with(b"\xed\xa0\x80")),
]


@dataclass(frozen=True)
class TextInput:
    """A route that stores text: a body that passes (``valid``) and the fields of it that are stored."""

    id: str
    method: str
    path: str
    valid: Callable[[Scene], dict[str, str]]
    fields: tuple[str, ...]
    anonymous: bool = False
    success: int = 200


TEXT_INPUTS = [
    TextInput(
        "register",
        "POST",
        "/api/auth/register",
        lambda s: {
            "username": "zed",
            "email": "zed@example.com",
            "password": "correct horse",
            "password_confirmation": "correct horse",
        },
        ("username", "email", "password"),
        anonymous=True,
        success=201,
    ),
    TextInput(
        "login",
        "POST",
        "/api/auth/login",
        lambda s: {"email": s.ana.email, "password": s.ana.password},
        ("email", "password"),
        anonymous=True,
    ),
    TextInput("create-room", "POST", "/api/rooms", lambda s: {"name": "Fresh room"}, ("name",), success=201),
    TextInput("update-room", "PUT", "/api/rooms/{room}", lambda s: {"name": "Renamed room"}, ("name",)),
    TextInput(
        "create-genre",
        "POST",
        "/api/genres",
        lambda s: {"name": "Fresh genre", "description": "Something new", "color": "#123456"},
        ("name", "description", "color"),
        success=201,
    ),
    TextInput(
        "update-genre",
        "PUT",
        "/api/genres/{genre}",
        lambda s: {"name": "Renamed genre", "description": "Changed", "color": "#654321"},
        ("name", "description", "color"),
    ),
    TextInput(
        "create-playlist",
        "POST",
        "/api/playlists",
        lambda s: {"name": "Fresh list", "description": "Something new", "is_public": "1"},
        ("name", "description", "is_public"),
        success=201,
    ),
    TextInput(
        "update-playlist",
        "PUT",
        "/api/playlists/{playlist}",
        lambda s: {"name": "Renamed list", "description": "Changed", "is_public": "0"},
        ("name", "description", "is_public"),
    ),
    TextInput(
        "add-playlist-track",
        "POST",
        "/api/playlists/{playlist}/tracks",
        lambda s: {"track_id": s.track_id, "position": "0"},
        ("track_id", "position"),
    ),
    TextInput("seek", "POST", "/api/rooms/{room}/playback/seek", lambda s: {"position": "12"}, ("position",)),
]


@pytest.mark.parametrize("route", TEXT_INPUTS, ids=[r.id for r in TEXT_INPUTS])
async def test_text_that_cannot_be_stored_is_a_422_naming_the_field(
    client: httpx2.AsyncClient, state: AppState, scene: Scene, route: TextInput
) -> None:
    """NUL, lone surrogates and bytes that are not UTF-8, in JSON, urlencoded and multipart bodies: the same 422
    on both databases, the field named with one message, nothing written."""
    if route.id == "add-playlist-track":  # the scene's playlist already holds the track: a fresh one for the control
        response = await client.post("/api/playlists", headers=scene.ana.headers, json={"name": "Empty"})
        scene.playlist_id = response.json()["data"]["id"]
    path = scene.fill(route.path)
    headers = {} if route.anonymous else scene.ana.headers
    valid = route.valid(scene)
    before = await snapshot(state)
    failures: list[str] = []
    for target in route.fields:
        for encoding in ENCODINGS:
            content, content_type = encoding.build(valid, target)
            response = await client.request(
                route.method, path, content=content, headers={**headers, "Content-Type": content_type}
            )
            expected = {
                "success": False,
                "message": "Validation failed",
                "errors": {target: [UNSTORABLE.format(target.replace("_", " "))]},
            }
            if response.status_code != 422 or response.json() != expected:
                failures.append(f"{target} / {encoding.id}: {response.status_code} {response.text[:200]}")
    assert not failures, "\n".join(failures)
    await assert_unchanged(state, before, route.id)
    await assert_healthy(client, scene.ana)
    # The control: the same body unspoiled, in each encoding, is accepted (so each 422 above was the spoiled
    # character's doing, and the form readers decode what they should). After the first, a route that refuses
    # duplicates may answer that the value is taken, and nothing else.
    for index, build in enumerate((_json_with(""), _form_with(b""), _multipart_with(b""))):
        content, content_type = build(valid, route.fields[0])
        response = await client.request(
            route.method, path, content=content, headers={**headers, "Content-Type": content_type}
        )
        if index and response.status_code == 422:
            messages = [m for ms in response.json()["errors"].values() for m in ms]
            assert all(m.endswith("has already been taken.") for m in messages), response.text
        elif index and response.status_code == 409:
            assert route.id == "add-playlist-track", response.text
        else:
            assert response.status_code == route.success, response.text


async def test_cover_data_that_cannot_be_stored_is_refused(
    client: httpx2.AsyncClient, state: AppState, scene: Scene
) -> None:
    """The cover's data URL is decoded, never stored as text: a NUL, a lone surrogate or a byte that is not UTF-8
    in it is its own 422 (envelope B) naming ``cover_data``, nothing stored."""
    before = await snapshot(state)
    for encoding in ENCODINGS:
        content, content_type = encoding.build({"cover_data": "data:image/png;base64,iVBORw0KGgo="}, "cover_data")
        response = await client.post(
            f"/api/rooms/{scene.room_id}/cover",
            content=content,
            headers={**scene.ana.headers, "Content-Type": content_type},
        )
        assert response.status_code == 422, (encoding.id, response.text)
        body = response.json()
        assert body["error"] == "Invalid cover_data format" and list(body["errors"]) == ["cover_data"], encoding.id
    await assert_unchanged(state, before, "cover_data")
    await assert_healthy(client, scene.ana)


async def test_query_strings_that_cannot_be_stored(client: httpx2.AsyncClient, state: AppState, scene: Scene) -> None:
    """Query strings are percent-decoded as UTF-8 with replacement (no lone surrogate can arrive). A NUL in a search
    is dropped, as the search always did (nothing is stored); in ``limit`` it is the validation layer's 422; a
    number too long for int() is not an integer. Both databases answer alike."""
    before = await snapshot(state)
    for raw in ("%00", "to%00ne", "%FF", "%ED%A0%80", "%C0%AF", "\ufffd"):
        response = await client.get(f"/api/tracks?search={raw}", headers=scene.ana.headers)
        assert response.status_code == 200, (raw, response.text)
    response = await client.get("/api/tracks?search=to%00ne", headers=scene.ana.headers)
    assert [t["id"] for t in response.json()["tracks"]] == [scene.track_id]  # the NUL is dropped, not matched
    not_an_integer = "The limit field must be an integer."
    for raw, message in [
        ("%00", UNSTORABLE.format("limit")),
        ("1%00", UNSTORABLE.format("limit")),
        ("%FF", not_an_integer),
        ("9" * 5000, not_an_integer),
        ("1" + "0" * 4300, not_an_integer),
    ]:
        response = await client.get(f"/api/genres/popular?limit={raw}")
        assert response.status_code == 422, (raw, response.text)
        assert response.json() == {"success": False, "message": "Validation failed", "errors": {"limit": [message]}}
    await assert_unchanged(state, before, "query strings")
    await assert_healthy(client, scene.ana)


# ================================================================================================================
# 2. Hostile bodies
# ================================================================================================================


@dataclass(frozen=True)
class Sent:
    """A body as sent: bytes (with their Content-Length), or ``streamed`` bytes sent in chunks without one."""

    content: bytes
    content_type: str | None = "application/json"
    streamed: bool = False


@dataclass(frozen=True)
class BodyRow:
    id: str
    sent: Sent
    status: int
    body: dict[str, Any] | None = None  # the exact JSON answer, when the row knows it
    writes: bool = False  # the row is accepted: it changes what it should, checked by ``check``
    check: Callable[[dict[str, Any]], bool] | None = None


def _nested(depth: int, opening: bytes, closing: bytes, inner: bytes = b"1") -> bytes:
    return opening * depth + inner + closing * depth


def _ten_mb_json() -> bytes:
    return b'{"name": "' + b"x" * TEN_MB + b'"}'


def _ten_mb_form() -> bytes:
    return b"name=" + b"x" * TEN_MB


def _ten_mb_multipart() -> tuple[bytes, str]:
    return multipart_body({"name": b"x" * TEN_MB})


INVALID_A_422 = {"success": False, "message": "Validation failed"}


def generic_rows(typed: bool) -> list[BodyRow]:
    """Rows whose answer does not depend on the route: the body never reaches validation. ``typed``: the route's
    body is parsed by FastAPI (the performance actions), whose answer to a body that is not an object is its 422."""
    big_multipart, multipart_type = _ten_mb_multipart()
    not_object = 422 if typed else 400
    not_object_body = None if typed else NOT_AN_OBJECT
    return [
        BodyRow("malformed", Sent(b'{"name": '), 400, MALFORMED_JSON),
        BodyRow("trailing-garbage", Sent(b'{"name": "x"} {"name": "y"}'), 400, MALFORMED_JSON),
        BodyRow("invalid-utf8", Sent(b'{"name": "\xff"}'), 400, MALFORMED_JSON),
        BodyRow("not-an-object", Sent(b'["name"]'), not_object, not_object_body),
        BodyRow("a-bare-string", Sent(b'"name"'), not_object, not_object_body),
        BodyRow("arrays-10000-deep", Sent(b'{"name": ' + _nested(10_000, b"[", b"]") + b"}"), 400, MALFORMED_JSON),
        BodyRow("objects-10000-deep", Sent(_nested(10_000, b'{"a": ', b"}")), 400, MALFORMED_JSON),
        BodyRow("NaN", Sent(b'{"name": NaN, "position": NaN, "type": NaN}'), 400, MALFORMED_JSON),
        BodyRow("Infinity", Sent(b'{"name": Infinity, "position": Infinity}'), 400, MALFORMED_JSON),
        BodyRow("minus-Infinity", Sent(b'{"position": -Infinity}'), 400, MALFORMED_JSON),
        BodyRow("integer-10**400", Sent(b'{"name": 1' + b"0" * 400 + b', "position": 1}'), 400, MALFORMED_JSON),
        BodyRow("float-1e400", Sent(b'{"position": 1e400}'), 400, MALFORMED_JSON),
        BodyRow("10MB-declared", Sent(_ten_mb_json()), 413, TOO_LARGE),
        BodyRow("10MB-streamed", Sent(_ten_mb_json(), streamed=True), 413, TOO_LARGE),
        BodyRow("10MB-form-streamed", Sent(_ten_mb_form(), "application/x-www-form-urlencoded", True), 413, TOO_LARGE),
        BodyRow("10MB-multipart-streamed", Sent(big_multipart, multipart_type, True), 413, TOO_LARGE),
        BodyRow(
            "xml", Sent(b"<name>x</name>", "application/xml"), 422 if typed else 400, None if typed else MALFORMED_JSON
        ),
        BodyRow(
            "multipart-without-boundary",
            Sent(b'{"name": "x"}', "multipart/form-data"),
            422 if typed else 400,
            None if typed else BAD_FORM,
        ),
        BodyRow(
            "multipart-cut-off",
            Sent(multipart_body({"name": b"x"})[0][:-20], multipart_type),
            422 if typed else 400,
            None if typed else BAD_FORM,
        ),
    ]


@dataclass(frozen=True)
class BodyRoute:
    id: str
    method: str
    path: str
    anonymous: bool = False
    typed: bool = False
    rows: Callable[[Scene], list[BodyRow]] = lambda _scene: []


def _json(value: Any) -> Sent:
    return Sent(orjson.dumps(value) if not isinstance(value, bytes) else value)


def _field_error(name: str, message: str) -> dict[str, Any]:
    return {**INVALID_A_422, "errors": {name: [message]}}


def _data(key: str, value: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda body: bool(body["data"].get(key) == value)


BODY_ROUTES = [
    BodyRoute(
        "register",
        "POST",
        "/api/auth/register",
        anonymous=True,
        rows=lambda s: [
            BodyRow(
                "number-for-a-string",
                _json(
                    {
                        "username": 12345,
                        "email": "n@example.com",
                        "password": "12345678",
                        "password_confirmation": "12345678",
                    }
                ),
                422,
                _field_error("username", "The username field must be a string."),
            ),
            BodyRow(
                "integer-beyond-u64-for-a-string",
                _json(
                    b'{"username": 1'
                    + b"0" * 30
                    + b', "email": "n@example.com", "password": "12345678", "password_confirmation": "12345678"}'
                ),
                422,
                _field_error("username", "The username field must be a string."),
            ),
            BodyRow(
                "duplicate-keys-last-wins",
                _json(
                    b'{"username": "first", "username": "second", "email": "d@example.com", '
                    b'"password": "12345678", "password_confirmation": "12345678"}'
                ),
                201,
                writes=True,
                check=lambda body: body["data"]["user"]["username"] == "second",
            ),
            BodyRow(
                "json-labelled-text-plain",
                Sent(
                    orjson.dumps(
                        {
                            "username": "plain",
                            "email": "p@example.com",
                            "password": "12345678",
                            "password_confirmation": "12345678",
                        }
                    ),
                    "text/plain",
                ),
                201,
                writes=True,
                check=lambda body: body["data"]["user"]["username"] == "plain",
            ),
        ],
    ),
    BodyRoute(
        "login",
        "POST",
        "/api/auth/login",
        anonymous=True,
        rows=lambda s: [
            BodyRow(
                "number-for-a-string",
                _json({"email": s.ana.email, "password": 12345678}),
                422,
                _field_error("password", "The password field must be a string."),
            ),
            BodyRow(
                "duplicate-keys-last-wins",
                _json(
                    b'{"email": "%s", "password": "wrong", "password": "%s"}'
                    % (s.ana.email.encode(), s.ana.password.encode())
                ),
                200,
                check=lambda body: body["data"]["user"]["username"] == "ana",
            ),
            BodyRow(
                "json-labelled-form",
                Sent(
                    orjson.dumps({"email": s.ana.email, "password": s.ana.password}),
                    "application/x-www-form-urlencoded",
                ),
                422,
                {
                    **INVALID_A_422,
                    "errors": {
                        "email": ["The email field is required."],
                        "password": ["The password field is required."],
                    },
                },
            ),
        ],
    ),
    BodyRoute(
        "create-room",
        "POST",
        "/api/rooms",
        rows=lambda s: [
            BodyRow(
                "number-for-a-string",
                _json({"name": 123}),
                422,
                _field_error("name", "The name field must be a string."),
            ),
            BodyRow(
                "float-for-a-string",
                _json({"name": 1.5}),
                422,
                _field_error("name", "The name field must be a string."),
            ),
            BodyRow(
                "object-for-a-string",
                _json({"name": {"$ne": ""}}),
                422,
                _field_error("name", "The name field must be a string."),
            ),
            BodyRow(
                "duplicate-keys-last-wins",
                _json(b'{"name": "first", "name": "second"}'),
                201,
                writes=True,
                check=_data("name", "second"),
            ),
            BodyRow(
                "json-labelled-text-plain",
                Sent(b'{"name": "plain"}', "text/plain"),
                201,
                writes=True,
                check=_data("name", "plain"),
            ),
            BodyRow(
                "no-content-type", Sent(b'{"name": "untyped"}', None), 201, writes=True, check=_data("name", "untyped")
            ),
        ],
    ),
    BodyRoute(
        "update-room",
        "PUT",
        "/api/rooms/{room}",
        rows=lambda s: [
            BodyRow(
                "number-for-a-string",
                _json({"name": 123}),
                422,
                _field_error("name", "The name field must be a string."),
            ),
            BodyRow(
                "array-for-a-string",
                _json({"name": ["a"]}),
                422,
                _field_error("name", "The name field must be a string."),
            ),
            BodyRow(
                "duplicate-keys-last-wins",
                _json(b'{"name": "first", "name": "second"}'),
                200,
                writes=True,
                check=_data("name", "second"),
            ),
        ],
    ),
    BodyRoute(
        "seek",
        "POST",
        "/api/rooms/{room}/playback/seek",
        rows=lambda s: [
            BodyRow(
                "number-as-a-string",
                _json({"position": "12"}),
                200,
                writes=True,
                check=lambda b: round(b["data"]["position"]) == 12,
            ),
            BodyRow(
                "not-a-number",
                _json({"position": "12abc"}),
                422,
                _field_error("position", "The position field must be a number."),
            ),
            BodyRow(
                "NaN-as-a-string",
                _json({"position": "NaN"}),
                422,
                _field_error("position", "The position field must be a number."),
            ),
            BodyRow(
                "boolean",
                _json({"position": True}),
                422,
                _field_error("position", "The position field must be a number."),
            ),
            BodyRow(
                "integer-beyond-bigint",
                _json({"position": 2**63}),
                400,
                {"success": False, "message": "Position exceeds track duration", "error": "Invalid position"},
            ),
            BodyRow(
                "integer-beyond-u64",
                _json(b'{"position": 1' + b"0" * 30 + b"}"),
                400,
                {"success": False, "message": "Position exceeds track duration", "error": "Invalid position"},
            ),
            BodyRow(
                "1e400-as-a-string",
                _json({"position": "1e400"}),
                400,
                {"success": False, "message": "Position exceeds track duration", "error": "Invalid position"},
            ),
            BodyRow(
                "5000-digits-as-a-string",
                _json({"position": "9" * 5000}),
                400,
                {"success": False, "message": "Position exceeds track duration", "error": "Invalid position"},
            ),
            BodyRow(
                "duplicate-keys-last-wins",
                _json(b'{"position": 5, "position": 7}'),
                200,
                writes=True,
                check=lambda b: round(b["data"]["position"]) == 7,
            ),
        ],
    ),
    BodyRoute(
        "create-playlist",
        "POST",
        "/api/playlists",
        rows=lambda s: [
            BodyRow(
                "boolean-as-a-string",
                _json({"name": "Strings", "is_public": "true"}),
                201,
                writes=True,
                check=_data("is_public", True),
            ),
            BodyRow(
                "integer-for-a-boolean",
                _json(b'{"name": "Huge", "is_public": %d}' % 2**70),
                422,
                _field_error("is_public", "The is public field must be true or false."),
            ),
            BodyRow(
                "number-for-a-string", _json({"name": 7}), 422, _field_error("name", "The name field must be a string.")
            ),
            BodyRow(
                "duplicate-keys-last-wins",
                _json(b'{"name": "first", "name": "second"}'),
                201,
                writes=True,
                check=_data("name", "second"),
            ),
        ],
    ),
    BodyRoute(
        "add-playlist-track",
        "POST",
        "/api/playlists/{playlist}/tracks",
        rows=lambda s: [
            BodyRow(
                "integer-for-a-uuid",
                _json(b'{"track_id": %d}' % 2**70),
                422,
                _field_error("track_id", "The track id field must be a valid UUID."),
            ),
            BodyRow(
                # valid, clamped to the end: the scene's track is already there, hence the duplicate's 409
                "position-beyond-bigint",
                _json({"track_id": s.track_id, "position": 2**63}),
                409,
                {"success": False, "message": "Track is already in playlist", "error": "Duplicate track"},
            ),
            BodyRow(
                "position-5000-digits",
                _json({"track_id": s.track_id, "position": "9" * 5000}),
                422,
                _field_error("position", "The position field must be an integer."),
            ),
            BodyRow(
                "position-unicode-digits",
                _json({"track_id": s.track_id, "position": "\u0661"}),
                422,
                _field_error("position", "The position field must be an integer."),
            ),
        ],
    ),
    BodyRoute(
        "performance-optimize",
        "POST",
        "/api/performance/optimize",
        typed=True,
        rows=lambda s: [
            BodyRow("number-for-a-string", _json({"type": 123}), 422),
            BodyRow("integer-beyond-u64", _json(b'{"type": 1' + b"0" * 30 + b"}"), 422),
            BodyRow(
                "duplicate-keys-last-wins",
                _json(b'{"type": "all", "type": "memory"}'),
                200,
                check=lambda body: body["optimization_type"] == "memory",
            ),
            BodyRow("json-labelled-text-plain", Sent(b'{"type": "memory"}', "text/plain"), 422),
        ],
    ),
]


async def _chunks(data: bytes, pulled: list[int], size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        pulled[0] += size
        yield data[start : start + size]


@pytest.mark.parametrize("route", BODY_ROUTES, ids=[r.id for r in BODY_ROUTES])
async def test_hostile_bodies_get_the_contract_answer(
    client: httpx2.AsyncClient, state: AppState, scene: Scene, route: BodyRoute
) -> None:
    """Malformed, deep, huge, mislabelled and numerically hostile bodies: each row's status and envelope, nothing
    written (rows marked ``writes`` change what they should), and the server healthy after each."""
    path = scene.fill(route.path)
    headers = {} if route.anonymous else scene.ana.headers
    for row in [*generic_rows(route.typed), *route.rows(scene)]:
        before = await snapshot(state)
        request_headers = {**headers, **({"Content-Type": row.sent.content_type} if row.sent.content_type else {})}
        pulled = [0]
        content: Any = _chunks(row.sent.content, pulled) if row.sent.streamed else row.sent.content
        response = await client.request(route.method, path, content=content, headers=request_headers)
        where = f"{route.id} / {row.id}"
        assert response.status_code == row.status, f"{where}: {response.status_code} {response.text[:300]}"
        body = response.json()
        if row.body is not None:
            assert body == row.body, where
        elif row.status == 422:
            assert body["success"] is False and body["message"] == "Validation failed" and body["errors"], where
        if row.check is not None:
            assert row.check(body), f"{where}: {body}"
        if row.sent.streamed:  # refused while it streamed in: the rest of the 10 MB was never read
            assert pulled[0] <= 2 * 1024 * 1024, f"{where}: {pulled[0]} bytes read before the 413"
        if not row.writes:
            await assert_unchanged(state, before, where)
        await assert_healthy(client, scene.ana)


# ================================================================================================================
# 3. Tokens
# ================================================================================================================

ISSUER = "http://testserver/api/auth/login"
MAX_CLIENT_QUERY = 60_000  # httpx refuses longer URL components
OTHER_SECRET = "another-secret-that-is-long-enough-for-every-hmac-0123456789abcdefgh"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def claims(user_id: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    values: dict[str, Any] = {
        "iss": ISSUER,
        "iat": now,
        "exp": now + 3600,
        "nbf": now,
        "jti": "HostileJti0123456",
        "sub": user_id,
        "prv": PRV,
    }
    values.update(overrides)
    return values


def hs256(payload: dict[str, Any], secret: str = TEST_JWT_SECRET, header: dict[str, Any] | None = None) -> str:
    """A JWT signed HMAC-SHA256 with ``secret``, whatever its header says."""
    signing_input = f"{segment(header or {'typ': 'JWT', 'alg': 'HS256'})}.{segment(payload)}"
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


@dataclass(frozen=True)
class RsaKey:
    n: int
    e: int
    d: int

    @classmethod
    def generate(cls, bits: int = 1024, seed: int = 14) -> RsaKey:
        """A real RSA key pair (textbook generation: the server must refuse what it signs, not break it)."""
        rng = random.Random(seed)

        def probable_prime(size: int) -> int:
            while True:
                candidate = rng.getrandbits(size) | (1 << (size - 1)) | 1
                if all(pow(base, candidate - 1, candidate) == 1 for base in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29)):
                    return candidate

        e = 65537
        while True:
            p, q = probable_prime(bits // 2), probable_prime(bits // 2)
            phi = (p - 1) * (q - 1)
            if p != q and math.gcd(e, phi) == 1:
                return cls(p * q, e, pow(e, -1, phi))

    def sign_rs256(self, payload: dict[str, Any]) -> str:
        """RS256 (RSASSA-PKCS1-v1_5 with SHA-256), checked against the public key before it is returned."""
        signing_input = f"{segment({'typ': 'JWT', 'alg': 'RS256'})}.{segment(payload)}"
        digest_info = (
            bytes.fromhex("3031300d060960864801650304020105000420") + hashlib.sha256(signing_input.encode()).digest()
        )
        size = (self.n.bit_length() + 7) // 8
        encoded = b"\x00\x01" + b"\xff" * (size - len(digest_info) - 3) + b"\x00" + digest_info
        signature = pow(int.from_bytes(encoded, "big"), self.d, self.n)
        assert pow(signature, self.e, self.n) == int.from_bytes(encoded, "big")
        return f"{signing_input}.{b64url(signature.to_bytes(size, 'big'))}"

    def public_pem(self) -> str:
        """The public key as PEM (SubjectPublicKeyInfo), the text an HS/RS confusion attack signs HS256 with."""

        def der(tag: int, content: bytes) -> bytes:
            length = len(content)
            if length < 0x80:
                return bytes([tag, length]) + content
            octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
            return bytes([tag, 0x80 | len(octets)]) + octets + content

        def integer(value: int) -> bytes:
            return der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))

        algorithm = der(0x30, der(0x06, bytes.fromhex("2a864886f70d010101")) + b"\x05\x00")
        key = der(0x30, integer(self.n) + integer(self.e))
        spki = der(0x30, algorithm + der(0x03, b"\x00" + key))
        lines = base64.encodebytes(spki).decode().replace("\n", "")
        body = "\n".join(lines[i : i + 64] for i in range(0, len(lines), 64))
        return f"-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n"


@functools.cache
def rsa_key() -> RsaKey:
    return RsaKey.generate()


@dataclass
class TokenContext:
    ana: Account
    ben: Account
    deleted_user_id: str
    revoked: str
    rsa: RsaKey = field(default_factory=rsa_key)


def _tampered_payload(ctx: TokenContext) -> str:
    """Ben's genuine token with Ana's id put in its payload: the signature no longer matches."""
    header, _payload, signature = ctx.ben.token.split(".")
    return f"{header}.{segment(claims(ctx.ana.id))}.{signature}"


def _tampered_signature(ctx: TokenContext) -> str:
    head, _, signature = ctx.ana.token.rpartition(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return f"{head}.{flipped}"


def _garbage(size: int) -> str:
    third = b64url(random.Random(size).randbytes(size * 3 // 4 // 3))
    return f"{third}.{third}.{third}"


# name → (token maker, expected envelope A body): 401, but 404 for the deleted user's (its own row below).
TOKENS: dict[str, tuple[Callable[[TokenContext], str], dict[str, Any]]] = {
    "empty": (lambda c: "", TOKEN_ABSENT),
    "alg-none": (
        lambda c: f"{segment({'typ': 'JWT', 'alg': 'none'})}.{segment(claims(c.ana.id))}.",
        TOKEN_INVALID,
    ),
    "alg-None-with-a-valid-hs256-signature": (
        lambda c: hs256(claims(c.ana.id), header={"typ": "JWT", "alg": "None"}),
        TOKEN_INVALID,
    ),
    "alg-HS512-with-the-secret": (
        lambda c: jwt.encode(claims(c.ana.id), TEST_JWT_SECRET, algorithm="HS512"),
        TOKEN_INVALID,
    ),
    "rs256-signed-with-an-rsa-key": (lambda c: c.rsa.sign_rs256(claims(c.ana.id)), TOKEN_INVALID),
    "hs256-signed-with-the-public-key-text": (lambda c: hs256(claims(c.ana.id), c.rsa.public_pem()), TOKEN_INVALID),
    "rs256-header-hs256-signature-with-the-secret": (
        lambda c: hs256(claims(c.ana.id), header={"typ": "JWT", "alg": "RS256"}),
        TOKEN_INVALID,
    ),
    "embedded-jwk-and-kid": (
        lambda c: hs256(
            claims(c.ana.id),
            OTHER_SECRET,
            header={
                "typ": "JWT",
                "alg": "HS256",
                "kid": "../../../../dev/null",
                "jwk": {"kty": "oct", "k": b64url(OTHER_SECRET.encode())},
            },
        ),
        TOKEN_INVALID,
    ),
    "tampered-payload": (_tampered_payload, TOKEN_INVALID),
    "tampered-signature": (_tampered_signature, TOKEN_INVALID),
    "wrong-secret": (lambda c: hs256(claims(c.ana.id), OTHER_SECRET), TOKEN_INVALID),
    "expired": (lambda c: hs256(claims(c.ana.id, exp=int(time.time()) - 10)), TOKEN_EXPIRED),
    "not-yet-valid-nbf": (lambda c: hs256(claims(c.ana.id, nbf=int(time.time()) + 600)), TOKEN_INVALID),
    "issued-in-the-future-iat": (lambda c: hs256(claims(c.ana.id, iat=int(time.time()) + 600)), TOKEN_INVALID),
    "revoked-by-logout": (lambda c: c.revoked, TOKEN_INVALID),
    "100KB-garbage": (lambda c: _garbage(100 * 1024), TOKEN_INVALID),
    "100KB-claim-with-a-wrong-signature": (
        lambda c: hs256(claims(c.ana.id, pad="p" * 100 * 1024), OTHER_SECRET),
        TOKEN_INVALID,
    ),
    # Signed with the real secret (a Laravel deployment sharing it could mint them): hostile claims.
    "signed-jti-with-nul": (lambda c: hs256(claims(c.ana.id, jti="abc\x00def")), TOKEN_INVALID),
    "signed-jti-of-300-characters": (lambda c: hs256(claims(c.ana.id, jti="j" * 300)), TOKEN_INVALID),
    "signed-jti-not-a-string": (lambda c: hs256(claims(c.ana.id, jti={"$ne": None})), TOKEN_INVALID),
    "signed-exp-in-year-10**22": (lambda c: hs256(claims(c.ana.id, exp=10**30)), TOKEN_INVALID),
    "signed-exp-Infinity": (lambda c: hs256(claims(c.ana.id, exp=math.inf)), TOKEN_INVALID),
    "signed-sub-not-a-uuid": (lambda c: hs256(claims("1 OR 1=1")), TOKEN_INVALID),
    "signed-sub-of-10000-characters": (lambda c: hs256(claims("a" * 10_000)), TOKEN_INVALID),
    "deleted-user": (lambda c: hs256(claims(c.deleted_user_id)), USER_NOT_FOUND),
}


async def token_context(http: httpx2.AsyncClient, scene: Scene) -> TokenContext:
    """Besides the scene's users: a revoked token of Ana's, and a genuine token of a user since deleted."""
    login = await http.post("/api/auth/login", json={"email": scene.ana.email, "password": scene.ana.password})
    revoked = login.json()["data"]["token"]
    assert (await http.post("/api/auth/logout", headers=bearer(revoked))).status_code == 200
    gone = await register(http, "gone")
    return TokenContext(scene.ana, scene.ben, gone.id, revoked)


async def delete_user(state: AppState, user_id: str) -> None:
    async with state.sessionmaker() as session:
        found = await session.get(User, uuid.UUID(user_id))
        assert found is not None
        await session.delete(found)
        await session.commit()


def authenticated_operations(app: SpotikApp) -> list[tuple[str, str]]:
    """Every (method, path template) the document says needs a token, except refresh and logout (their own test)."""
    operations = []
    for template, item in app.openapi()["paths"].items():
        for method, operation in item.items():
            if "security" in operation and template not in ("/api/auth/refresh", "/api/auth/logout"):
                operations.append((method.upper(), template))
    return sorted(operations)


async def test_forged_and_spent_tokens_are_refused_on_every_authenticated_route(
    client: httpx2.AsyncClient, app: SpotikApp, state: AppState, scene: Scene
) -> None:
    """Each hostile token on every route that needs one (the header, and ``?token=`` where audio elements use it):
    401 (or 404 for a deleted user, as tymon/jwt-auth's middleware answers), envelope A, nothing written."""
    ctx = await token_context(client, scene)
    await delete_user(state, ctx.deleted_user_id)
    operations = authenticated_operations(app)
    assert len(operations) > 30  # the document lists them: a route added later is covered without a new row
    for name, (make, expected) in TOKENS.items():
        token = make(ctx)
        before = await snapshot(state)
        failures = []
        for method, template in operations:
            response = await client.request(method, scene.fill(template), headers=bearer(token))
            body = None if method == "HEAD" else response.json()
            status = 404 if expected is USER_NOT_FOUND else 401
            if response.status_code != status or (body is not None and body != expected):
                failures.append(f"{method} {template}: {response.status_code} {response.text[:120]}")
        for template in ("/api/tracks/{track}/stream", "/api/audio/{filename}", "/api/auth/me"):
            if len(token) > MAX_CLIENT_QUERY:  # httpx refuses such a URL; the live server's test sends one
                continue
            response = await client.get(scene.fill(template), params={"token": token})
            if response.json() != expected:
                failures.append(f"GET {template}?token=: {response.status_code} {response.text[:120]}")
        assert not failures, f"{name}:\n" + "\n".join(failures)
        await assert_unchanged(state, before, name)
        await assert_healthy(client, scene.ana)


async def test_refresh_and_logout_with_hostile_tokens(
    client: httpx2.AsyncClient, state: AppState, scene: Scene
) -> None:
    """Refresh refuses every forged token (an expired genuine one is what it is for); logout always answers 200 but
    revokes nothing for a token it cannot trust, not even the genuine token whose jti a forgery carries."""
    ctx = await token_context(client, scene)
    await delete_user(state, ctx.deleted_user_id)
    genuine_jti = jwt.decode(scene.ana.token, options={"verify_signature": False})["jti"]
    forged_with_anas_jti = {
        "alg-none": f"{segment({'alg': 'none'})}.{segment(claims(scene.ana.id, jti=genuine_jti))}.",
        "wrong-secret": hs256(claims(scene.ana.id, jti=genuine_jti), OTHER_SECRET),
        "rs256": ctx.rsa.sign_rs256(claims(scene.ana.id, jti=genuine_jti)),
    }
    for name, token in forged_with_anas_jti.items():
        before = await snapshot(state)
        response = await client.post("/api/auth/logout", headers=bearer(token))
        assert response.status_code == 200, (name, response.text)
        await assert_unchanged(state, before, f"logout with {name}")
        assert (await client.get("/api/auth/me", headers=scene.ana.headers)).status_code == 200, name
    for name, (make, expected) in TOKENS.items():
        token = make(ctx)
        before = await snapshot(state)
        response = await client.post("/api/auth/refresh", headers=bearer(token))
        if name in ("expired", "deleted-user"):  # genuine tokens: refreshing them is allowed (docs/api.md#lifetime)
            assert response.status_code == 200, (name, response.text)
            continue
        assert response.status_code == 401, (name, response.text)
        assert response.json() == expected, name
        await assert_unchanged(state, before, f"refresh with {name}")
        response = await client.post("/api/auth/logout", headers=bearer(token))
        assert response.status_code == 200, (name, response.text)
        if name != "revoked-by-logout":  # a genuine token: logging it out again only re-dates its revocation
            await assert_unchanged(state, before, f"logout with {name}")
    await assert_healthy(client, scene.ana)


async def test_hostile_tokens_at_the_websocket_handshake(settings: Settings, audio_dir: Path) -> None:
    """The same tokens at the ``/ws`` handshake, from each place a token is read: one ``authentication_failed``
    error, then close 4401 (docs/api.md#close-codes), also for a deleted user; nothing written, nobody connected."""
    async with running_app(settings) as env:
        scene = await build_scene(env.client, env.state, audio_dir)
        ctx = await token_context(env.client, scene)
        await delete_user(env.state, ctx.deleted_user_id)
        before = await snapshot(env.state)
        for name, (make, expected) in TOKENS.items():
            token = make(ctx)
            ways: dict[str, dict[str, Any]] = {
                "query": {},
                # (an empty token makes "Bearer " a header value the client's HTTP layer refuses to send)
                "header": {"headers": {"Authorization": f"Bearer {token}" if token else "Bearer"}},
                "subprotocol": {"subprotocols": [f"token.{token}"]},
            }
            for way, options in ways.items():
                if way == "query" and len(token) > MAX_CLIENT_QUERY:
                    continue
                async with env.ws(token if way == "query" else None, **options) as ws:
                    code, _reason, seen = await closed_with(ws)
                assert code == 4401, (name, way, code)
                assert [m["type"] for m in seen] == ["error"], (name, way)
                assert seen[0]["data"]["error_code"] == "authentication_failed", (name, way)
                assert seen[0]["data"]["message"] == expected["message"], (name, way)
        assert len(env.realtime.registry) == 0
        await assert_unchanged(env.state, before, "websocket handshakes")
        async with env.ws(scene.ana.token) as ws:  # still healthy: a genuine token connects
            assert (orjson.loads(await ws.receive_text(timeout=WAIT)))["type"] == "connection_established"


async def raw_request(port: int, request: bytes, *, until_close: bool = True) -> tuple[int, bytes]:
    """Send ``request`` as it is (no client normalises it) and return the status and everything the server sent,
    read until it closes the connection (or, with ``until_close=False``, until the end of the response head)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), WAIT)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(WAIT):
            received = await (reader.read() if until_close else reader.readuntil(b"\r\n\r\n"))
    finally:
        writer.close()
    status_line = received.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 "), received[:200]
    return int(status_line.split()[1]), received


def websocket_handshake(target: bytes, *headers: bytes) -> bytes:
    return (
        b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        + b"".join(header + b"\r\n" for header in headers)
        + b"\r\n"
    )


async def test_a_100kb_token_against_the_real_server(settings: Settings, audio_dir: Path) -> None:
    """What only the real server stack shows: a 100 KB token in a header reaches the app (401); in the request line
    uvicorn refuses it before any app runs (400); at the ``/ws`` handshake websockets refuses the oversized line
    (414 for the request line, 431 for a header) and the server answers at once and closes, instead of leaving the
    client waiting for an answer that never comes."""
    huge = _garbage(100 * 1024).encode()
    async with live_server(settings) as server:
        hooks = live_async_contract_hooks(server.http)
        async with httpx2.AsyncClient(base_url=server.http, timeout=WAIT, event_hooks=hooks) as http:
            scene = await build_scene(http, server.state, audio_dir)
            before = await snapshot(server.state)
            for token in (huge.decode(), hs256(claims(scene.ana.id, pad="p" * 100 * 1024), OTHER_SECRET)):
                response = await http.get("/api/auth/me", headers=bearer(token))
                assert response.status_code == 401 and response.json() == TOKEN_INVALID
            status, _ = await raw_request(
                server.port, b"GET /api/auth/me?token=" + huge + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            )
            assert status == 400
            for request, refused in [
                (websocket_handshake(b"/ws?token=" + huge), 414),
                (websocket_handshake(b"/ws", b"Authorization: Bearer " + huge), 431),
                (websocket_handshake(b"/ws", b"Sec-WebSocket-Protocol: token." + huge), 431),
            ]:
                status, _ = await raw_request(server.port, request)  # answered, and closed, within WAIT
                assert status == refused
            # Under the line limit the handshake goes through to the gateway (which refuses the token: 4401).
            status, _ = await raw_request(
                server.port, websocket_handshake(b"/ws?token=" + huge[:4000]), until_close=False
            )
            assert status == 101
            await assert_unchanged(server.state, before, "100 KB tokens")
            assert len(server.realtime.registry) == 0
            await assert_healthy(http, scene.ana)


# ================================================================================================================
# 4. Paths and ids
# ================================================================================================================

ROOM_404 = {"success": False, "message": "Room not found", "error": "Room not found"}
TRACK_404 = {"error": "Track not found"}
PLAY_TRACK_404 = {"success": False, "message": "Track does not belong to this room", "error": "Invalid track"}
PLAYLIST_404 = {"success": False, "message": "Playlist not found", "error": "Playlist not found"}
PLAYLIST_ENTRY_404 = {"success": False, "message": "Track not found in playlist", "error": "Track not in playlist"}
GENRE_404 = {"success": False, "message": "Genre not found", "error": "Genre not found"}
AUDIO_404 = {"error": "Audio file not found"}
STORAGE_ANSWERS = ({"error": "Invalid path"}, {"error": "File not found"})


def id_answer(template: str, param: str) -> dict[str, Any]:
    """The documented 404 for a wrong ``{param}`` on ``template`` (docs/api.md#conventions: an unknown id, and an id
    of the wrong form, is a 404, never a 422 or a 500). An unknown parameter name raises: a new kind of id needs
    its row here."""
    if param == "track":
        if template.endswith("/play"):
            return PLAY_TRACK_404
        return PLAYLIST_ENTRY_404 if template.startswith("/api/playlists/") else TRACK_404
    return {"room": ROOM_404, "playlist": PLAYLIST_404, "genre": GENRE_404, "filename": AUDIO_404}[param]


# Ids of the wrong form, percent-encoded as sent; "{real}" is the scene's genuine id for that parameter.
HOSTILE_IDS = {
    "word": "abc",
    "unknown-integer": "999999",
    "zero": "0",
    "negative": "-1",
    "beyond-bigint": "9223372036854775808",
    "10000-digits": "9" * 10_000,
    "10000-characters": "a" * 10_000,
    "unknown-uuid": "00000000-0000-4000-8000-000000000000",
    "real-id-and-more": "{real}x",
    "real-id-then-nul": "{real}%00",
    "real-id-then-10000-characters": "{real}" + "b" * 10_000,
    "nul": "%00",
    "space": "%20",
    "float": "1.5",
    "exponent": "1e3",
    "sql": "1%27%20OR%20%271%27%3D%271",
    "non-ascii": "%C3%A9",
    "invalid-utf8": "%FF",
    "utf8-encoded-surrogate": "%ED%A0%80",
    "fullwidth-digit": "%EF%BC%91",
}


async def test_wrong_and_overlong_ids_are_the_documented_404_on_every_route(
    client: httpx2.AsyncClient, app: SpotikApp, state: AppState, scene: Scene
) -> None:
    """Every ``{room}``/``{track}``/``{playlist}``/``{genre}``/``{filename}`` of every route, one parameter at a time
    (the others genuine), with each hostile id: its documented 404 in its envelope, nothing written."""
    genuine = {"room": scene.room_id, "track": scene.track_id, "playlist": str(scene.playlist_id)}
    genuine |= {"genre": str(scene.genre_id), "filename": scene.filename}
    cases = 0
    before = await snapshot(state)
    failures: list[str] = []
    for template, item in app.openapi()["paths"].items():
        for param in re.findall(r"\{(\w+)\}", template):
            if param == "path":  # /api/storage/{path}: the traversal test's
                continue
            expected = id_answer(template, param)
            for name, value in HOSTILE_IDS.items():
                url = scene.fill(template, **{param: value.replace("{real}", genuine[param])})
                for method in item:
                    cases += 1
                    response = await client.request(method.upper(), url, headers=scene.ana.headers)
                    answer = None if method == "head" else response.json()
                    if response.status_code != 404 or answer not in (None, expected):
                        failures.append(f"{method.upper()} {template} {param}={name}: {response.text[:150]}")
    assert not failures, "\n".join(failures)
    assert cases > 500
    await assert_unchanged(state, before, "hostile ids")
    await assert_healthy(client, scene.ana)


def _canaries(storage: Path, audio_root: Path, public_root: Path) -> tuple[bytes, list[Path]]:
    """The same unique bytes beside the storage folder, beside both storage roots, and inside the roots but outside
    the folders the routes serve from."""
    canary = b"CANARY " + uuid.uuid4().hex.encode()
    places = [
        storage.parent / "canary.mp3",
        storage.parent / "canary.png",
        storage / "canary.mp3",
        storage / "canary.png",
        audio_root / "canary.mp3",
        public_root / "canary.png",
    ]
    for place in places:
        place.parent.mkdir(parents=True, exist_ok=True)
        place.write_bytes(canary)
    return canary, places


TRAVERSALS = [
    b"..",
    b"../canary.mp3",
    b"../../canary.mp3",
    b"../../../canary.png",
    b"..%2fcanary.mp3",
    b"..%2F..%2Fcanary.png",
    b"%2e%2e%2fcanary.mp3",
    b"%2e%2e/%2e%2e/canary.png",
    b".%2e/.%2e/canary.png",
    b"%252e%252e%252fcanary.mp3",
    b"..%252f..%252fcanary.png",
    b"..%5ccanary.mp3",
    b"..%5c..%5ccanary.png",
    b"%2fetc%2fpasswd",
    b"/etc/passwd",
    b"%2F%2Fetc%2Fpasswd",
    b"canary.mp3%00.wav",
    b"%00",
    b"..%00/canary.png",
    b"....//canary.mp3",
    b"..;/canary.png",
    b"%c0%ae%c0%ae/canary.png",
    b"%ef%bc%8e%ef%bc%8e/canary.png",
    b"room_covers/../canary.png",
    b"tracks/../../canary.mp3",
]
FILE_ROUTES = [  # (method, what comes before the hostile part, what comes after)
    (b"GET", b"/api/tracks/", b"/stream"),
    (b"HEAD", b"/api/tracks/", b"/stream"),
    (b"GET", b"/api/audio/", b""),
    (b"HEAD", b"/api/audio/", b""),
    (b"GET", b"/api/audio/", b"/metadata"),
    (b"GET", b"/api/storage/", b""),
    (b"GET", b"/api/storage/room_covers/", b""),
    (b"GET", b"/api/storage/track_covers/", b""),
    (b"HEAD", b"/api/storage/room_covers/", b""),
    (b"POST", b"/api/rooms/", b"/cover"),
]


async def test_no_path_serves_a_file_outside_the_storage_roots(
    settings: Settings, audio_dir: Path, tmp_path: Path
) -> None:
    """Against the real server (uvicorn decodes the path itself; requests are sent byte for byte, no client
    normalises them): every route that touches a file, with dot segments, encoded and double-encoded separators,
    absolute paths and NUL, and rows whose stored path leads out; a canary beside and inside the storage roots is
    never served, every answer is a 4xx, nothing is written."""
    async with live_server(settings) as server:
        hooks = live_async_contract_hooks(server.http)
        async with httpx2.AsyncClient(base_url=server.http, timeout=WAIT, event_hooks=hooks) as http:
            scene = await build_scene(http, server.state, audio_dir)
            live = server.state.settings
            cover = await http.post(
                f"/api/rooms/{scene.room_id}/cover",
                headers=scene.ana.headers,
                json={"cover_data": data_url(png_image())},
            )
            assert cover.status_code == 200, cover.text
            canary, places = _canaries(live.storage_path, live.audio_root, live.public_root)
            # Rows (as a tampered or migrated database could hold) and links that lead out of the roots.
            (live.audio_root / "tracks" / "link.mp3").symlink_to(places[0])
            (live.public_root / "room_covers" / "link.png").symlink_to(places[1])
            planted = [
                "../canary.mp3",
                "../../canary.mp3",
                str(places[0]),
                "tracks/../../canary.mp3",
                "tracks/link.mp3",
            ]
            planted_ids = [
                await _plant(server.state, scene, path, f"planted-{i}.mp3") for i, path in enumerate(planted)
            ]
            before = await snapshot(server.state)
            token = b"Authorization: Bearer " + scene.ana.token.encode()
            statuses: dict[int, int] = {}
            for method, prefix, suffix in FILE_ROUTES:
                for hostile in [*TRAVERSALS, b"link.png", str(places[1]).encode().replace(b"/", b"%2F")]:
                    target = prefix + hostile + suffix
                    request = method + b" " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                    request += token + b"\r\nContent-Length: 0\r\n\r\n"
                    status, received = await raw_request(server.port, request)
                    statuses[status] = statuses.get(status, 0) + 1
                    assert status in (403, 404), (target, received[:300])
                    assert canary not in received and b"root:" not in received, target
                    if method != b"HEAD":
                        body = orjson.loads(received.split(b"\r\n\r\n", 1)[1])
                        assert body.get("success") is False or set(body) <= {"error", "message"}, (target, body)
            for track_id, filename in planted_ids:
                for url in (
                    f"/api/tracks/{track_id}/stream",
                    f"/api/audio/{filename}",
                    f"/api/audio/{filename}/metadata",
                ):
                    response = await http.get(url, headers=scene.ana.headers)
                    assert response.status_code == 404 and response.json() == AUDIO_404, url
                    assert canary not in response.content
            await assert_unchanged(server.state, before, "traversal attempts")
            assert {status for status in statuses if status >= 500} == set()
            # The routes do serve what they should: the scene's track and the room's cover (so the 4xx above are
            # the paths' doing).
            stream = await http.get(f"/api/tracks/{scene.track_id}/stream", headers=scene.ana.headers)
            assert stream.status_code == 200 and stream.content.startswith(b"RIFF")
            async with httpx2.AsyncClient(base_url=server.http, timeout=WAIT) as plain:
                # (without the contract hooks: the document's {path} is one segment to a client that reads it)
                served_cover = await plain.get(cover.json()["cover_url"])
            assert served_cover.status_code == 200 and served_cover.content == png_image()
            await assert_healthy(http, scene.ana)


async def _plant(state: AppState, scene: Scene, file_path: str, filename: str) -> tuple[str, str]:
    async with state.sessionmaker() as session:
        track = Track(
            room_id=uuid.UUID(scene.room_id),
            uploader_id=uuid.UUID(scene.ana.id),
            filename=filename,
            original_name=filename,
            file_path=file_path,
            duration_seconds=3,
            file_size_bytes=10,
            mime_type="audio/mpeg",
            created_at=utcnow(),
        )
        session.add(track)
        await session.commit()
        return str(track.id), filename
