"""Scenario 1: PostgreSQL restarted under load (docs/reliability.md#1).

One server on a dedicated PostgreSQL cluster, with a room of 20 members, 200 joined sockets, and a steady load of
votes, uploads and queue reads while the room auto-advances through 3-second tracks. The cluster is stopped
(``pg_ctl stop -m fast``: every session is closed) for a few seconds, then started again.

Proves: during the outage every request is answered 503 with ``Retry-After``, none waits longer than
``DB_POOL_TIMEOUT`` + ``DB_CONNECT_TIMEOUT`` + 1 s; every socket stays open; the pool serves again within seconds of
the database's return, without a restart; auto-advance resumes, playing no track twice and cutting none short; and
everything acknowledged is in the database afterwards (the consistency check).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.faults.conftest import ServerFactory
from tests.faults.consistency import check_consistency
from tests.faults.load import Api, percentile, wait_until
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
from tests.faults.services import PostgresCluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SOCKETS = 200
MEMBERS = 20
OUTAGE_SECONDS = 10.0  # long enough for the scheduler's back-off to reach its cap
POOL_TIMEOUT = 1.0
CONNECT_TIMEOUT = 1.0
RECOVERY_BOUND = 10.0  # seconds from the database's return to the first success
ADVANCE_LAG_BOUND = 6.0  # MAX_POLL_SECONDS (the scheduler's back-off cap) + 1 s


async def test_postgres_restart_under_load(
    servers: ServerFactory, pg_cluster: PostgresCluster, pg_url: str, tmp_path: Path
) -> None:
    began = time.monotonic()
    server = servers(DATABASE_URL=pg_url, DB_POOL_TIMEOUT=str(POOL_TIMEOUT), DB_CONNECT_TIMEOUT=str(CONNECT_TIMEOUT))
    audio = short_wav(tmp_path / "media", 3.0)
    api = Api(server.base_url, timeout=30)
    listeners = []
    try:
        room = await room_with_members(api, MEMBERS)
        observer, others = await open_sockets(server.ws_url, room, SOCKETS)
        listeners = [observer, *others]
        for _ in range(6):  # 18 s of music queued; the first upload starts playing at once
            answer = await api.upload(room.id, room.admin, audio)
            assert answer is not None and answer.status_code == 201
            room.tracks.append(answer.json()["track"]["id"])

        load = Load(api, room, audio, votes_per_second=10, uploads_per_second=1, reads_per_second=5)
        load.start()
        await wait_until(lambda: sum(o.status == 200 and o.kind == "vote" for o in api.outcomes) >= 20, 20, "votes")

        down = time.monotonic()
        await asyncio.to_thread(pg_cluster.stop, "fast")
        stopped = time.monotonic()
        await wait_until(lambda: sum(o.status == 503 and o.started > stopped for o in api.outcomes) >= 10, 10, "503s")
        await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down)))  # the fault's length, not a wait
        restarting = time.monotonic()
        await asyncio.to_thread(pg_cluster.start)
        up, up_wall = time.monotonic(), time.time()
        await wait_until(
            lambda: any(o.status in (200, 201) and o.started >= up for o in api.outcomes), RECOVERY_BOUND, "recovery"
        )
        recovered = min(o.started + o.seconds for o in api.outcomes if o.status in (200, 201) and o.started >= up)
        # auto-advance resumes: the track that ended during the outage is advanced soon after the return
        resumed = await observer.wait_for(
            lambda m: (
                m["type"] == "playback_started"
                and m["data"]["reason"] == "track_finished"
                and not m["data"].get("follows")
                and parse_instant(m["data"]["started_at"]) > up_wall
            ),
            15,
            "an advance after the database came back",
        )
        advance_lag = parse_instant(resumed["data"]["started_at"]) - up_wall
        assert advance_lag <= ADVANCE_LAG_BOUND, f"auto-advance resumed {advance_lag:.1f}s after the database"
        await asyncio.sleep(1.0)  # one more second of load on the recovered pool
        await load.stop()

        # the outage: every request that began while the database was down got a fast 503 with Retry-After
        during = [o for o in api.outcomes if stopped <= o.started and o.started + o.seconds <= restarting]
        assert during, "no request was sent during the outage"
        statuses = {o.status for o in during}
        assert statuses == {503}, f"statuses during the outage: {statuses}"
        assert all(o.retry_after == "5" for o in during)
        slowest = max(o.seconds for o in during)
        assert slowest <= POOL_TIMEOUT + CONNECT_TIMEOUT + 1.0, f"a request waited {slowest:.2f}s"
        assert all(o.status != 500 and o.status != 0 for o in api.outcomes), {o.status for o in api.outcomes}
        # every socket stayed open, and fan-out works after the return
        assert all(listener.open_now for listener in listeners), [x.closed_code for x in listeners if not x.open_now]
        voted = await api.vote(room.id, room.tracks[0], room.members[0])
        assert voted is not None and voted.status_code == 200
        await observer.wait_for(lambda m: m["type"] == "track_voted", 10, "a vote's broadcast after recovery")
        starts = starts_seen(observer)
        advances = check_advances(starts)
        assert not observer.of_type("track_skipped")
        received = sum(listener.received for listener in listeners)
    finally:
        await close_all(listeners)
        await api.aclose()
    result = await check_consistency(pg_url, server.storage / "audio", server.storage / "public", api.acknowledged)
    ok = [o.seconds for o in api.outcomes if o.status in (200, 201)]
    print(
        f"\n[faults] scenario 1: {SOCKETS} sockets, {len(api.outcomes)} requests "
        f"({sum(o.status in (200, 201) for o in api.outcomes)} 2xx, {len(during)} during the outage, all 503 + "
        f"Retry-After, slowest {slowest * 1000:.0f} ms); outage {up - down:.1f}s; first success "
        f"{(recovered - up) * 1000:.0f} ms after the database returned; auto-advance resumed {advance_lag:.1f}s "
        f"after it; {advances} auto-advances, none early or repeated; {received} WS frames; "
        f"p50/p99 of 2xx {percentile(ok, 0.5) * 1000:.0f}/"
        f"{percentile(ok, 0.99) * 1000:.0f} ms; {result.describe()}; {time.monotonic() - began:.1f}s"
    )
