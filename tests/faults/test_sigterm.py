"""Scenario 5: SIGTERM under load, a second instance takes over (docs/reliability.md#5).

Two server processes share the database and the storage (no Redis: what matters here is the database). Instance A
holds 50 joined sockets and a mixed load, and an upload whose body is half sent; instance B holds one socket in the
same room, which auto-advances through 3-second tracks. A gets SIGTERM.

Proves: the request in flight completes (201), nothing in flight gets a 5xx, every socket of A is closed with 1001,
A exits within GRACEFUL_SHUTDOWN_TIMEOUT; B's scheduler keeps advancing the room on its own (no track twice, none cut
short); everything acknowledged by A is in the database (the consistency check).
"""

from __future__ import annotations

import json
import signal
import socket
import time
import uuid
from pathlib import Path

import pytest

from tests.faults.conftest import ServerFactory
from tests.faults.consistency import check_consistency
from tests.faults.load import Api, Listener, wait_until
from tests.faults.scenario import (
    Load,
    check_advances,
    close_all,
    open_sockets,
    parse_instant,
    room_with_members,
    short_wav,
    starts_seen,
)
from tests.fixtures.audio_files import make_wav
from tests.integration.tracks_helpers import multipart

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SOCKETS_ON_A = 50


async def test_sigterm_under_load_and_another_instance_takes_over(
    servers: ServerFactory, pg_url: str, tmp_path: Path
) -> None:
    began = time.monotonic()
    storage = tmp_path / "storage"
    one = servers(storage, DATABASE_URL=pg_url)
    two = servers(storage, DATABASE_URL=pg_url)
    track = short_wav(tmp_path / "media", 3.0)
    big = make_wav(tmp_path / "media", 10.0, sample_rate=44100, channels=2).read_bytes()
    a, b = Api(one.base_url), Api(two.base_url)
    b.acknowledged = a.acknowledged
    listeners: list[Listener] = []
    try:
        room = await room_with_members(a, 10)
        on_a, others = await open_sockets(one.ws_url, room, SOCKETS_ON_A)
        on_b = await Listener.open(two.ws_url, room.members[0], room.id)
        listeners = [on_a, *others, on_b]
        for _ in range(8):
            answer = await a.upload(room.id, room.admin, track)
            assert answer is not None and answer.status_code == 201
            room.tracks.append(answer.json()["track"]["id"])
        load = Load(a, room, track, votes_per_second=20, uploads_per_second=2, reads_per_second=10)
        load.start()
        await wait_until(lambda: sum(o.status == 200 and o.kind == "vote" for o in a.outcomes) >= 20, 20, "votes")

        body, content_type = multipart(files=[("audio_file", "late.wav", big)], boundary=f"term{uuid.uuid4().hex}")
        head = (
            f"POST /api/rooms/{room.id}/tracks HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {room.admin.token}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", one.port), timeout=30) as late:
            late.sendall(head + body[: len(body) // 2])
            one.process.send_signal(signal.SIGTERM)
            term = time.monotonic()
            term_wall = time.time()
            one.wait_for_log("Shutting down")
            late.sendall(body[len(body) // 2 :])
            answer = b""
            while chunk := late.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 201"), answer[:300]
        late_track = answer.split(b"\r\n\r\n", 1)[1]
        assert one.process.wait(timeout=20) in (0, -signal.SIGTERM)
        exited = time.monotonic() - term
        await load.stop()
        codes = {await listener.wait_closed(10) for listener in [on_a, *others]}
        assert codes == {1001}, codes
        assert all(o.status < 500 for o in a.outcomes), sorted({o.status for o in a.outcomes})
        begun = [o for o in a.outcomes if o.started < term]
        assert all(o.status > 0 for o in begun), [o for o in begun if o.status == 0]  # each got its answer

        # B carries on alone: its scheduler advances the room (no Redis: its socket sees only B's advances)
        await on_b.wait_for(
            lambda m: (
                m["type"] == "playback_started"
                and m["data"]["reason"] == "track_finished"
                and not m["data"].get("follows")
                and parse_instant(m["data"]["started_at"]) > term_wall + exited
            ),
            15,
            "an advance by instance B after A exited",
        )
        check_advances(starts_seen(on_b))
        takeovers = sum(s.started_at > term_wall + exited for s in starts_seen(on_b))
        assert on_b.open_now
    finally:
        await close_all(listeners)
        await a.aclose()
        await b.aclose()
    a.acknowledged.tracks[_track_id(late_track)] = room.id
    result = await check_consistency(pg_url, storage / "audio", storage / "public", a.acknowledged)
    in_flight = sum(o.started < term < o.started + o.seconds for o in a.outcomes)
    print(
        f"\n[faults] scenario 5: SIGTERM with {SOCKETS_ON_A} sockets and load on A; the half-sent upload completed "
        f"(201); {in_flight} other requests in flight at SIGTERM, every request begun before it answered, none 5xx; "
        f"all {SOCKETS_ON_A} "
        f"sockets closed 1001; A exited {exited:.1f}s after SIGTERM; B advanced the room {takeovers} time(s) "
        f"alone; {result.describe()}; {time.monotonic() - began:.1f}s"
    )


def _track_id(body: bytes) -> str:
    text = body.decode()
    if not text.lstrip().startswith("{"):  # chunked framing: size line, data, terminator
        text = text.split("\r\n", 1)[1].rsplit("\r\n0\r\n", 1)[0]
    track_id: str = json.loads(text)["track"]["id"]
    return track_id
