"""Section 4 of ``spotik bench``: a mixed scenario. N simulated listeners across M rooms, for a fixed time, on the
given servers (two instances sharing PostgreSQL through Redis, listeners spread over both): each keeps a WebSocket
joined to its room and reads every frame, votes and withdraws votes on tracks of its room's queue, now and then
uploads a small file (a 10-minute WAV of 60 KB); each room's administrator skips the current track now and then.
Reported: errors (must be zero: any 5xx, unexpected status, transport failure, ``error`` frame or socket closed
before the end), each operation's latency, frames received, and the servers' CPU and RSS."""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx2
from websockets.asyncio.client import connect

from spotikbench.fixtures import expect, register_users, wav_bytes
from spotikbench.servers import ServerProcess
from spotikbench.tools import MIB, distribution, say

UPLOAD = wav_bytes(seconds=600, rate=100)  # 60 KB; long enough never to end by itself during the run
# Answers that are part of the game: a skip when the room's queue has just run dry.
EXPECTED = {"vote": {200}, "unvote": {200}, "upload": {201}, "skip": {200, 400}}


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    statuses: dict[str, dict[int, int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    frames: int = 0

    def record(self, op: str, status: int, ms: float) -> None:
        self.latencies.setdefault(op, []).append(ms)
        counts = self.statuses.setdefault(op, {})
        counts[status] = counts.get(status, 0) + 1
        if status not in EXPECTED[op]:
            self.errors.append(f"{op}: HTTP {status}")


async def request(tally: Tally, client: httpx2.AsyncClient, op: str, method: str, path: str, **kw: Any) -> None:
    started = time.monotonic()
    try:
        response = await client.request(method, path, **kw)
    except httpx2.HTTPError as exc:
        tally.errors.append(f"{op}: {type(exc).__name__}: {exc}")
        return
    tally.record(op, response.status_code, (time.monotonic() - started) * 1000)


async def listener(
    tally: Tally,
    server: ServerProcess,
    client: httpx2.AsyncClient,
    token: str,
    room: str,
    until: float,
    rng: random.Random,
    vote_every: float,
    upload_share: float,
) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    tracks: set[str] = set()
    voted: set[str] = set()
    async with connect(f"{server.ws_url}?token={token}", compression=None, open_timeout=30) as ws:
        await ws.send(json.dumps({"type": "join_room", "data": {"room_id": room}}))

        async def read() -> None:
            async for raw in ws:
                tally.frames += 1
                message = json.loads(raw)
                kind, data = message.get("type"), message.get("data") or {}
                if kind == "error":
                    tally.errors.append(f"error frame: {data}")
                elif kind == "room_joined":
                    tracks.update(str(t["id"]) for t in data["room"].get("track_queue") or [])
                elif kind == "track_added":
                    tracks.add(str(data["track"]["id"]))

        reader = asyncio.create_task(read())
        try:
            while (left := until - time.monotonic()) > 0:
                await asyncio.sleep(min(left, rng.expovariate(1 / vote_every)))
                if time.monotonic() >= until or reader.done():
                    break
                if rng.random() < upload_share:
                    files = {"audio_file": ("mixed.wav", UPLOAD, "audio/wav")}
                    await request(
                        tally, client, "upload", "POST", f"/api/rooms/{room}/tracks", files=files, headers=auth
                    )
                elif tracks:
                    track = rng.choice(sorted(tracks))
                    op = "unvote" if track in voted else "vote"
                    method = "DELETE" if op == "unvote" else "POST"
                    await request(tally, client, op, method, f"/api/rooms/{room}/tracks/{track}/vote", headers=auth)
                    voted.symmetric_difference_update({track})
        finally:
            if reader.done() and (exc := reader.exception()) is not None:
                tally.errors.append(f"socket closed before the end: {type(exc).__name__}: {exc}")
            elif reader.done():
                tally.errors.append("socket closed before the end")
            reader.cancel()


async def administrator(
    tally: Tally, client: httpx2.AsyncClient, token: str, room: str, until: float, skip_every: float
) -> None:
    skip_every = min(skip_every, (until - time.monotonic()) / 3)  # a short run skips too
    while until - time.monotonic() > skip_every:
        await asyncio.sleep(skip_every)
        await request(
            tally,
            client,
            "skip",
            "POST",
            f"/api/rooms/{room}/playback/skip",
            headers={"Authorization": f"Bearer {token}"},
        )


async def sample_servers(servers: list[ServerProcess], until: float, samples: list[dict[str, Any]]) -> None:
    cpu = {s.name: s.cpu_seconds() for s in servers}
    last = time.monotonic()
    while time.monotonic() < until:
        await asyncio.sleep(1.0)
        now = time.monotonic()
        for server in servers:
            used = server.cpu_seconds()
            samples.append(
                {"server": server.name, "cpu": (used - cpu[server.name]) / (now - last), "rss": server.rss()}
            )
            cpu[server.name] = used
        last = now


async def run(
    servers: list[ServerProcess],
    *,
    listeners: int,
    rooms: int,
    seconds: float,
    vote_every: float = 2.0,
    upload_share: float = 0.05,
    skip_every: float = 5.0,
    seed: int = 16,
) -> dict[str, Any]:
    rng = random.Random(seed)
    started = time.monotonic()
    limits = httpx2.Limits(max_connections=64, max_keepalive_connections=64)
    clients = [httpx2.AsyncClient(base_url=s.base_url, timeout=30, limits=limits, trust_env=False) for s in servers]
    try:
        gate = asyncio.Semaphore(16)
        admins = await register_users(clients[0], gate, [f"mixadmin{r}" for r in range(rooms)])
        users = await register_users(clients[0], gate, [f"mixuser{i}" for i in range(listeners)])
        room_ids = []
        for index, token in enumerate(admins):
            auth = {"Authorization": f"Bearer {token}"}
            body = expect(await clients[0].post("/api/rooms", json={"name": f"mixed {index}"}, headers=auth), 201)
            room_ids.append(str(body["data"]["id"]))
            for n in range(3):
                files = {"audio_file": (f"seed {n}.wav", UPLOAD, "audio/wav")}
                expect(await clients[0].post(f"/api/rooms/{room_ids[-1]}/tracks", files=files, headers=auth), 201)

        async def join(index: int, token: str) -> None:
            async with gate:
                room = room_ids[index % rooms]
                headers = {"Authorization": f"Bearer {token}"}
                expect(await clients[0].post(f"/api/rooms/{room}/join", headers=headers), 200, 201)

        await asyncio.gather(*(join(i, t) for i, t in enumerate(users)))
        setup_s = time.monotonic() - started
        say(f"[mixed] {listeners} listeners in {rooms} rooms ready in {setup_s:.1f} s; {seconds:.0f} s of traffic")
        tally = Tally()
        samples: list[dict[str, Any]] = []
        until = time.monotonic() + seconds
        rss_before = {s.name: s.rss() for s in servers}
        tasks = [
            listener(
                tally,
                servers[i % len(servers)],
                clients[i % len(servers)],
                token,
                room_ids[i % rooms],
                until,
                random.Random(rng.random()),
                vote_every,
                upload_share,
            )
            for i, token in enumerate(users)
        ]
        tasks += [administrator(tally, clients[0], t, room_ids[r], until, skip_every) for r, t in enumerate(admins)]
        outcomes = await asyncio.gather(*tasks, sample_servers(servers, until, samples), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                tally.errors.append(f"{type(outcome).__name__}: {outcome}")
    finally:
        for client in clients:
            await client.aclose()
    per_server = {
        s.name: {
            "cpu_mean": round(
                sum(x["cpu"] for x in samples if x["server"] == s.name)
                / max(1, len([x for x in samples if x["server"] == s.name])),
                3,
            ),
            "rss_before_mib": round(rss_before[s.name] / MIB, 1),
            "rss_max_mib": round(max((x["rss"] for x in samples if x["server"] == s.name), default=0) / MIB, 1),
        }
        for s in servers
    }
    result = {
        "listeners": listeners,
        "rooms": rooms,
        "instances": len(servers),
        "seconds": seconds,
        "setup_s": round(setup_s, 1),
        "operations": {
            op: {"latency_ms": distribution(v), "statuses": tally.statuses.get(op, {})}
            for op, v in tally.latencies.items()
        },
        "frames": tally.frames,
        "errors": len(tally.errors),
        "error_examples": tally.errors[:10],
        "servers": per_server,
    }
    say(
        f"[mixed] {sum(len(v) for v in tally.latencies.values())} requests, {tally.frames} frames, "
        f"{len(tally.errors)} errors"
    )
    return result
