"""Fuzzing from the OpenAPI document against the real server process, on SQLite and on PostgreSQL.

See ``tests/fuzzing.py`` for what is sent and checked, and ``tests/hygiene.py`` for the response hygiene every
response must pass. The sizes of ``make test`` are bounded (a couple of minutes for both databases on two CPUs);
``make fuzz`` runs a deeper one. A 5xx, a response the document does not allow, or a leaking response anywhere fails
the run; the figures of the run (operations, examples, statuses, failures by check, seed) are printed, and written
as JSON lines to ``$SPOTIK_FUZZ_REPORT`` when it is set.
"""

from __future__ import annotations

import json
import os
import queue
import re
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import requests
from websockets.sync.client import connect

from tests.conftest import create_pg_database, drop_pg_database, pg_url, unavailable
from tests.e2e.server import ServerProcess
from tests.fuzzing import (
    PASSWORD,
    Budget,
    Report,
    World,
    audio_and_image,
    fuzz_operations,
    fuzz_stateful,
    load_schema,
    operations,
)
from tests.hygiene import Secrets, assert_clean_error_frame, assert_clean_response, response_problems

pytestmark = pytest.mark.e2e
ERROR_LEVEL = re.compile(r"\[(error|critical|exception)\s*\]", re.IGNORECASE)
FUZZER = "fuzzer"
# Operations whose success path the run must reach (else the resources it points at are not wired up).
MUST_SUCCEED = {
    "POST /api/rooms/{room}/tracks",
    "POST /api/rooms/{room}/tracks/{track}/vote",
    "POST /api/rooms/{room}/tracks/{track}/play",
    "GET /api/tracks/{track}/stream",
    "GET /api/audio/{filename}",
    "GET /api/storage/{path}",
    "DELETE /api/rooms/{room}",
    "DELETE /api/rooms/{room}/tracks/{track}",
    "POST /api/auth/logout",
}


@dataclass
class Target:
    server: ServerProcess
    world: World
    report: Report
    budget: Budget
    secrets: Secrets
    session: requests.Session


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A real server on ``request.param`` with rate limiting off, and the fuzzing user's world in it."""
    folder = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    storage = (folder / "storage").resolve()
    jwt_secret = "fuzz-" + secrets.token_hex(32)
    env = {"RATE_LIMITING_ENABLED": "false", "JWT_SECRET": jwt_secret, "PERFORMANCE_ADMINS": FUZZER}
    database = None
    if request.param == "postgres":
        try:
            database = create_pg_database("spotik_fuzz")
        except (OSError, asyncpg.PostgresError) as exc:
            unavailable("PostgreSQL", exc)
        env["DATABASE_URL"] = pg_url(database)
    budget = Budget.from_env()
    report = Report(database=request.param, seed=budget.seed)
    server = ServerProcess(storage, env)
    session = requests.Session()
    started = time.monotonic()
    try:
        server.wait_until_serving()
        wav, png = audio_and_image(folder)
        world = World(server.base_url, session, wav=wav, png=png)
        world.setup(FUZZER)
        yield Target(server, world, report, budget, Secrets((jwt_secret, PASSWORD), (str(storage),)), session)
    finally:
        report.seconds = time.monotonic() - started
        session.close()
        server.stop()
        if database is not None:
            drop_pg_database(database)
        print(f"\nfuzzing figures ({request.param}):\n{report.summary()}")
        destination = os.environ.get("SPOTIK_FUZZ_REPORT")
        if destination:
            Path(destination).parent.mkdir(parents=True, exist_ok=True)
            with Path(destination).open("a") as out:
                out.write(json.dumps(report.figures()) + "\n")


def assert_no_error_logged(server: ServerProcess) -> None:
    """The server logged no error and no traceback (a handled 4xx may log a warning; nothing more)."""
    logged = []
    while True:
        try:
            logged.append(server.lines.get_nowait())
        except queue.Empty:
            break
    server.log.extend(logged)
    errors = [line for line in logged if "Traceback" in line or ERROR_LEVEL.search(line)]
    assert not errors, "".join(errors[:20])


def test_every_operation_with_positive_and_negative_data(target: Target) -> None:
    report = target.report
    fuzz_operations(target.server.base_url, target.world, report, target.budget, target.secrets, target.session)
    if report.findings:
        pytest.fail(report.summary(), pytrace=False)
    assert_no_error_logged(target.server)
    every = {operation.label for operation in operations(load_schema(target.server.base_url))}
    assert report.operations == every
    assert MUST_SUCCEED <= report.succeeded, f"never succeeded: {sorted(MUST_SUCCEED - report.succeeded)}"
    # The server is still healthy after all of it.
    assert target.session.get(f"{target.server.base_url}/api/health", timeout=10).status_code == 200


def test_stateful_scenarios_along_the_links(target: Target) -> None:
    report = target.report
    before, found = report.stateful_steps, len(report.findings)
    fuzz_stateful(target.server.base_url, target.world, report, target.budget, target.secrets, target.session)
    if report.findings[found:]:
        pytest.fail(report.summary(since=found), pytrace=False)
    assert report.stateful_steps - before >= target.budget.scenarios  # every scenario made at least one call
    assert_no_error_logged(target.server)
    assert target.session.get(f"{target.server.base_url}/api/health", timeout=10).status_code == 200


