"""Scenario 6: slow and hostile clients (docs/reliability.md#6).

One server (SQLite) and, at once: slow-loris request heads (a header byte every 0.5 s), connections that never
send anything, slow bodies (a byte every 0.5 s), uploads trickled at 1 KB/s, WebSockets that join a room and never
read again, and 2,000 WebSockets that connect and never join (the issue says 10,000: this 2-core machine opens 2,000
within the time bound; the limit that bounds them is the same). The hostile clients run in their own process
(tests/faults/hostile.py), so that the normal client's event loop does nothing but send its requests.

Proves: each is cut by its documented bound — HTTP_HEADER_TIMEOUT (408), HTTP_BODY_MIN_RATE over
HTTP_BODY_MIN_RATE_WINDOW (408; an upload so cut leaves no file and no row), WS_MAX_CONNECTIONS (handshakes over it
are refused with 4429), WS_PING_INTERVAL + WS_PING_TIMEOUT (silent sockets are closed) — and while they run, a
normal client's p99 latency stays within 2x of its idle p99 measured in the same test.
"""

from __future__ import annotations

import base64
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.faults.conftest import ServerFactory
from tests.faults.consistency import check_consistency
from tests.faults.hostile import HostileProcess, cuts_of
from tests.faults.load import Api, percentile
from tests.faults.scenario import room_with_members, short_wav
from tests.integration.tracks_helpers import multipart

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
HEADER_TIMEOUT = 6.0
RATE_WINDOW = 6.0
MIN_RATE = 4096
PING_INTERVAL, PING_TIMEOUT = 5.0, 3.0
MAX_SOCKETS = 1500
IDLE_SOCKETS = 2000
SILENT_READERS = 20
WARM_UP = 50  # requests not counted at the start of each phase
BLOCK = 150  # requests per block; p99 is taken per block and the blocks' median is the phase's figure
MARGIN = 2.0


async def latencies(api: Api, path: str, headers: dict[str, str], count: int) -> list[float]:
    """``count`` sequential requests of a normal client (seconds each)."""
    found = []
    for _ in range(count):
        started = time.perf_counter()
        answer = await api.client.get(path, headers=headers)
        found.append(time.perf_counter() - started)
        assert answer.status_code == 200
    return found


def block_p99s(phase: list[list[float]]) -> str:
    return "/".join(f"{percentile(block, 0.99) * 1000:.1f}" for block in phase) + " ms"


def trickled(kind: str, count: int, head: bytes, rest: bytes, pace: float, chunk: int, within: float) -> dict[str, Any]:
    """``count`` connections that send ``head``, then ``rest`` ``chunk`` bytes every ``pace`` s (hostile.trickle)."""
    return {
        "kind": kind,
        "count": count,
        "head": base64.b64encode(head).decode(),
        "rest": base64.b64encode(rest).decode(),
        "pace": pace,
        "chunk": chunk,
        "within": within,
    }


def robust_p99(blocks: list[list[float]]) -> float:
    return statistics.median(percentile(block, 0.99) for block in blocks)


