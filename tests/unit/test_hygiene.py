"""The response hygiene checks (tests/hygiene.py) find what they claim to find, and pass a clean response."""

from __future__ import annotations

import json

import pytest

from tests.hygiene import Secrets, error_frame_problems, leaks, response_problems

SECRETS = Secrets(values=("jwt-secret-0123456789abcdef", "correct horse battery"), paths=("/srv/spotik/storage",))
SECURE = [
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "default-src 'none'"),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
]
JSON = ("Content-Type", "application/json")
NO_STORE = ("Cache-Control", "no-store")


def json_body(message: str) -> bytes:
    return json.dumps({"success": False, "message": message}).encode()


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ('Traceback (most recent call last):\n  File "/app/x.py", line 1', "stack trace"),
        ('  File "/srv/app.py", line 3, in handler', "stack trace"),
        ("SELECT rooms.id FROM rooms WHERE rooms.id = $1", "SQL"),
        ("INSERT INTO users (id) VALUES (?)", "SQL"),
        ("(sqlalchemy.exc.IntegrityError) duplicate key", "SQL"),
        ("asyncpg.exceptions.CharacterNotInRepertoireError", "SQL"),
        ("psycopg.errors.UniqueViolation", "SQL"),
        ("sqlite3.IntegrityError: UNIQUE constraint failed", "SQL"),
        ("could not open /home/spotik/storage/audio/x.mp3", "file system path"),
        ("/tmp/pytest-of-root/storage/tracks/a.wav", "file system path"),
        ("/usr/lib/python3.11/site-packages/starlette/routing.py", "file system path"),
        ("stored under /srv/spotik/storage/audio", "storage path"),
        ("the secret is jwt-secret-0123456789abcdef", "secret"),
        ("password: correct horse battery", "secret"),
    ],
)
def test_each_kind_of_leak_is_found(text: str, found: str) -> None:
    descriptions = leaks(text, SECRETS)
    assert any(found in description for description in descriptions), descriptions


@pytest.mark.parametrize(
    "text",
    [
        "The selected genre id is invalid.",  # "selected", not SQL
        "File not found",
        "Insert a coin",  # "Insert " is not "INSERT "
        "Room created successfully",
        "tracks/01a23adb-1c0c-7095-a5e2-c6acbf489042.wav",  # a stored file's relative path is public
    ],
)
def test_ordinary_messages_are_not_leaks(text: str) -> None:
    assert leaks(text, SECRETS) == []


def test_a_secret_is_not_printed_in_full() -> None:
    (description,) = leaks("jwt-secret-0123456789abcdef", SECRETS)
    assert "0123456789" not in description


def test_a_clean_authenticated_json_response_passes() -> None:
    body = json.dumps({"success": True, "message": "Room retrieved successfully", "data": {"id": "x"}}).encode()
    assert response_problems([*SECURE, JSON, NO_STORE], body, SECRETS, credentials=True) == []


def test_an_escaped_trace_in_a_json_string_is_found() -> None:
    body = json_body('Traceback (most recent call last):\n  File "/srv/app.py", line 1')  # quotes escaped as \"
    problems = response_problems([*SECURE, JSON], body, SECRETS, credentials=False)
    assert any('File "' in problem for problem in problems), problems


def test_a_leak_in_a_header_is_found() -> None:
    problems = response_problems([*SECURE, JSON, ("X-Debug", "sqlite3.OperationalError")], b"{}", credentials=False)
    assert problems == ["header x-debug reveals a SQL or database driver ('sqlite3.')"]


def test_binary_bodies_are_not_scanned() -> None:
    audio = b"RIFF....WAVEfmt SELECT Traceback /tmp/"
    assert response_problems([*SECURE, ("Content-Type", "audio/wav")], audio, credentials=False) == []


@pytest.mark.parametrize("missing", [name for name, _ in SECURE])
def test_each_missing_security_header_is_reported(missing: str) -> None:
    headers = [pair for pair in SECURE if pair[0] != missing]
    problems = response_problems([*headers, JSON, NO_STORE], b"{}", credentials=True)
    assert problems == [f"missing security header {missing.lower()}"]


def test_nosniff_must_be_nosniff() -> None:
    headers = [("X-Content-Type-Options", "sniff-away"), *SECURE[1:]]
    assert response_problems([*headers, JSON], b"{}", credentials=False) == [
        "x-content-type-options is 'sniff-away', not 'nosniff'"
    ]


def test_authenticated_json_needs_no_store_but_public_json_and_audio_do_not() -> None:
    assert response_problems([*SECURE, JSON], b"{}", credentials=True) == [
        "authenticated JSON without Cache-Control: no-store (got 'none')"
    ]
    cached = ("Cache-Control", "public, max-age=3600")
    assert response_problems([*SECURE, JSON, cached], b"{}", credentials=True) == [
        "authenticated JSON without Cache-Control: no-store (got 'public, max-age=3600')"
    ]
    assert response_problems([*SECURE, JSON], b"{}", credentials=False) == []
    audio = ("Content-Type", "audio/mpeg")
    assert response_problems([*SECURE, audio, cached], b"ID3", credentials=True) == []


def test_a_cookie_is_reported() -> None:
    problems = response_problems([*SECURE, JSON, ("Set-Cookie", "session=1")], b"{}", credentials=False)
    assert problems == ["sets a cookie (Set-Cookie)"]


def test_websocket_error_frames() -> None:
    clean = {"type": "error", "data": {"code": "not_a_member", "message": "You are not a member of this room"}}
    assert error_frame_problems(clean, SECRETS) == []
    assert error_frame_problems(json.dumps(clean), SECRETS) == []
    leaking = {"type": "error", "data": {"message": "(asyncpg.exceptions.DataError) invalid input"}}
    assert error_frame_problems(leaking, SECRETS) == ["error frame reveals a SQL or database driver ('asyncpg')"]
    escaped = json.dumps({"type": "error", "data": {"message": 'File "/srv/x.py", line 2'}}).encode()
    assert error_frame_problems(escaped, SECRETS) == ["error frame reveals a stack trace ('File \"')"]