def test_fixed_answers_are_clean(target: Target) -> None:
    """Errors, 404s, public and private answers, files: the hygiene holds on each, deterministically."""
    world, base = target.world, target.server.base_url
    member = world.fuzzer.headers
    stream = f"/api/tracks/{world.track_a['id']}/stream"
    answers = [
        ("GET", "/api/nowhere", {}, {}, 404),
        ("DELETE", "/api/ping", {}, {}, 405),
        ("GET", "/api/rooms", {}, {}, 401),
        ("GET", "/api/rooms", {"Authorization": "Bearer not-a-token"}, {}, 401),
        ("GET", f"/api/rooms/{world.room_a}", member, {}, 200),
        ("GET", f"/api/rooms/{world.room_a}?token={world.fuzzer.token}", {}, {}, 200),
        ("GET", "/api/rooms/not-a-room", member, {}, 404),
        ("POST", "/api/rooms", member, {"json": {}}, 422),
        ("POST", "/api/rooms", member, {"data": b"{not json", "headers": {"Content-Type": "application/json"}}, 400),
        ("GET", "/api/ping", {}, {}, 200),
        ("GET", "/dashboard", {}, {}, 200),
        ("GET", "/metrics", {}, {}, 200),
        ("GET", stream, member, {}, 200),
        ("HEAD", stream, member, {}, 200),
        ("GET", stream, member, {"headers": {"Range": "bytes=999999-"}}, 416),
        ("GET", f"/api/storage/{world.cover_path()}", {}, {}, 200),
        ("GET", "/api/storage/../../etc/passwd", {}, {}, 404),
    ]
    for method, path, headers, extra, status in answers:
        more = extra.pop("headers", {})
        response = target.session.request(method, base + path, headers={**headers, **more}, timeout=10, **extra)
        assert response.status_code == status, (method, path, response.status_code, response.text[:300])
        assert_clean_response(response, target.secrets)
    # A file keeps the caching its route chose; a private JSON answer gets no-store.
    audio = target.session.get(base + stream, headers=member, timeout=10)
    assert audio.headers["Cache-Control"] == "public, max-age=3600"
    room = target.session.get(f"{base}/api/rooms/{world.room_a}", headers=member, timeout=10)
    assert room.headers["Cache-Control"] == "no-store"


def test_the_http_servers_own_400_carries_the_security_headers(target: Target) -> None:
    """Bytes that are not HTTP never reach the app; uvicorn's 400 still gets the security headers, and no trace."""
    for head in (b"GET /api/ping HTTP/1.1\r\nHost: x\r\nContent-Length: &p\r\n\r\n", b"NOT HTTP AT ALL\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", target.server.port), timeout=10) as connection:
            connection.sendall(head)
            raw = b""
            while chunk := connection.recv(65536):
                raw += chunk
        status_line, _, rest = raw.partition(b"\r\n")
        header_block, _, body = rest.partition(b"\r\n\r\n")
        assert status_line == b"HTTP/1.1 400 Bad Request", raw[:200]
        pairs = [tuple(line.decode().split(": ", 1)) for line in header_block.split(b"\r\n")]
        problems = response_problems(pairs, body, target.secrets, credentials=False)  # type: ignore[arg-type]
        assert not problems, problems
    assert target.session.get(f"{target.server.base_url}/api/health", timeout=10).status_code == 200


def test_websocket_error_frames_are_clean(target: Target) -> None:
    """Every ``error`` frame a hostile message earns names its code and gives nothing away."""
    world = target.world
    stranger_room = world.create_room(world.host)  # the fuzzing user is no member of it
    ws_url = target.server.base_url.replace("http://", "ws://") + "/ws"
    before_join = [
        ("not json {", "invalid_json"),
        ("[]", "invalid_message"),
        ('{"type": 7}', "invalid_message"),
        ('{"type": "drop_database"}', "unknown_message_type"),
        ('{"type": "get_track_queue"}', "not_in_room"),
        ('{"type": "join_room", "data": {}}', "missing_room_id"),
        ('{"type": "join_room", "data": {"room_id": "x\' OR 1=1; --"}}', "room_not_found"),
        ('{"type": "join_room", "data": {"room_id": "\\u0000../../etc/passwd"}}', "room_not_found"),
        (json.dumps({"type": "join_room", "data": {"room_id": stranger_room}}), "access_denied"),
    ]
    after_join = [
        ('{"type": "playback_control", "data": {"action": "explode"}}', "validation_failed"),
        ('{"type": "playback_control", "data": {"action": "seek", "position": "NaN"}}', "validation_failed"),
        # a malformed track id is a 404 over REST, so it is not_found here too
        ('{"type": "playback_control", "data": {"action": "play", "track_id": "../../etc"}}', "not_found"),
        ('{"type": "vote_track", "data": {"track_id": "%00"}}', "not_found"),
        ('{"type": "vote_track", "data": {"vote_type": "down"}}', "validation_failed"),
        (json.dumps({"type": "vote_track", "data": {"track_id": world.track_b["id"]}}), "not_found"),
    ]
    with connect(f"{ws_url}?token={world.fuzzer.token}", open_timeout=10, close_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "connection_established"
        for message, code in before_join:
            ws.send(message)
            frame = json.loads(ws.recv(timeout=10))
            assert frame["type"] == "error" and frame["data"]["error_code"] == code, (message, frame)
            assert_clean_error_frame(frame, target.secrets)
        ws.send(json.dumps({"type": "join_room", "data": {"room_id": world.room_a}}))
        while json.loads(ws.recv(timeout=10))["type"] != "room_joined":
            pass
        for message, code in after_join:
            ws.send(message)
            while (frame := json.loads(ws.recv(timeout=10)))["type"] != "error":
                pass  # room broadcasts may come first
            assert frame["data"]["error_code"] == code, (message, frame)
            assert_clean_error_frame(frame, target.secrets)
    # A refused handshake explains itself in an error frame too.
    with connect(f"{ws_url}?token=not.a.token", open_timeout=10, close_timeout=5) as ws:
        frame = json.loads(ws.recv(timeout=10))
        assert frame["data"]["error_code"] == "authentication_failed"
        assert_clean_error_frame(frame, target.secrets)