async def test_slow_and_hostile_clients_are_bounded(servers: ServerFactory, tmp_path: Path) -> None:
    began = time.monotonic()
    server = servers(
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        HTTP_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
        HTTP_BODY_TIMEOUT=str(HEADER_TIMEOUT),
        HTTP_BODY_MIN_RATE=str(MIN_RATE),
        HTTP_BODY_MIN_RATE_WINDOW=str(RATE_WINDOW),
        WS_MAX_CONNECTIONS=str(MAX_SOCKETS),
        WS_PING_INTERVAL=str(PING_INTERVAL),
        WS_PING_TIMEOUT=str(PING_TIMEOUT),
        WS_CLOSE_TIMEOUT="1",
    )
    api = Api(server.base_url)
    hostile: HostileProcess | None = None
    try:
        room = await room_with_members(api, 4)
        uploaded = await api.upload(room.id, room.admin, short_wav(tmp_path / "media", 60.0))
        assert uploaded is not None and uploaded.status_code == 201
        path = f"/api/rooms/{room.id}/tracks"
        await latencies(api, path, room.admin.headers, WARM_UP)
        idle = [await latencies(api, path, room.admin.headers, BLOCK) for _ in range(2)]

        loris_head = b"GET /api/ping HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        body_head = b"POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        upload_body, content_type = multipart(
            files=[("audio_file", "slow.wav", short_wav(tmp_path / "media", 30.0))], boundary=uuid.uuid4().hex
        )
        upload_head = (
            f"POST /api/rooms/{room.id}/tracks HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
            f"{room.members[0].token}\r\nContent-Type: {content_type}\r\nContent-Length: {len(upload_body)}\r\n\r\n"
        ).encode()
        within = HEADER_TIMEOUT + RATE_WINDOW + 10
        people = [room.admin, *room.members]
        # In their own process, so that the normal client's event loop does nothing but measure (hostile.py).
        hostile = await HostileProcess.start(
            {
                "port": server.port,
                # 2,000 sockets that connect and never join (nor read): WS_MAX_CONNECTIONS admits 1,500 (less the
                # readers)
                "idle_sockets": IDLE_SOCKETS,
                "tokens": [p.token for p in people],
                "reader_tokens": [p.token for p in people for _ in range(4)][:SILENT_READERS],
                "room_id": room.id,
                "trickles": [
                    trickled("slow-loris head", 50, loris_head, b"X-Slow: yes\r\n" * 100, 0.5, 1, within),
                    trickled("silent connection", 50, b"", b"", 0.5, 1, within),
                    trickled("slow body", 20, body_head + b"Content-Length: 1000\r\n\r\n", b"x" * 1000, 0.5, 1, within),
                    trickled("upload at 1 KB/s", 10, upload_head, upload_body, 1.0, 1024, within),
                ],
                "silent_after": PING_INTERVAL + PING_TIMEOUT + 1 + MARGIN,
                "silent_within": 2,
            },
            tmp_path / "hostile.log",
        )
        refused = (await hostile.event("sockets", within=120))["refused"]
        await hostile.event("running", within=30)
        # A warm-up here too: the 130 connections all arrive within a few ms, and the server taking them in (their
        # heads parsed, 30 requests started) delays the first request or two by tens of ms, once — a transient of
        # the harness's making that would spoil the first block of every run (docs/reliability.md#6). Reported.
        arrival = max(await latencies(api, path, room.admin.headers, WARM_UP))
        busy = [await latencies(api, path, room.admin.headers, BLOCK) for _ in range(3)]  # while all of them run
        measured = time.monotonic()
        trickles = await hostile.event("trickles", within=within + 10)
        cuts = cuts_of(trickles)
        # (time.monotonic() is the machine's clock, the same in both processes)
        assert trickles["at"] > measured, "the hostile clients ended before the measurement did: it measured nothing"
        socket_cuts = cuts_of(await hostile.event("silent", within=PING_INTERVAL + PING_TIMEOUT + 1 + MARGIN + 10))
        await hostile.finish(within=10)
        idle += [await latencies(api, path, room.admin.headers, BLOCK) for _ in range(2)]  # all hostile ones gone
    finally:
        if hostile is not None:
            await hostile.kill()
        await api.aclose()

    kinds = {cut.kind for cut in cuts}
    for kind in sorted(kinds):
        mine = [cut for cut in cuts if cut.kind == kind]
        bound = HEADER_TIMEOUT if kind in ("slow-loris head", "silent connection") else RATE_WINDOW
        assert {cut.how for cut in mine} == {"HTTP/1.1 408 Request Timeout"}, (kind, {cut.how for cut in mine})
        assert max(cut.seconds for cut in mine) <= bound + MARGIN, (kind, max(cut.seconds for cut in mine))
    assert refused == IDLE_SOCKETS + SILENT_READERS - MAX_SOCKETS
    assert {cut.how for cut in socket_cuts} <= {"eof", "reset"}, {cut.how for cut in socket_cuts}
    # Each phase's p99 is the median of its blocks' p99s (idle: two blocks before the hostile clients and two after
    # them; hostile: three blocks), so one burst of the machine's other work in one block does not decide the ratio.
    idle_p99, busy_p99 = robust_p99(idle), robust_p99(busy)
    idle_p50 = percentile([x for block in idle for x in block], 0.5)
    busy_p50 = percentile([x for block in busy for x in block], 0.5)
    assert busy_p99 <= 2 * idle_p99, f"p99 {busy_p99 * 1000:.1f} ms under hostile clients, {idle_p99 * 1000:.1f} idle"
    result = await check_consistency(
        f"sqlite:///{tmp_path / 'db.sqlite3'}", server.storage / "audio", server.storage / "public", api.acknowledged
    )
    assert result.tracks == 1  # the trickled uploads left no row (and no file: the check)
    summary = ", ".join(
        f"{len(mine)} {kind} cut by 408 within {max(c.seconds for c in mine):.1f}s"
        for kind in sorted(kinds)
        for mine in [[c for c in cuts if c.kind == kind]]
    )
    print(
        f"\n[faults] scenario 6: {IDLE_SOCKETS} idle + {SILENT_READERS} never-reading sockets ({refused} refused "
        f"4429 over WS_MAX_CONNECTIONS={MAX_SOCKETS}, {len(socket_cuts)} closed after unanswered pings); {summary}; "
        f"p50/p99 idle {idle_p50 * 1000:.1f}/{idle_p99 * 1000:.1f} ms, under hostile clients "
        f"{busy_p50 * 1000:.1f}/{busy_p99 * 1000:.1f} ms (ratio {busy_p99 / idle_p99:.2f}; slowest request as they "
        f"arrived {arrival * 1000:.0f} ms; blocks' p99 idle {block_p99s(idle)}, under hostile clients "
        f"{block_p99s(busy)}); "
        f"{result.describe()}; {time.monotonic() - began:.1f}s"
    )
