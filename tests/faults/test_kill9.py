"""Scenario 4: ``kill -9`` of the server mid-work, then a restart on the same database and storage
(docs/reliability.md#4).

While votes and reads flow, three uploads are in the middle of their bodies (their first 768 KiB written to
``.upload-*.part`` files), one room plays a long track and another a short one that ends while no server runs.

Proves: what a kill leaves behind is only ``.upload-*.part`` files, which no row names (never served) and which the
next start removes; everything acknowledged is there and counts agree (the consistency check); the long track's
room continues from the same instant (its position is the time elapsed, the downtime included), and the room
whose track ended while the server was down advances once, to the next track, from its start.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from spotik.tracks.uploads import is_temporary_name
from tests.faults.conftest import ServerFactory
from tests.faults.consistency import check_consistency
from tests.faults.load import Api, wait_until
from tests.faults.scenario import Load, Room, parse_instant, room_with_members, short_wav
from tests.fixtures.audio_files import make_wav
from tests.helpers import Account
from tests.integration.tracks_helpers import multipart

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
HALF_SENT = 768 * 1024


def start_raw_upload(port: int, room: str, account: Account, audio: bytes) -> socket.socket:
    """An upload whose body stops after ``HALF_SENT`` bytes (the connection is left open)."""
    body, content_type = multipart(files=[("audio_file", "big.wav", audio)], boundary=f"kill{uuid.uuid4().hex}")
    head = (
        f"POST /api/rooms/{room}/tracks HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {account.token}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    connection = socket.create_connection(("127.0.0.1", port), timeout=10)
    connection.sendall(head + body[:HALF_SENT])
    return connection


async def status(api: Api, room: str, member: Account) -> dict[str, Any]:
    answer = await api.request("status", "GET", f"/api/rooms/{room}/playback/status", headers=member.headers)
    assert answer is not None and answer.status_code == 200, answer and answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


def temporary_files(storage: Path) -> list[Path]:
    folder = storage / "audio" / "tracks"
    return [path for path in folder.iterdir() if is_temporary_name(path.name)] if folder.is_dir() else []


async def test_kill_9_mid_work_then_restart(servers: ServerFactory, pg_url: str, tmp_path: Path) -> None:
    began = time.monotonic()
    storage = tmp_path / "storage"
    env = {"DATABASE_URL": pg_url, "UPLOAD_TEMP_MAX_AGE": "1"}
    first = servers(storage, **env)
    media = tmp_path / "media"
    long_track, short_track = short_wav(media, 40.0), short_wav(media, 4.0)
    big = make_wav(media, 10.0, sample_rate=44100, channels=2).read_bytes()
    api = Api(first.base_url)
    raw: list[socket.socket] = []
    try:
        steady = await room_with_members(api, 8, prefix="s")  # plays a long track; votes go to its queue
        for _ in range(4):
            answer = await api.upload(steady.id, steady.admin, long_track)
            assert answer is not None and answer.status_code == 201
            steady.tracks.append(answer.json()["track"]["id"])
        ending = Room(await api.create_room(steady.admin, "Ending"), steady.admin, [])
        for audio in (short_track, long_track, long_track):  # 4 s plays now; then two 40 s tracks
            answer = await api.upload(ending.id, ending.admin, audio)
            assert answer is not None and answer.status_code == 201
            ending.tracks.append(answer.json()["track"]["id"])
        steady_before = await status(api, steady.id, steady.admin)
        ending_before = await status(api, ending.id, ending.admin)
        assert ending_before["current_track"]["id"] == ending.tracks[0]
        short_ends = parse_instant(ending_before["started_at"]) + 4

        load = Load(api, steady, long_track, votes_per_second=20, uploads_per_second=0, reads_per_second=10)
        load.start()
        raw = [start_raw_upload(first.port, steady.id, steady.members[i], big) for i in range(3)]
        await wait_until(lambda: len(temporary_files(storage)) == 3, 10, "three uploads half-way")
        await wait_until(lambda: sum(o.status == 200 and o.kind == "vote" for o in api.outcomes) >= 30, 20, "votes")
        assert time.time() < short_ends, "the short track ended before the kill: the scenario lost its point"

        first.kill9()
        killed = time.monotonic()
        await load.stop()
        left = temporary_files(storage)
        assert len(left) == 3  # what a kill leaves: the uploads' temporary files, named by no row
        tracks_before = len(api.acknowledged.tracks)
        await wait_until(lambda: time.time() > short_ends + 0.5, 10, "the short track's end, while down")
        await wait_until(lambda: all(time.time() - p.stat().st_mtime > 1 for p in left), 5, "leftovers aged")

        second = servers(storage, **env)
        down = time.monotonic() - killed
        assert not temporary_files(storage)
        assert "removed 3 stale temporary upload file(s)" in second.output()
        api2 = Api(second.base_url, api.acknowledged)
        try:
            steady_after = await status(api2, steady.id, steady.admin)
            assert steady_after["current_track"]["id"] == steady_before["current_track"]["id"]
            assert steady_after["started_at"] == steady_before["started_at"] and steady_after["is_playing"]
            expected = parse_instant(steady_after["server_time"]) - parse_instant(steady_after["started_at"])
            assert abs(steady_after["position"] - expected) < 0.5  # the downtime counted as listened
            await wait_until(lambda: _current(api2, ending), 10, "the ending room advanced")
            ending_after = await status(api2, ending.id, ending.admin)
            assert ending_after["current_track"]["id"] == ending.tracks[1] and ending_after["is_playing"]
            assert parse_instant(ending_after["started_at"]) >= short_ends  # from its start, after the end
            assert ending_after["position"] < 10
            queue = await api2.queue(ending.id, ending.admin)
            assert queue is not None
            assert [t["id"] for t in queue.json()["tracks"]] == [ending.tracks[1], ending.tracks[2]]  # once
        finally:
            await api2.aclose()
    finally:
        for connection in raw:
            connection.close()
        await api.aclose()
    result = await check_consistency(pg_url, storage / "audio", storage / "public", api.acknowledged)
    votes = sum(o.status == 200 and o.kind == "vote" for o in api.outcomes)
    cut = sum(o.status == 0 for o in api.outcomes)
    print(
        f"\n[faults] scenario 4: killed with 3 uploads half-way ({len(left)} .part files, removed at restart), "
        f"{votes} votes acknowledged, {cut} requests cut by the kill; down {down:.1f}s; long track resumed at "
        f"{steady_after['position']:.1f}s (same start instant); the ended track advanced once; {tracks_before} "
        f"tracks; {result.describe()}; {time.monotonic() - began:.1f}s"
    )
    await asyncio.sleep(0)


async def _current(api: Api, room: Room) -> bool:
    return bool((await status(api, room.id, room.admin))["current_track"]["id"] == room.tracks[1])
